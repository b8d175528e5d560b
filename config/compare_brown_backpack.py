# The CPU comparison of docs/measuring.md, Backpack side: the quickstart (config/train_brown.py) at the
# learning rate that suited the Backpack best in a sweep of 1e-3, 3e-3 and 6e-3 (the quickstart's 3e-3
# suits its Transformer best). Both see the same 1,024,000 tokens, in the same order.
#     python train.py config/compare_brown_backpack.py && python train.py config/compare_brown_gpt2.py
#     python evaluate.py --models out-brown-backpack out-brown-gpt2
from config.train_brown import *  # noqa: F401,F403

out_dir = "out-brown-backpack"
learning_rate = 1e-3
