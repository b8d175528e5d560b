# The CPU comparison of docs/measuring.md, Transformer side: the quickstart (config/train_brown.py)
# with num_senses=0 (the same GPT-2 network, logits from its last hidden state), at the learning
# rate that suited it best in a sweep of 1e-3, 3e-3 and 6e-3 (the quickstart's), for the same
# 2,048,000 tokens as compare_brown_backpack.py.
from config.train_brown import *  # noqa: F401,F403

out_dir = "out-brown-gpt2"
num_senses = 0
learning_rate = 3e-3
max_iters = 2000
