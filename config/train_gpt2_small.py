# The Transformer matched to Backpack-Small (124.1M parameters: GPT-2 with 512 positions) on
# OpenWebText, the paper's recipe (config/paper_recipe.py).
# The paper's OpenWebText perplexity at 512 tokens of context: 20.2 (Backpack-Small: 20.1).
#     torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2_small.py
from config.paper_recipe import *  # noqa: F401,F403

out_dir = "out-gpt2-small"
n_layer, n_head, n_embd = 12, 12, 768
num_senses = 0  # the matched Transformer: the same GPT-2 network, logits from its last hidden state
