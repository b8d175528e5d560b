# The paper's training recipe (Hewitt et al. 2023; the authors' training config), shared by the
# six config/train_{backpack,gpt2}_{micro,mini,small}.py, which add a model size: OpenWebText,
# 512-token contexts, 524,288 tokens per step, 100k steps (52B tokens), AdamW lr 6e-4 betas
# (0.9, 0.999), weight decay 0.1 (Linear weights only), gradient clipping 1.0, dropout 0.1,
# linear warmup over 1,000 steps (the authors' config; the paper's text says 5,000), then linear
# decay to 0.
#
#     python prepare.py --dataset=openwebtext  # once: data/openwebtext/{train,val}.bin, ~9B tokens
#     torchrun --standalone --nproc_per_node=4 train.py config/train_backpack_small.py
#
# On 4 GPUs a step is 32 sequences x 512 tokens x 4 GPUs x 8 accumulation steps; on another number
# of GPUs the accumulation steps follow (train.py prints the split). batch_size=32 peaked at 7.8,
# 10.9 and 14.6 GiB of GPU memory for Backpack micro, mini and small (12.2 GiB for the
# Transformer-Small) in train.py on an H100, bf16, compiled, with an earlier version of this code:
# it fits A100-40GB and H100-80GB alike.

dataset = "openwebtext"
eval_interval = 1000
eval_iters = 200
log_interval = 10
always_save_checkpoint = True

tokens_per_step = 524288
batch_size = 32
block_size = 512
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
