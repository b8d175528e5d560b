# The CPU comparison of docs/measuring.md, Backpack side: the quickstart (config/train_brown.py)
# at the learning rate that suited the Backpack best in a sweep of 1e-3, 3e-3 and 6e-3 (the
# quickstart's 3e-3 suits its Transformer best), and twice as long: both models see the same
# 2,048,000 tokens in the same order (1.65 passes over Brown's training split). The Backpack starts
# slower: at 1,024,000 tokens the Transformer leads, at 2,048,000 the two are level. 12 to 15
# minutes each on 2 CPU cores.
#     python train.py config/compare_brown_backpack.py
#     python train.py config/compare_brown_gpt2.py
#     python evaluate.py --models out-brown-backpack out-brown-gpt2
from config.train_brown import *  # noqa: F401,F403

out_dir = "out-brown-backpack"
learning_rate = 1e-3
max_iters = 2000
