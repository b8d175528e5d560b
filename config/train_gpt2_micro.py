# The Transformer matched to Backpack-Micro (30.1M parameters) on OpenWebText, the paper's recipe
# (config/paper_recipe.py).
# The paper's OpenWebText perplexity at 512 tokens of context: 34.4 (Backpack-Micro: 31.5).
#     torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2_micro.py
from config.paper_recipe import *  # noqa: F401,F403

out_dir = "out-gpt2-micro"
n_layer, n_head, n_embd = 6, 6, 384
num_senses = 0  # the matched Transformer: the same GPT-2 network, logits from its last hidden state
