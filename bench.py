r"""
Benchmark a Backpack: training throughput (forward, backward, clipping and an AdamW step on batches
of real text), MFU and peak memory, optionally against its matched Transformer in the same run; and
generation speed with and without the cache.

    python bench.py --compare --generate  # a GPU: Small and its Transformer, 32 x 512, bf16
    python bench.py --preset=micro --device=cpu --compile=False --dtype=float32 --batch_size=4 \
        --steps=3 --compare
    python bench.py --preset=small --device=cpu --train=False --generate --dtype=float32 \
        --compile=False

Batches come from data/<dataset>/train.bin (the Brown corpus is prepared if missing). --dedup=False
runs the sense network on every token instead of once per distinct id; --capture_unique=True
compiles torch.unique into the graph (one graph) instead of breaking the graph there.
"""

import functools
import os
import sys
import time

import numpy as np
import torch

from backpack import GPT2_VOCAB, Backpack, BackpackConfig
from files import read_tokens
from settings import configure, device_and_autocast, one_line_errors

settings = dict(
    preset="small",  # the paper's sizes: micro, mini or small (= backpack-gpt2)
    batch_size=32,
    block_size=512,
    steps=20,  # timed training steps
    warmup=5,  # untimed steps first (compilation happens here)
    compile=True,
    dtype="bfloat16",
    device="cuda" if torch.cuda.is_available() else "cpu",
    dataset="brown",  # data/<dataset>/train.bin
    compare=False,  # also time the matched Transformer (num_senses=0)
    generate=False,  # time generation of gen_tokens tokens at batch 1, cached and uncached
    gen_tokens=512,
    train=True,  # False skips the training benchmark
    dedup=True,  # False: the sense network runs on every token, not once per distinct id
    capture_unique=False,  # True: torch.compile captures torch.unique's dynamic output shape
)
# the values allowed: an interval for a number (inf: unbounded), the choices for a string
allowed = dict(preset=("micro", "mini", "small"), batch_size="[1, inf)", block_size="[1, inf)",
               steps="[1, inf)", warmup="[0, inf)", dtype=("bfloat16", "float16", "float32"),
               dataset="[1, inf)", gen_tokens="[1, inf)")
one_line_errors()
# given: the settings this command sets
s, given = configure(settings, allowed, sys.argv[1:], __file__)
globals().update(s)  # the settings as plain names, as in nanoGPT
if not (train or generate):
    raise ValueError("--train=False and no --generate: nothing to measure")
# n_embd, n_layer, n_head; k = 16
PRESETS = {"micro": (384, 6, 6), "mini": (640, 8, 8), "small": (768, 12, 12)}
device_type, dtype, autocast = device_and_autocast(device, dtype)
gpu_sized = preset != "micro" or batch_size * block_size > 4096
if device_type == "cpu" and "device" not in given and gpu_sized:
    raise ValueError(f"there is no GPU here, and --preset={preset} at batch {batch_size} x "
                     f"{block_size} is a GPU benchmark (tens of minutes on a CPU); "
                     "try the CPU command in `python bench.py --help`, "
                     "or give --device=cpu to run this one anyway")
torch.manual_seed(1337)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
# torch.unique (sense de-duplication) has a data-dependent output size: by default torch.compile
# breaks the graph there (and recompiles once, after which that size is dynamic); this traces it
# into one graph instead
torch._dynamo.config.capture_dynamic_output_shape_ops = capture_unique
path = os.path.join("data", dataset, "train.bin")
if not os.path.exists(path) and dataset == "brown":
    from prepare import prepare_brown
    prepare_brown()
if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found; run `python prepare.py --dataset={dataset}` first")
tokens = read_tokens(path, more_than=block_size + 1,
                     need=f"a batch of block_size={block_size} and its targets")
device_name = torch.cuda.get_device_name() if device_type == "cuda" else "cpu"
print(f"device {device_name}, torch {torch.__version__}, preset {preset}, "
      f"batch {batch_size} x {block_size}, {dtype}, compile={compile}, "
      f"capture_unique={capture_unique}, {path}", flush=True)


def make_model(num_senses):
    d, L, H = PRESETS[preset]
    return Backpack(BackpackConfig(n_embd=d, n_layer=L, n_head=H, num_senses=num_senses,
                                   block_size=block_size))


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()


def bench_training(num_senses, data):
    name = "Backpack" if num_senses else "Transformer"
    model = make_model(num_senses).to(device).train()
    if not dedup:  # the plain path, for comparison
        model.senses = functools.partial(Backpack.senses, model, dedup=False)
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.999), device_type)
    step_model = torch.compile(model) if compile else model
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(x, y):
        with autocast:
            _, loss = step_model(x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for i in range(warmup):
        compiling = " (compiling: a minute or more)" if compile and not i else ""
        print(f"{name}: warmup step {i + 1} of {warmup}{compiling}", flush=True)
        step(*data[i % len(data)])
    sync()
    print(f"{name}: timing {steps} steps", flush=True)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(*data[i % len(data)])
    sync()
    dt = (time.perf_counter() - t0) / steps
    mfu = model.estimate_mfu(batch_size, dt)
    if device_type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    else:
        peak = "n/a on CPU"
    distinct = sum(x.unique().numel() / x.numel() for x, _ in data) / len(data)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    mfu_text = "n/a" if mfu is None else f"{mfu * 100:.1f}%"
    print(f"{name:12s} {params:7.1f}M params | {dt * 1000:8.1f} ms/step | "
          f"{batch_size * block_size / dt:10,.0f} tokens/s | MFU {mfu_text} | "
          f"peak memory {peak} | loss {loss.item():.3f}"
          + (f" | distinct ids {distinct:.0%} of tokens, dedup={dedup}" if num_senses else ""),
          flush=True)
    return batch_size * block_size / dt


@torch.no_grad()
def bench_generation():
    model = make_model(16).to(device).eval()
    prompt = torch.from_numpy(tokens[:1].astype(np.int64)).view(1, 1).to(device)

    # an uncached pass over the whole window, projecting only the last position
    def last_logits(window):
        hidden = model.weighted_sum(model.sense_weights(window), model.senses(window))
        return hidden[:, -1] @ model.wte.weight.T

    # both paths compiled; dynamic=True: the cache and the prefix grow by a position per token
    if compile:
        # forward_cached: what generate() calls
        model.forward_cached = torch.compile(model.forward_cached, dynamic=True)
        last_logits = torch.compile(last_logits, dynamic=True)

    def uncached():  # run the whole prefix again for every token
        idx = prompt
        for _ in range(gen_tokens):
            logits = last_logits(idx[:, -model.config.block_size:])
            idx = torch.cat([idx, logits[:, :GPT2_VOCAB].argmax(-1, keepdim=True)], dim=1)
        return idx

    def cached():
        return model.generate(prompt, gen_tokens, temperature=0)

    results = {}
    for name, fn in (("cached", cached), ("uncached", uncached)):
        with autocast:
            compiling = " (compiling)" if compile else ""
            print(f"generation {name}: a first, untimed run{compiling}", flush=True)
            fn()
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
        results[name] = (gen_tokens / (time.perf_counter() - t0), out)
        print(f"generation {name:9s} {results[name][0]:10,.1f} tokens/s "
              f"({gen_tokens} new tokens, batch 1)", flush=True)
    same = torch.equal(results["cached"][1], results["uncached"][1])
    speedup = results["cached"][0] / results["uncached"][0]
    outputs = "identical" if same else "DIFFER (expected only in reduced precision)"
    print(f"generation speedup from the cache: {speedup:.1f}x (greedy outputs {outputs})")


if train:
    g = torch.Generator().manual_seed(0)
    data = []  # 8 fixed batches of real text: inputs and next-token targets
    for _ in range(8):
        ix = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=g).tolist()
        xy = torch.stack([torch.from_numpy(tokens[i:i + block_size + 1].astype(np.int64))
                          for i in ix])
        data.append((xy[:, :-1].to(device), xy[:, 1:].to(device)))
    backpack_speed = bench_training(16, data)
    if compare:
        transformer_speed = bench_training(0, data)
        print("Backpack / Transformer training throughput: "
              f"{backpack_speed / transformer_speed:.3f}x")
if generate:
    bench_generation()
