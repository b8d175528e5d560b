# Backpack-Mini (103.9M parameters) on OpenWebText, the paper's recipe (config/paper_recipe.py).
# The paper's OpenWebText perplexity at 512 tokens of context: 23.5 (its matched Transformer,
# train_gpt2_mini.py: 24.5).
#     torchrun --standalone --nproc_per_node=4 train.py config/train_backpack_mini.py
from config.paper_recipe import *  # noqa: F401,F403

out_dir = "out-backpack-mini"
n_layer, n_head, n_embd = 8, 8, 640
num_senses = 16
