# Fine-tune the released Backpack-Small (stanfordnlp/backpack-gpt2) on the Brown corpus.
#
#     python train.py config/finetune_backpack_gpt2.py                  # a GPU; CPU works, slowly
#     python train.py config/finetune_backpack_gpt2.py --init_from=resume   # continue it
#
# The architecture (and the 512-token block_size, which may be lowered) comes from the pretrained
# checkpoint; a small constant learning rate after a short warmup adapts it without forgetting.

init_from = "stanfordnlp/backpack-gpt2"
out_dir = "out-finetune-brown"
dataset = "brown"
eval_interval = 50
eval_iters = 20
log_interval = 5
always_save_checkpoint = False  # save only when the validation loss improves, and at the last step

# 32,768 tokens per step = 8 seqs x 512 tokens x 1 process x 8 accumulation steps
tokens_per_step = 32768
batch_size = 8
block_size = 512
dropout = 0.1

learning_rate = 3e-5
max_iters = 200
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.999
decay_lr = "constant"
warmup_iters = 20
