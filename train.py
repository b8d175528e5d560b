"""
Train a Backpack language model (or its matched Transformer, num_senses=0), in nanoGPT's style.

    python train.py                         # the quickstart: a small Backpack on Brown, on a CPU
    python train.py --init_from=resume      # continue the run in out/ exactly where it stopped
    python train.py config/finetune_backpack_gpt2.py    # fine-tune the released model
    python train.py --help                  # every setting and its default
    torchrun --standalone --nproc_per_node=4 train.py   # the same optimization, on 4 processes
    torchrun --standalone --nproc_per_node=4 train.py config/train_backpack_small.py  # the paper

Settings: the dict below, overridden by config files and --key=value arguments (settings.configure).
A step consumes tokens_per_step tokens, shared out over processes and micro-batches of at most
batch_size sequences (the split is printed). A step's sequences are a pure function of (seed, step):
a resumed run replays the batches of an uninterrupted one, and 1 process or 8 see the same batches.
"""

import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from backpack import Backpack, BackpackConfig
from files import read_tokens
from prepare import prepare_brown
from pretrained import load, read_train_checkpoint, write_checkpoint
from settings import check_allowed, configure, convert, device_and_autocast, one_line_errors

# -- settings: the defaults are the CPU quickstart (config/train_brown.py documents them) ----------
settings = dict(
    # -- I/O
    out_dir="out",
    eval_interval=200,  # steps between train/val loss estimates (and at the end), then a checkpoint
    eval_iters=16,  # batches per loss estimate: always the same batches, for comparable estimates
    log_interval=10,
    eval_only=False,  # estimate the losses of the initial model and exit
    always_save_checkpoint=True,  # False: only when the val loss improves (and at the last step)
    init_from="scratch",  # 'scratch', 'resume' (out_dir/ckpt.pt), or anything pretrained.load takes
    # -- data: data_dir/dataset/{train,val}.bin, uint16 GPT-2 token ids
    data_dir="data",
    dataset="brown",
    tokens_per_step=1024,  # tokens per optimizer step, over all processes and accumulation steps
    batch_size=8,  # the most sequences per forward pass per process
    block_size=128,
    # -- model
    n_layer=4,
    n_head=4,
    n_embd=128,
    num_senses=16,  # 0 trains the matched Transformer
    sense_intermediate_scale=4,
    dropout=0.0,
    bias=True,
    # -- AdamW and the learning-rate schedule
    learning_rate=3e-3,
    max_iters=1000,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.99,
    grad_clip=1.0,  # 0 disables clipping
    # 'linear': warmup, then linear decay to 0 at max_iters (the paper); 'cosine'; 'constant'
    decay_lr="linear",
    warmup_iters=50,
    min_lr=0.0,  # the floor of 'cosine'
    # -- system
    device="cuda" if torch.cuda.is_available() else "cpu",
    # 'auto': bfloat16 on CUDA where supported, else float16 (loss-scaled); float32 on CPU
    dtype="auto",
    compile=False,  # torch.compile the model
    seed=1337,
)
# allowed: an interval for a number (inf: unbounded), choices for a string, or its length's interval
allowed = dict(out_dir="[1, inf)", eval_interval="[1, inf)", eval_iters="[1, inf)",
               log_interval="[1, inf)", init_from="[1, inf)", data_dir="[1, inf)",
               dataset="[1, inf)", tokens_per_step="[1, inf)", batch_size="[1, inf)",
               block_size="[1, inf)", n_layer="[1, inf)", n_head="[1, inf)", n_embd="[1, inf)",
               num_senses="[0, inf)", sense_intermediate_scale="[1, inf)", dropout="[0, 1)",
               learning_rate="(0, inf)", max_iters="[0, inf)", weight_decay="[0, inf)",
               beta1="[0, 1)", beta2="[0, 1)", grad_clip="[0, inf)",
               decay_lr=("linear", "cosine", "constant"), warmup_iters="[0, inf)",
               min_lr="[0, inf)", dtype=("auto", "float32", "bfloat16", "float16"),
               seed="[0, 1e18]")
one_line_errors()
s, given = configure(settings, allowed, sys.argv[1:], __file__)  # given: set by this command
ckpt_path, ckpt = os.path.join(s["out_dir"], "ckpt.pt"), None
NOT_RESUMED = ("init_from", "out_dir", "device", "dtype")  # this command's and machine's own
if s["init_from"] == "resume":
    if not os.path.exists(ckpt_path):
        raise FileNotFoundError(f"--init_from=resume, but {ckpt_path} does not exist; start a "
                                "run with --init_from=scratch (or set --out_dir)")
    ckpt = read_train_checkpoint(ckpt_path)  # its entries checked
    # a resumed run keeps the settings saved with it, except those given now and NOT_RESUMED
    for k, v in ckpt["config"].items():
        if k in s and k not in given and k not in NOT_RESUMED:
            s[k] = convert(f"{ckpt_path}: {k}", v, s[k])
    check_allowed(s, allowed)
globals().update(s)  # the settings as plain names, as in nanoGPT
config = dict(s)  # saved with every checkpoint
if decay_lr == "cosine" and min_lr > learning_rate:  # the rate would rise to min_lr
    raise ValueError(f"--min_lr={min_lr} is above --learning_rate={learning_rate}: cosine decay "
                     "would raise the rate")
if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise NotADirectoryError(f"--out_dir={out_dir} is a file, not a folder")
if os.path.isdir(ckpt_path):  # found now, not when the first checkpoint is written
    raise IsADirectoryError(f"{ckpt_path} is a folder: a checkpoint cannot be written there")
device_type, dtype, autocast = device_and_autocast(device, dtype)

# -- processes: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE --------------------------------------
ddp = "RANK" in os.environ
if ddp and not all(os.environ.get(k, "").isdecimal() for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
    raise ValueError("RANK is set, but not with LOCAL_RANK and WORLD_SIZE as numbers: start "
                     "several processes with torchrun, or unset RANK")
rank, local_rank, world_size = ((int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
                                if ddp else (0, 0, 1))
master = rank == 0


def log(*args):
    if master:
        print(*args, flush=True)


def derive_seed(*parts):
    """A 63-bit seed that is a pure function of parts: how batches and dropout stay reproducible."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# a step's sequences are shared out over the processes, then in micro-batches of at most batch_size
if tokens_per_step % (block_size * world_size):
    unit = block_size * world_size
    raise ValueError(f"tokens_per_step={tokens_per_step:,} is not a multiple of block_size x "
                     f"processes = {block_size} x {world_size} = {unit:,}; use e.g. "
                     f"{max(unit, tokens_per_step // unit * unit):,}")
sequences_per_process = tokens_per_step // (block_size * world_size)
grad_accum = math.ceil(sequences_per_process / batch_size)
while sequences_per_process % grad_accum:
    grad_accum += 1
micro_batch = sequences_per_process // grad_accum

# -- data: checked before the processes connect, so that a mistake is printed once -----------------
data_path = {split: os.path.join(data_dir, dataset, f"{split}.bin") for split in ("train", "val")}
for split, path in data_path.items():  # Brown is prepared below when neither file is there
    if not os.path.exists(path) and (dataset != "brown"
                                     or any(map(os.path.exists, data_path.values()))):
        raise FileNotFoundError(f"{path} not found; prepare the data first (python prepare.py "
                                f"--dataset={dataset}) or point --data_dir at the folder holding "
                                f"{dataset}/")
    if os.path.exists(path):  # uint16 GPT-2 ids, and enough of them for a sequence and its targets
        read_tokens(path, more_than=block_size,
                    need=f"a sequence of block_size={block_size} and its targets")
prepare_brown_first = not any(map(os.path.exists, data_path.values()))  # decided by all ranks alike
if ddp:
    if device_type == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
log(f"tokens per step {tokens_per_step:,} = {micro_batch} seqs x {block_size} tokens x "
    f"{world_size} rank{'s' if world_size > 1 else ''} x {grad_accum} accumulation "
    f"step{'s' if grad_accum > 1 else ''}")
if prepare_brown_first:
    if master:
        log(f"{os.path.dirname(data_path['train'])}/ not found: preparing the Brown corpus (once)")
        prepare_brown(data_dir=data_dir)
    if ddp:
        dist.barrier()
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
if device_type == "cpu":
    # glibc hands big freed blocks (the logits, batch x block_size x 50k floats) back to the OS
    # and faults them in again each step; keeping them makes a CPU step ~1.5x faster (glibc only)
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks up to 1 GiB come from the heap
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD: keep freed memory for the next step
        libc.mallopt(-2, 1 << 28)  # M_TOP_PAD: grow the heap in 256 MiB steps


def get_batch(split, key, first, count):
    """Sequences first..first+count-1 (and their next-token targets) of the batch named key: (step,)
    or ("eval",). Their offsets are drawn batch_size at a time, each draw seeded by (seed, split,
    key, its number), so they do not depend on how many processes share the step. The memmap is
    reopened each time: one kept open grows in memory as it is read (nanoGPT's known leak)."""
    data = np.memmap(data_path[split], dtype=np.uint16, mode="r")
    draws = range(first // batch_size, (first + count - 1) // batch_size + 1)
    generators = [torch.Generator().manual_seed(derive_seed(seed, split, *key, n)) for n in draws]
    ix = torch.cat([torch.randint(len(data) - block_size, (batch_size,), generator=g)
                    for g in generators])[first - draws[0] * batch_size:][:count].tolist()
    x = torch.from_numpy(np.stack([data[i:i + block_size] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64))
    if device_type == "cuda":
        return (x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device)


# -- model -----------------------------------------------------------------------------------------
model_args = dict(block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                  num_senses=num_senses, sense_intermediate_scale=sense_intermediate_scale,
                  dropout=dropout, bias=bias)
ARCH_KEYS = tuple(k for k in model_args if k != "dropout")  # what a resumed run must match
iter_num, best_val_loss, origin = 0, float("inf"), init_from
torch.manual_seed(seed)  # the same initial weights on every rank
if init_from == "scratch":
    model = Backpack(BackpackConfig(**model_args))
elif init_from == "resume":
    log(f"resuming from {ckpt_path}")
    saved, origin = ckpt["model_args"], ckpt.get("origin", "scratch")
    # a fine-tuned run took its architecture from the trained model: only block_size is its own
    checked = ARCH_KEYS if origin == "scratch" else ("block_size",)
    if wrong := [f"{k}={saved[k]!r} (the config says {model_args[k]!r})" for k in checked
                 if saved.get(k, model_args[k]) != model_args[k]]:
        raise ValueError(f"{ckpt_path} was trained with {', '.join(wrong)}; resume with the "
                         "settings the run started with (its config file), or start a new run in "
                         "another --out_dir")
    if changed := [f"{k} {v!r} -> {config[k]!r}" for k, v in ckpt["config"].items()
                   if k in given and k not in NOT_RESUMED and config[k] != v]:
        log("resuming with changed settings: " + ", ".join(changed))
    model = Backpack(BackpackConfig(**{**saved, "dropout": dropout}))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # torch's message spans lines
        raise ValueError(f"{ckpt_path} does not fit its own model_args: "
                         f"{' '.join(str(e).split())}") from None
    iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
else:
    log(f"fine-tuning {init_from}")
    if ddp and not master:
        dist.barrier()  # rank 0 downloads (or reads) it first
    trained = load(init_from)
    if ddp and master:
        dist.barrier()
    if trained.sense_edits:  # finetune_senses.py's: kept beside the weights, not trained here
        log(f"note: {init_from} has edited senses of {len(trained.sense_edits)} words; training "
            "drops the edits")
    if block_size > trained.config.block_size:
        raise ValueError(f"--block_size={block_size} is larger than {init_from}'s block_size="
                         f"{trained.config.block_size}; use at most that")
    state = trained.state_dict()
    state["wpe.weight"] = state["wpe.weight"][:block_size]  # a shorter context: crop the table
    model = Backpack(dataclasses.replace(trained.config, block_size=block_size, dropout=dropout))
    model.load_state_dict(state)
    del trained, state
model.to(device)
log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, "
    + ", ".join(f"{k}={getattr(model.config, k)}" for k in ARCH_KEYS + ("dropout",)))
if warmup_iters >= max_iters and not eval_only:
    log(f"note: warmup_iters={warmup_iters} >= max_iters={max_iters}: the learning rate never "
        f"reaches {learning_rate}")
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
if ckpt is not None:
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise ValueError(f"{ckpt_path} holds an optimizer state that does not fit this model "
                         f"({e!r})") from None
    ckpt = None  # free the memory
raw_model = model  # what gets saved: no '_orig_mod.' or 'module.' prefixes
if compile:
    log("compiling the model (a minute or so)")
    model = torch.compile(model)
train_model = (DDP(model, device_ids=[local_rank] if device_type == "cuda" else None) if ddp
               else model)


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if decay_lr == "constant":
        return learning_rate
    progress = (it - warmup_iters) / max(1, max_iters - warmup_iters)
    if decay_lr == "linear":
        return learning_rate * max(0.0, 1.0 - progress)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (learning_rate - min_lr)


@torch.no_grad()
def estimate_loss():
    """Mean loss of the same eval_iters batches per split each time, shared out over the ranks."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        total = torch.zeros((), device=device)
        for k in range(rank, eval_iters, world_size):
            x, y = get_batch(split, ("eval",), k * batch_size, batch_size)
            with autocast:
                total += model(x, y)[1].float()
        if ddp:
            dist.all_reduce(total)
        out[split] = total.item() / eval_iters
    model.train()
    return out


def save_checkpoint():
    """out_dir/ckpt.pt, written atomically: tensors and plain Python types, which weights_only=True
    reads. Batches and dropout are pure functions of (seed, step): the step is the sampler state."""
    ckpt = {"model_args": dataclasses.asdict(raw_model.config), "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "iter_num": iter_num, "best_val_loss": float(best_val_loss), "config": config,
            "origin": origin}  # 'scratch', or the trained model this run was fine-tuned from
    write_checkpoint(out_dir, ckpt)
    if os.path.exists(metrics_path + ".new"):  # with its checkpoint, the new log replaces the old
        os.replace(metrics_path + ".new", metrics_path)
    return iter_num


def last_checkpoint():
    """Where a stopped run can continue from."""
    if saved_at is None:
        return "no checkpoint was saved"
    return (f"the last checkpoint is {ckpt_path}, from step {saved_at}: --init_from=resume "
            "continues from it")


# -- training --------------------------------------------------------------------------------------
metrics, metrics_path = None, os.path.join(out_dir, "metrics.jsonl")  # every logged loss, unrounded
if master and not eval_only:
    if init_from != "resume" and os.path.exists(ckpt_path):
        log(f"note: starting a new run in {out_dir}: its ckpt.pt and metrics.jsonl are replaced at "
            "the first checkpoint")
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(ckpt_path + ".tmp"):  # left by a run killed while it saved: half a checkpoint
        os.remove(ckpt_path + ".tmp")
    metrics = open(metrics_path, "a") if init_from == "resume" else open(metrics_path + ".new", "w")
if master and os.path.getsize(data_path["train"]) < 200_000_000:
    counts = np.bincount(np.memmap(data_path["train"], dtype=np.uint16, mode="r"))
    p = counts[counts > 0] / counts.sum()  # the token frequencies: the entropy is -sum p ln p
    log(f"unigram entropy of the training tokens: {-(p * np.log(p)).sum():.4f} (a model that "
        "ignores context does no better)")
if raw_model.estimate_mfu(1, 1.0) is None:
    log(f"(no MFU: the peak FLOP/s of {device_type} is unknown)")
start_iter, start_time, saved_at = (iter_num, time.time(),
                                    iter_num if init_from == "resume" else None)
t_log, iters_logged, loss_sum = time.time(), 0, torch.zeros((), device=device)
try:
    while True:
        last = iter_num >= max_iters
        if (iter_num % eval_interval == 0 and iter_num != start_iter) or last or eval_only:
            t_eval = time.time()
            losses = estimate_loss()
            if not all(map(math.isfinite, losses.values())):  # and no checkpoint of it
                raise ValueError(f"the train loss is {losses['train']}, the val loss "
                                 f"{losses['val']} at step {iter_num}: training diverged; lower "
                                 f"--learning_rate ({last_checkpoint()})")
            log(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if metrics:
                print(json.dumps({"iter": iter_num, "train_loss": losses["train"],
                                  "val_loss": losses["val"]}), file=metrics, flush=True)
            improved = losses["val"] < best_val_loss
            best_val_loss = min(best_val_loss, losses["val"])
            if master and not eval_only and (always_save_checkpoint or improved or last):
                saved_at = save_checkpoint()
                log(f"saved checkpoint at step {iter_num} to {ckpt_path}")
            t_log += time.time() - t_eval  # keep the evaluation out of the ms/iter figure
        if last or eval_only:
            break

        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro_step in range(grad_accum):
            group_index = micro_step * world_size + rank  # which of the step's micro-batches
            x, y = get_batch("train", (iter_num,), group_index * micro_batch, micro_batch)
            torch.manual_seed(derive_seed(seed, "dropout", iter_num, group_index))
            no_sync = ddp and micro_step < grad_accum - 1  # DDP all-reduces on the last one only
            with train_model.no_sync() if no_sync else contextlib.nullcontext(), autocast:
                loss = train_model(x, y)[1] / grad_accum
            scaler.scale(loss).backward()
            loss_sum += loss.detach().float()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        iters_logged += 1

        # the window also closes before each evaluation (and checkpoint): resumed runs log the same
        if iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num == max_iters:
            if ddp:
                dist.all_reduce(loss_sum)
            step_loss = loss_sum.item() / iters_logged / world_size  # mean over steps and ranks
            if not math.isfinite(step_loss):
                raise ValueError(f"the loss is {step_loss} at step {iter_num}: training diverged; "
                                 f"lower --learning_rate ({last_checkpoint()})")
            dt = (time.time() - t_log) / iters_logged
            mfu = raw_model.estimate_mfu(micro_batch * grad_accum, dt)
            log(f"iter {iter_num}: loss {step_loss:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                f"{tokens_per_step / dt:,.0f} tok/s"
                + ("" if mfu is None else f", mfu {mfu * 100:.1f}%"))
            if metrics:
                print(json.dumps({"iter": iter_num, "loss": step_loss, "lr": lr,
                                  "ms_per_iter": dt * 1000}), file=metrics, flush=True)
            t_log, iters_logged, loss_sum = time.time(), 0, torch.zeros((), device=device)

except KeyboardInterrupt:  # nothing is lost: say where the run can continue from
    raise KeyboardInterrupt(last_checkpoint()) from None
elapsed = time.time() - start_time
if ddp:  # a real check that data parallelism kept the replicas identical
    h = hashlib.sha256()
    for name, t in sorted(raw_model.state_dict().items()):
        h.update(name.encode() + t.detach().float().cpu().numpy().tobytes())
    print(f"rank {rank}: weights sha256 {h.hexdigest()[:16]}", flush=True)
    digests = [None] * world_size
    dist.all_gather_object(digests, h.hexdigest()[:16])
    if len(set(digests)) != 1:
        raise RuntimeError(f"the ranks ended with different weights: {digests}")
    log(f"all {world_size} ranks hold identical weights")
    # free DDP's reducer (and its gloo work) while the process group and interpreter are alive:
    # left to the interpreter's shutdown, gloo's threads sometimes abort ("terminate called ...")
    del train_model
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
if not eval_only:
    memory = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
              if device_type == "cuda" else "")
    log(f"done: {iter_num - start_iter} steps in {elapsed / 60:.1f} min{memory}, "
        f"best val loss {best_val_loss:.4f}; checkpoint {ckpt_path}. Try: python sample.py"
        + (f" --out_dir={out_dir}" if out_dir != "out" else ""))
