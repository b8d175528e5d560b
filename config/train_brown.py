# The quickstart: a small Backpack trained on the Brown corpus (1961 American English, ~1.3M GPT-2
# tokens, shipped with the project) on a CPU: about 7 to 9 minutes on 2 cores, preparing the data
# included, to a validation loss of about 6.1 (the README says where the figures come from), against
# 7.27 for the unigram entropy of the training tokens (the best a model ignoring context can do).
# These are exactly train.py's defaults, written out so they can be read and changed in one place:
#
#     python train.py                          # the same as: python train.py config/train_brown.py
#     python train.py config/train_brown.py --device=cuda --max_iters=3000   # longer, on a GPU
#
# The model keeps GPT-2's full vocabulary (50,264 rows with padding), so at this width the output
# layer over 50k words costs more than the rest of the network: n_embd is the main cost knob.

out_dir = "out"
dataset = "brown"  # data/brown/{train,val}.bin: prepared automatically on first use
eval_interval = 200
eval_iters = 16
log_interval = 10

# 1,024 tokens per step = 8 sequences x 128 tokens (x 1 process x 1 accumulation step); on several
# processes, the sequences are shared out among them (train.py prints the split).
tokens_per_step = 1024
batch_size = 8
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
num_senses = 16  # the paper's k; n_embd must be a multiple of it
sense_intermediate_scale = 4
dropout = 0.0  # under one pass over the data nothing overfits yet

learning_rate = 3e-3  # small models take a larger rate than the paper's 6e-4 (1e-3 learns slower)
max_iters = 1000  # 1.02M tokens: 83% of Brown's 1.24M training tokens, one pass
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
decay_lr = "linear"  # warmup, then linear decay to 0 at max_iters (the paper's schedule)
warmup_iters = 50
