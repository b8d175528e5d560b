"""
Sample text from a trained Backpack (or its matched Transformer).

    python sample.py                                        # from out/ckpt.pt, which `python train.py` writes
    python sample.py --out_dir=out-micro --start="The old man" --num_samples=3 --max_new_tokens=100
    python sample.py --init_from=stanfordnlp/backpack-gpt2 --start=FILE:prompt.txt --temperature=0

Prompts: --start is the text to continue, or FILE:path to read it from a file. "<|endoftext|>" in a prompt
is the end-of-text token. An empty prompt starts from <|endoftext|> alone (an unconditional sample, a
note says so). A prompt longer than the model's block_size is cut to its last block_size tokens, with
a warning: the model cannot see further back than that.
"""

import argparse
import os
import signal
import sys
from contextlib import nullcontext

import torch

from backpack import Backpack
from tokenizer import EOT, get_tokenizer


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="out", help="a train.py run's folder holding ckpt.pt (default: out)")
    p.add_argument("--init_from", default="resume",
                   help="'resume' (the checkpoint in --out_dir, the default), or anything Backpack.from_pretrained "
                        "takes: stanfordnlp/backpack-gpt2, a Hugging Face-layout folder, a Lightning .ckpt file")
    p.add_argument("--start", default="<|endoftext|>", help="the prompt, or FILE:path (default: <|endoftext|>)")
    p.add_argument("--num_samples", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 takes the most likely token (greedy)")
    p.add_argument("--top_k", type=int, default=200, help="sample from the k most likely tokens; 0 for all")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on CUDA where supported, else float16; float32 on CPU")
    # interventions on senses (senses.py): persistent edits that hold wherever the word occurs
    p.add_argument("--scale", action="append", default=[], metavar="WORD:SENSE=FACTOR",
                   help="scale senses of a word, e.g. nurse:10=0 (remove sense 10) or nurse:10=0.5,3=2; repeatable")
    p.add_argument("--edit", action="append", default=[], metavar="WORD:OLD->NEW",
                   help="the paper's knowledge edit, e.g. MacBook:Apple->HP (OLD, NEW single tokens); repeatable")
    p.add_argument("--topic", help="steer towards a topic: comma-separated words, e.g. food,dining")
    p.add_argument("--strength", type=int, default=2, choices=[1, 2, 3], help="--topic's boost (default 2)")
    p.add_argument("--topic_vocab", type=int, default=None, help="--topic: score the N most common words only; "
                   "0 for every word (default: every word on CUDA, 5000 on CPU)")
    return p


def fail(message):
    sys.exit(f"sample.py: {message}")


def load_model(args):
    """The model to sample from: float32, eval mode, on args.device."""
    if args.init_from == "resume":
        if not os.path.isfile(os.path.join(args.out_dir, "ckpt.pt")):
            fail(f"no checkpoint at {os.path.join(args.out_dir, 'ckpt.pt')}; train one first (python train.py) "
                 "or sample a pretrained model (--init_from=stanfordnlp/backpack-gpt2)")
        source = args.out_dir
    else:
        source = args.init_from
    try:
        model = Backpack.from_pretrained(source)
    except (ValueError, OSError) as e:
        fail(f"cannot load a model from {source}: {str(e).removeprefix('from_pretrained: ')}")
    return model.to(args.device).eval()


def intervene(model, args, enc):
    """Changes to the model's senses requested on the command line (senses.apply_interventions)."""
    if args.scale or args.edit or args.topic:
        from senses import apply_interventions
        try:
            apply_interventions(model, enc, args.scale, args.edit, args.topic, args.strength, args.topic_vocab,
                                log=lambda note: print(note, file=sys.stderr))
        except ValueError as e:
            fail(str(e))


def encode_prompt(args, enc, block_size):
    start = args.start
    if start.startswith("FILE:"):
        try:
            with open(start[5:], encoding="utf-8") as f:
                start = f.read()
        except OSError as e:
            fail(f"cannot read the prompt file {start[5:]}: {e.strerror}")
    ids = enc.encode(start, allowed_special={"<|endoftext|>"})
    if not ids:
        print("note: the prompt is empty; starting from <|endoftext|> (an unconditional sample)", file=sys.stderr)
        ids = [EOT]
    if len(ids) > block_size:
        print(f"warning: the prompt is {len(ids)} tokens, longer than the model's block_size={block_size}; "
              f"keeping its last {block_size} tokens", file=sys.stderr)
        ids = ids[-block_size:]
    return ids


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.num_samples < 1 or args.max_new_tokens < 0 or args.temperature < 0 or args.top_k < 0:
        fail("--num_samples must be >= 1, --max_new_tokens >= 0, --temperature >= 0 and --top_k >= 0")
    device_type = "cuda" if args.device.startswith("cuda") else args.device.split(":")[0]
    if device_type == "cuda" and not torch.cuda.is_available():
        fail(f"--device={args.device} but CUDA is not available; use --device=cpu")
    dtype = args.dtype
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if device_type == "cuda" else "float32"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)
    torch.manual_seed(args.seed)

    enc = get_tokenizer()
    model = load_model(args)
    intervene(model, args, enc)
    ids = encode_prompt(args, enc, model.config.block_size)
    x = torch.tensor([ids], dtype=torch.long, device=args.device)
    with torch.no_grad(), autocast:  # all samples in one batch: one pass of the cached generation
        y = model.generate(x.expand(args.num_samples, -1), args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k or None)
    for row in y.tolist():
        print(enc.decode(row))
        print("---------------")


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `python sample.py ... | head` ends quietly
    main()
