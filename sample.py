"""
Sample from a trained Backpack (or its matched Transformer), optionally with its senses edited.

    python sample.py    # the model in out/, which `python train.py` writes
    python sample.py --start "The old man" --num_samples 3 --max_new_tokens 60
    python sample.py --init_from=stanfordnlp/backpack-gpt2 --start=FILE:prompt.txt --temperature=0
    python sample.py --scale nurse:10=0 --edit "MacBook:Apple->HP" --topic food  # interventions.py

--start is the text to continue, or FILE:path to read it from a file; "<|endoftext|>" in it is the
end-of-text token. An empty prompt starts from that token alone (an unconditional sample). A prompt
longer than the model's block_size keeps its last block_size tokens: the model cannot see further
back.
"""

import signal
import sys

import torch

from files import read_text
from interventions import apply_interventions
from pretrained import load
from settings import configure, device_and_autocast, one_line_errors
from tokenizer import EOT, get_tokenizer

settings = dict(
    init_from="resume",  # 'resume' (the run in out_dir), or anything pretrained.load takes
    out_dir="out",
    start="<|endoftext|>",  # the prompt, or FILE:path
    num_samples=3,
    max_new_tokens=200,
    temperature=0.8,  # 0 takes the most likely token (greedy)
    top_k=200,  # sample from the top_k most likely tokens; 0: from all
    top_p=1.0,  # ... and from the fewest most likely tokens whose probabilities add up to top_p
    seed=1337,
    device="cuda" if torch.cuda.is_available() else "cpu",
    # 'auto': bfloat16 on CUDA where supported, else float16; float32 on CPU
    dtype="auto",
    # -- edits of senses (interventions.py), wherever the word occurs; --scale, --edit may repeat
    scale=[],  # WORD:SENSE=FACTOR[,SENSE=FACTOR...]: nurse:10=0 removes sense 10 of ' nurse'
    edit=[],  # WORD:OLD->NEW, the paper's knowledge edit: MacBook:Apple->HP
    topic="",  # steer towards a topic: comma-separated words, e.g. food,dining
    strength=2,  # --topic's boost: 1, 2 or 3
    # --topic scores the N most common words; 0: all (the default on CUDA; slow on CPU)
    topic_vocab=5000,
)
# allowed: a number's interval (inf: unbounded), a string's choices, or its length's interval
allowed = dict(init_from="[1, inf)", out_dir="[1, inf)", num_samples="[1, inf)",
               max_new_tokens="[0, inf)", temperature="[0, inf)", top_k="[0, inf)", top_p="(0, 1]",
               seed="[0, 1e18]", dtype=("auto", "float32", "bfloat16", "float16"),
               strength="[1, 3]", topic_vocab="[0, inf)")
one_line_errors()
s, given = configure(settings, allowed, sys.argv[1:], __file__)  # given: those this command sets
globals().update(s)  # the settings as plain names, as in nanoGPT
device_type, dtype, autocast = device_and_autocast(device, dtype)
topic_vocab = topic_vocab if "topic_vocab" in given else None  # None: interventions.py's default
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `python sample.py | head` ends quietly
torch.manual_seed(seed)

enc = get_tokenizer()
model = load(out_dir if init_from == "resume" else init_from).to(device)
apply_interventions(model, enc, scale=scale, edit=edit, topic=topic, strength=strength,
                    topic_vocab=topic_vocab, log=lambda note: print(note, file=sys.stderr))
if start.startswith("FILE:"):
    if not start[5:]:
        raise ValueError("--start=FILE: needs a file name: --start=FILE:prompt.txt")
    start = read_text(start[5:])
ids = enc.encode(start, allowed_special={"<|endoftext|>"})
if not ids:
    print("note: the prompt is empty; starting from <|endoftext|> (an unconditional sample)",
          file=sys.stderr)
    ids = [EOT]
if len(ids) > model.config.block_size:
    print(f"warning: the prompt is {len(ids)} tokens, longer than the model's "
          f"block_size={model.config.block_size}; keeping its last {model.config.block_size}",
          file=sys.stderr)
    ids = ids[-model.config.block_size:]
x = torch.tensor([ids], device=device).expand(num_samples, -1)  # all samples in one batch
with autocast:
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
for row in y.tolist():
    # an unconditional sample: only what the model wrote
    print(enc.decode(row[1:] if ids == [EOT] else row))
    print("---------------")
