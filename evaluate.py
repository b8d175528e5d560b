"""
Measure models: the exact loss over a whole text (not a sample of it), LAMBADA, and training curves.

    python evaluate.py                                           # the model in out/ on the Brown validation split
    python evaluate.py --models out out-gpt2                      # several models, side by side
    python evaluate.py --models out --file=notes.txt              # any UTF-8 text file
    python evaluate.py --models stanfordnlp/backpack-gpt2 --task=lambada      # LAMBADA, downloaded once
    python evaluate.py --curves out out-gpt2 --svg=curves.svg     # the runs' losses against tokens seen, as an SVG

The loss: every token after the first is scored exactly once, with as much context as the model allows. A window
of block_size tokens moves stride tokens at a time (half a window by default), and each window scores only the
tokens the one before it did not, so each of them is predicted from at least block_size - stride tokens before it.
Printed per model: tokens scored, mean loss (nats), perplexity, and bits per byte (the loss in bits over the
scored tokens' UTF-8 bytes, an <|endoftext|> counting none): tokenizer-independent.

LAMBADA (Paperno et al. 2016; OpenAI's detokenized test set of 5,153 passages, the one GPT-2 was scored on): the
last word of a passage, given the rest. Accuracy is greedy, as the GPT-2 paper scores it: a passage counts when
the model's most likely token is the right one at every token of the last word (its first token predicted from
the passage, each next one from the passage and the word's true tokens before it). Perplexity is exp of the
mean, over passages, of the last word's total loss in nats (lm-evaluation-harness's lambada_openai).
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from backpack import GPT2_VOCAB
from common import cache_path, configure, device_and_autocast, download, one_line_errors, read_text
from pretrained import load
from tokenizer import EOT, get_tokenizer

LAMBADA_URL = "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl"


@torch.no_grad()
def sliding_loss(model, tokens, stride=0, batch_size=4, autocast=None):
    """(total loss in nats, the number of tokens scored, a 0/1 array marking them): every token of tokens (a list of
    ids) after the first, scored once, from windows of block_size tokens moving stride (0: half) at a time."""
    T = model.config.block_size
    stride = stride or max(1, T // 2)
    if not 0 < stride <= T:
        raise ValueError(f"--stride must be in [1, block_size={T}], got {stride}")
    device, n = model.wte.weight.device, len(tokens)
    windows, done = [], 0  # (start, end, scored from): inputs tokens[start:end], targets tokens[start+1:end+1]
    for start in range(0, max(1, n - 1), stride):
        end = min(start + T, n - 1)
        windows.append((start, end, done - start))
        done = end
        if end == n - 1:
            break
    total, count, scored = 0.0, 0, np.zeros(n, dtype=np.int8)
    full = [w for w in windows if w[1] - w[0] == T]  # all but perhaps the last: batched
    for group in [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + [[w] for w in windows
                                                                                       if w[1] - w[0] != T]:
        x = torch.tensor([tokens[s:e] for s, e, _ in group], device=device)
        y = torch.tensor([[-1] * skip + tokens[s + 1 + skip:e + 1] for s, e, skip in group], device=device)
        with autocast or torch.autocast("cpu", enabled=False):
            logits, _ = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum").item()
        count += int((y >= 0).sum())
        for s, e, skip in group:
            scored[s + 1 + skip:e + 1] += 1
    return total, count, scored


def text_bytes(enc, tokens, scored):
    """The UTF-8 bytes of the scored tokens; an <|endoftext|> between documents counts none."""
    return sum(len(enc.decode_single_token_bytes(t)) for t, s in zip(tokens, scored) if s and t != EOT)


def read_lambada(path):
    """The passages of a LAMBADA file: JSON lines with a "text" field, or plain lines of text."""
    passages = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if line.lstrip().startswith("{"):
            try:
                passages.append(json.loads(line)["text"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}, line {n}: expected a JSON object with a \"text\" field") from None
        elif line.strip():
            passages.append(line)
    if not passages:
        raise ValueError(f"{path} holds no passages")
    return passages


@torch.no_grad()
def lambada(model, enc, passages, autocast=None):
    """(greedy last-word accuracy, perplexity, the number of passages) of a model on LAMBADA passages."""
    device, T = model.wte.weight.device, model.config.block_size
    hits, nats = 0, []
    for passage in passages:
        context, _, word = passage.rstrip().rpartition(" ")
        if not context or not word:
            raise ValueError(f"a LAMBADA passage needs words before its last word: {passage[:60]!r}")
        target = enc.encode(" " + word, disallowed_special=())
        ids = (enc.encode(context, disallowed_special=()) + target)[-T - 1:]  # the context kept within block_size
        x = torch.tensor([ids[:-1]], device=device)
        with autocast or torch.autocast("cpu", enabled=False):
            logits = model(x)[0][0, -len(target):, :GPT2_VOCAB].float()
        y = torch.tensor(target, device=device)
        hits += bool((logits.argmax(-1) == y).all())
        nats.append(F.cross_entropy(logits, y, reduction="sum").item())
    return hits / len(passages), math.exp(sum(nats) / len(nats)), len(passages)


def curves_svg(runs, width=720, height=420):
    """An SVG of the training (thin) and validation (thick) losses of runs {name: metrics.jsonl records} against the
    tokens seen: one path per curve, written by hand."""
    series = []  # (name, kind, [(tokens, loss)])
    for name, (records, tokens_per_step) in runs.items():
        for kind, key in (("train", "loss"), ("val", "val_loss")):
            points = [(r["iter"] * tokens_per_step, r[key]) for r in records if key in r and math.isfinite(r[key])]
            if points:
                series.append((name, kind, points))
    if not series:
        raise ValueError("the runs' metrics.jsonl hold no losses")
    xs, ys = [x for *_, p in series for x, _ in p], [y for *_, p in series for _, y in p]
    x0, x1, y0, y1 = 0, max(xs), math.floor(min(ys) * 2) / 2, math.ceil(max(ys) * 2) / 2
    left, right, top, bottom = 60, width - 170, 20, height - 45
    sx = lambda x: left + (x - x0) / max(x1 - x0, 1) * (right - left)  # noqa: E731
    sy = lambda y: bottom - (y - y0) / max(y1 - y0, 1e-9) * (bottom - top)  # noqa: E731
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    names = list(runs)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>']
    for k in range(5):  # ticks: tokens seen, and loss
        x, y = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{sx(x):.1f}" y="{bottom + 16}" text-anchor="middle">{x / 1e6:.3g}M</text>')
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{right}" y2="{sy(y):.1f}" stroke="#eee"/>')
    out.append(f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">tokens seen</text>')
    out.append(f'<text x="14" y="{(top + bottom) / 2}" transform="rotate(-90 14 {(top + bottom) / 2})" '
               'text-anchor="middle">loss (nats)</text>')
    for n, (name, kind, points) in enumerate(series):
        color, thick = colors[names.index(name) % len(colors)], kind == "val"
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
        opacity = 1 if thick else 0.6
        out.append(f'<path class="curve" d="{d}" fill="none" stroke="{color}" stroke-width="{2.5 if thick else 1}" '
                   f'opacity="{opacity}"><title>{escape(name)} {kind}</title></path>')
        y = top + 18 * n
        out.append(f'<line x1="{right + 12}" y1="{y + 8}" x2="{right + 32}" y2="{y + 8}" stroke="{color}" '
                   f'stroke-width="{2.5 if thick else 1}"/><text x="{right + 38}" y="{y + 12}">{escape(name)} '
                   f'{kind}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def read_run(folder):
    """(metrics.jsonl records, tokens_per_step) of a train.py run folder."""
    with open(os.path.join(folder, "metrics.jsonl")) as f:  # an OSError names the file
        records = [json.loads(line) for line in f if line.strip()]
    ckpt = torch.load(os.path.join(folder, "ckpt.pt"), map_location="cpu", weights_only=True, mmap=True)
    return records, ckpt["config"]["tokens_per_step"]


def main(argv):
    s = dict(models=[], curves=[],  # anything pretrained.load takes; runs whose losses to draw
             dataset="brown", split="val", data_dir="data", file="",  # the text: a prepared split, or a file
             stride=0, batch_size=4,  # windows move stride tokens (0: half a window); batch_size windows at once
             task="loss", lambada="",  # or --task=lambada, with this file (default: downloaded once into the cache)
             svg="curves.svg", device="cuda" if torch.cuda.is_available() else "cpu", dtype="auto")
    given = configure(s, argv, __doc__, dict(split=("train", "val"), stride="[0, inf)", batch_size="[1, inf)",
                                       task=("loss", "lambada"), svg="[1, inf)"))
    if s["curves"] and s["models"]:
        raise ValueError("give --models or --curves, not both")
    others = ("dataset", "split", "file", "stride") if s["task"] == "lambada" else ("lambada",)
    if stray := [key for key in others if key in given]:  # it would be silently ignored
        raise ValueError(f"--{stray[0]} does not go with --task={s['task']}")
    if s["curves"]:
        runs = {os.path.basename(os.path.normpath(folder)): read_run(folder) for folder in s["curves"]}
        with open(s["svg"], "w") as f:
            f.write(curves_svg(runs))
        return print(f"wrote {s['svg']}: the training and validation losses of {', '.join(runs)}")
    _, _, autocast = device_and_autocast(s["device"], s["dtype"])
    enc, sources = get_tokenizer(), s["models"] or ["out"]
    models = [load(source).to(s["device"]) for source in sources]
    if s["task"] == "lambada":
        path = s["lambada"] or download(LAMBADA_URL, cache_path("lambada_test.jsonl"))
        passages = read_lambada(path)
        rows = [lambada(model, enc, passages, autocast) for model in models]
        table = [("passages", [f"{n:,}" for *_, n in rows]), ("last-word accuracy", [f"{a:.2%}" for a, *_ in rows]),
                 ("last-word perplexity", [f"{p:.2f}" for _, p, _ in rows])]
        what = f"LAMBADA, {path}"
    else:
        if s["file"]:
            tokens, what = enc.encode(read_text(s["file"]), disallowed_special=()), s["file"]
        else:
            what = os.path.join(s["data_dir"], s["dataset"], f"{s['split']}.bin")
            if not os.path.exists(what):
                raise FileNotFoundError(f"{what} not found; prepare it (python prepare.py --dataset={s['dataset']}) "
                                        "or give --file=TEXT")
            tokens = np.fromfile(what, dtype=np.uint16).astype(np.int64).tolist()
        if len(tokens) < 2:
            raise ValueError(f"{what} holds {len(tokens)} tokens: nothing to score")
        rows = []
        for model in models:
            total, count, scored = sliding_loss(model, tokens, s["stride"], s["batch_size"], autocast)
            rows.append((count, total / count, total / math.log(2) / max(1, text_bytes(enc, tokens, scored))))
        table = [("tokens scored", [f"{c:,}" for c, *_ in rows]), ("loss (nats)", [f"{l:.4f}" for _, l, _ in rows]),
                 ("perplexity", [f"{math.exp(l):.2f}" for _, l, _ in rows]),
                 ("bits per byte", [f"{b:.4f}" for *_, b in rows])]
    width = max(14, *map(len, sources))
    print(f"{what}:")
    print(f"{'':22}" + "".join(f"{source:>{width + 2}}" for source in sources))
    for name, values in table:
        print(f"{name:22}" + "".join(f"{v:>{width + 2}}" for v in values))


if __name__ == "__main__":
    one_line_errors()
    main(sys.argv[1:])
