# The Transformer matched to Backpack-Micro (num_senses=0, 30.1M parameters) on OpenWebText: the paper's recipe
# (Hewitt et al. 2023; the authors' training config): 512-token contexts, 524,288 tokens per step,
# 100k steps (52B tokens), AdamW lr 6e-4 betas (0.9, 0.999), weight decay 0.1 (Linear weights only),
# gradient clipping 1.0, dropout 0.1, linear warmup over 1,000 steps (the authors' config; the paper's
# text says 5,000) then linear decay to 0 at step 100k.
#
#     python prepare.py openwebtext            # once: data/openwebtext/{train,val}.bin (~9B tokens)
#     torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2_micro.py
#
# 524,288 tokens per step = 32 seqs x 512 tokens x 4 GPUs x 8 accumulation steps. batch_size=32 peaked
# at less than train_gpt2_small's 12.2 GiB of GPU memory on an H100 (bf16, compiled): it fits A100-40GB and H100-80GB alike.
# On another number of GPUs keep tokens_per_step and the accumulation steps follow (train.py prints
# the split, which must divide exactly). Paper result, OpenWebText perplexity at 512 context:
# Transformer-Micro 34.4 (Backpack-Micro 31.5).

out_dir = "out-gpt2-micro"
dataset = "openwebtext"
eval_interval = 1000
eval_iters = 200
log_interval = 10
always_save_checkpoint = True

tokens_per_step = 524288
batch_size = 32
block_size = 512

n_layer = 6
n_head = 6
n_embd = 384
num_senses = 0  # 0: the matched Transformer (same GPT-2 network, logits from its last hidden state)
dropout = 0.1

learning_rate = 6e-4
max_iters = 100000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0
decay_lr = "linear"
warmup_iters = 1000

compile = True
