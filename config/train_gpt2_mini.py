# The Transformer matched to Backpack-Mini (71.9M parameters) on OpenWebText, the paper's recipe
# (config/paper_recipe.py).
# The paper's OpenWebText perplexity at 512 tokens of context: 24.5 (Backpack-Mini: 23.5).
#     torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2_mini.py
from config.paper_recipe import *  # noqa: F401,F403

out_dir = "out-gpt2-mini"
n_layer, n_head, n_embd = 8, 8, 640
num_senses = 0  # the matched Transformer: the same GPT-2 network, logits from its last hidden state
