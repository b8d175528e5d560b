"""
Benchmark a Backpack: training throughput (forward + backward + AdamW step on real token batches),
MFU and peak memory, optionally against its matched Transformer in the same run; and generation
speed with and without the cache.

    python bench.py                                    # Backpack-Small, batch 32 x 512, bf16, compiled
    python bench.py --compare                          # ... and its matched Transformer, with the ratio
    python bench.py --generate                         # cached vs uncached generation of 512 tokens
    python bench.py --preset=micro --device=cpu --compile=0 --batch_size=2 --steps=3 --generate

Batches come from data/<dataset>/train.bin if it exists, else from the shipped Brown corpus.
"""

import argparse
import functools
import os
import time
from contextlib import nullcontext

import numpy as np
import torch

from backpack import GPT2_VOCAB, Backpack, BackpackConfig, weighted_sum

PRESETS = {  # the paper's sizes (n_embd, n_layer, n_head); num_senses 16
    "micro": (384, 6, 6), "mini": (640, 8, 8), "small": (768, 12, 12),
}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--preset", default="small", choices=PRESETS)
parser.add_argument("--batch_size", type=int, default=32)
parser.add_argument("--block_size", type=int, default=512)
parser.add_argument("--steps", type=int, default=20, help="timed training steps")
parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
parser.add_argument("--compile", type=int, default=1)
parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--dataset", default="brown", help="uses data/<dataset>/train.bin")
parser.add_argument("--compare", action="store_true", help="also time the matched Transformer (num_senses=0)")
parser.add_argument("--generate", action="store_true", help="time generation, cached vs uncached")
parser.add_argument("--gen_tokens", type=int, default=512)
parser.add_argument("--train", type=int, default=1, help="0 skips the training benchmark")
parser.add_argument("--dedup", type=int, default=1, help="0 runs the sense network on every token, not once per id")
parser.add_argument("--capture_unique", type=int, default=0,
                    help="1 compiles torch.unique into the graph (one graph) instead of breaking the graph there")
args = parser.parse_args()

device_type = "cuda" if args.device.startswith("cuda") else "cpu"
if device_type == "cuda" and not torch.cuda.is_available():
    raise SystemExit(f"bench.py: --device={args.device} but CUDA is not available; use --device=cpu")
torch.manual_seed(1337)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
# torch.unique (sense de-duplication) has a data-dependent output size: by default torch.compile breaks
# the graph there (and recompiles once, after which that size is dynamic); this traces it into one graph
torch._dynamo.config.capture_dynamic_output_shape_ops = bool(args.capture_unique)
ptdtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
autocast = nullcontext() if args.dtype == "float32" else torch.autocast(device_type, dtype=ptdtype)


def load_tokens():
    path = os.path.join("data", args.dataset, "train.bin")
    if not os.path.exists(path):
        if args.dataset != "brown":
            raise SystemExit(f"bench.py: {path} not found; run `python prepare.py {args.dataset}` first")
        from prepare import prepare_brown
        prepare_brown()
    return np.memmap(path, dtype=np.uint16, mode="r")


def batches(tokens, n):
    """n fixed batches of real text (inputs and next-token targets), on the device."""
    g = torch.Generator().manual_seed(0)
    T = args.block_size
    out = []
    for _ in range(n):
        ix = torch.randint(len(tokens) - T - 1, (args.batch_size,), generator=g).tolist()
        xy = torch.stack([torch.from_numpy(tokens[i:i + T + 1].astype(np.int64)) for i in ix])
        out.append((xy[:, :-1].to(args.device), xy[:, 1:].to(args.device)))
    return out


def make_config(num_senses):
    d, L, H = PRESETS[args.preset]
    return BackpackConfig(n_embd=d, n_layer=L, n_head=H, num_senses=num_senses, block_size=args.block_size)


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()


def bench_training(num_senses, data):
    model = Backpack(make_config(num_senses)).to(args.device).train()
    if not args.dedup:  # the plain path, for comparison: Backpack.senses(idx, dedup=False)
        model.senses = functools.partial(Backpack.senses, model, dedup=False)
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.999), device_type)
    step_model = torch.compile(model) if args.compile else model
    scaler = torch.amp.GradScaler(enabled=(args.dtype == "float16"))
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

    for i in range(args.warmup):
        step(*data[i % len(data)])
    sync()
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(*data[i % len(data)])
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    tokens_per_s = args.batch_size * args.block_size / dt
    mfu = model.estimate_mfu(args.batch_size, dt)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device_type == "cuda" else "n/a on CPU"
    name = "Backpack" if num_senses else "Transformer"
    distinct = sum(x.unique().numel() / x.numel() for x, _ in data) / len(data)
    print(f"{name:12s} {model.get_num_params() / 1e6:7.1f}M params | {dt * 1000:8.1f} ms/step | "
          f"{tokens_per_s:10,.0f} tokens/s | MFU {'n/a' if mfu is None else f'{mfu * 100:.1f}%'} | "
          f"peak memory {peak} | loss {loss.item():.3f}"
          + (f" | distinct ids {distinct:.0%} of tokens, dedup={args.dedup}" if num_senses else ""))
    return tokens_per_s


@torch.no_grad()
def bench_generation(tokens):
    model = Backpack(make_config(16)).to(args.device).eval()
    prompt = torch.from_numpy(tokens[:1].astype(np.int64)).view(1, 1).to(args.device)
    n = args.gen_tokens

    def last_logits(window):  # an uncached pass over the whole window, projecting only the last position
        return weighted_sum(model.sense_weights(window), model.senses(window))[:, -1] @ model.wte.weight.T

    if args.compile:  # both paths compiled; dynamic=True: the cache and the prefix grow by a position per token
        model.forward_cached = torch.compile(model.forward_cached, dynamic=True)  # what generate() calls
        last_logits = torch.compile(last_logits, dynamic=True)

    def uncached():  # re-run the whole prefix for every token
        idx = prompt
        for _ in range(n):
            logits = last_logits(idx[:, -model.config.block_size:])
            idx = torch.cat([idx, logits[:, :GPT2_VOCAB].argmax(-1, keepdim=True)], dim=1)
        return idx

    results = {}
    for name, fn in (("cached", lambda: model.generate(prompt, n, temperature=0)), ("uncached", uncached)):
        with autocast:
            fn()  # warm up (and compile, for every length)
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
        results[name] = (n / (time.perf_counter() - t0), out)
        print(f"generation {name:9s} {results[name][0]:10,.1f} tokens/s ({n} new tokens, batch 1)")
    same = torch.equal(results["cached"][1], results["uncached"][1])
    print(f"generation speedup from the cache: {results['cached'][0] / results['uncached'][0]:.1f}x "
          f"(greedy outputs {'identical' if same else 'DIFFER (expected only in reduced precision)'})")


print(f"device {torch.cuda.get_device_name() if device_type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
      f"preset {args.preset}, batch {args.batch_size} x {args.block_size}, {args.dtype}, compile={args.compile}, "
      f"capture_unique={args.capture_unique}, "
      f"data/{args.dataset}/train.bin")
tokens = load_tokens()
if args.train:
    data = batches(tokens, 8)
    backpack_tps = bench_training(16, data)
    if args.compare:
        transformer_tps = bench_training(0, data)
        print(f"Backpack / Transformer training throughput: {backpack_tps / transformer_tps:.3f}x")
if args.generate:
    bench_generation(tokens)
