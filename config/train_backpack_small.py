# Backpack-Small (170.1M parameters, the released stanfordnlp/backpack-gpt2) on OpenWebText, the
# paper's recipe (config/paper_recipe.py).
# The paper's OpenWebText perplexity at 512 tokens of context: 20.1 (its matched Transformer,
# train_gpt2_small.py: 20.2).
#     torchrun --standalone --nproc_per_node=4 train.py config/train_backpack_small.py
from config.paper_recipe import *  # noqa: F401,F403

out_dir = "out-backpack-small"
n_layer, n_head, n_embd = 12, 12, 768
num_senses = 16
