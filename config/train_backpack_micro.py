# Backpack-Micro (41.7M parameters) on OpenWebText, the paper's recipe (config/paper_recipe.py).
# The paper's OpenWebText perplexity at 512 tokens of context: 31.5 (its matched Transformer,
# train_gpt2_micro.py: 34.4).
#     torchrun --standalone --nproc_per_node=4 train.py config/train_backpack_micro.py
from config.paper_recipe import *  # noqa: F401,F403

out_dir = "out-backpack-micro"
n_layer, n_head, n_embd = 6, 6, 384
num_senses = 16
