"""
Measure models: the exact loss over a whole text (not a sample of it), LAMBADA, and training curves.

    python evaluate.py                                 # out/'s model on Brown's validation split
    python evaluate.py --models out-brown-backpack out-brown-gpt2      # several, side by side
    python evaluate.py --models out --file=notes.txt                   # any UTF-8 text file
    python evaluate.py --models stanfordnlp/backpack-gpt2 --task=lambada  # LAMBADA, fetched once
    python evaluate.py --curves out-brown-backpack out-brown-gpt2      # losses vs tokens: SVG

The loss: every token after the first is scored exactly once. A window of block_size tokens moves
stride tokens at a time (half a window by default), and each window scores only the tokens the one
before it did not, so each is predicted from at least block_size - stride tokens before it (near
the start, from all of them). Printed per model: tokens scored, mean loss (nats), perplexity, and
bits per byte (the loss in bits over the scored tokens' UTF-8 bytes, an <|endoftext|> counting
none): tokenizer-independent.

LAMBADA (Paperno et al. 2016; OpenAI's detokenized test set of 5,153 passages, the one GPT-2 was
scored on): the last word of a passage, given the rest. Accuracy is greedy over the whole last
word, as the GPT-2 paper and lm-evaluation-harness's lambada_openai score it: a passage counts when
the model's most likely token is the right one at every token of the word (its first token
predicted from the passage, each next one from the passage and the word's true tokens before it);
no stop-word filter (GPT-2's best figure added one). Perplexity is exp of the mean, over passages,
of the last word's total loss in nats (lambada_openai's).
"""

import json
import math
import os
import pickle
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from files import atomic_write, cache_path, download, read_json_lines, read_text, read_tokens
from pretrained import load, read_checkpoint
from settings import configure, device_and_autocast, one_line_errors
from tokenizer import EOT, GPT2_VOCAB, get_tokenizer

LAMBADA_URL = "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl"

# -- settings (python evaluate.py --help): --task=loss (the default), --task=lambada, or --curves --
settings = dict(
    models=["out"],  # anything pretrained.load takes, one or several
    curves=[],  # train.py runs whose losses to draw, instead
    dataset="brown",  # the text: a prepared split, data_dir/dataset/split.bin ...
    split="val",
    data_dir="data",
    file="",  # ... or a text file
    stride=0,  # windows move stride tokens (0: half a window)
    batch_size=4,  # windows at once
    task="loss",  # or --task=lambada, with ...
    lambada="",  # ... this file (default: downloaded once into the cache)
    svg="curves.svg",  # where --curves draws
    device="cuda" if torch.cuda.is_available() else "cpu",
    dtype="auto",
)
allowed = dict(split=("train", "val"), stride="[0, inf)", batch_size="[1, inf)",
               task=("loss", "lambada"), svg="[1, inf)",
               dtype=("auto", "float32", "bfloat16", "float16"))


@torch.no_grad()
def sliding_loss(model, tokens, stride=0, batch_size=4, autocast=None, name=""):
    """(total loss in nats, the number of tokens scored, a 0/1 array marking them): every token of
    tokens (a list of ids) after the first, scored once, from windows of block_size tokens moving
    stride (0: half) at a time. With a name, prints its progress."""
    T = model.config.block_size
    stride = stride or max(1, T // 2)
    if not 0 < stride <= T:
        raise ValueError(f"--stride must be in [1, block_size={T}], got {stride}")
    device, n = model.wte.weight.device, len(tokens)
    # windows (start, end, skip): inputs tokens[start:end], targets tokens[start+1:end+1], of which
    # the first skip were scored by the window before
    windows, done = [], 0
    for start in range(0, max(1, n - 1), stride):
        end = min(start + T, n - 1)
        windows.append((start, end, done - start))
        done = end
        if end == n - 1:
            break
    full = [w for w in windows if w[1] - w[0] == T]  # windows of T tokens run batch_size at a time,
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[w] for w in windows if w[1] - w[0] < T]  # a shorter last one alone
    total, count, scored, t0 = 0.0, 0, np.zeros(n, dtype=np.int8), time.time()
    for b, batch in enumerate(batches, 1):
        x = torch.tensor([tokens[s:e] for s, e, _ in batch], device=device)
        y = torch.tensor([[-1] * skip + tokens[s + 1 + skip:e + 1] for s, e, skip in batch],
                         device=device)
        with autocast or torch.autocast("cpu", enabled=False):
            # the padding ids never occur: not in the softmax
            logits = model(x)[0][..., :GPT2_VOCAB].float()
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1,
                                 reduction="sum").item()
        count += int((y >= 0).sum())
        for s, e, skip in batch:
            scored[s + 1 + skip:e + 1] += 1
        progress(name, b, len(batches), "batches", t0)
    return total, count, scored


def text_bytes(enc, tokens):
    """The UTF-8 bytes of the tokens scored, all but the first; an <|endoftext|> between
    documents counts none."""
    return sum(len(enc.decode_single_token_bytes(t)) for t in tokens[1:] if t != EOT)


def read_lambada(path):
    """The passages of a LAMBADA file: JSON lines with a "text" field, or plain lines of text, a
    passage each. Lines end at newlines only: a JSON string may hold U+2028, which str.splitlines
    would split at."""
    passages = []
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # plain text, unless it was meant as JSON
            record = line if not line.lstrip().startswith(("{", "[")) else None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            record = record["text"]
        elif record is not line:  # an array, string, number, broken JSON, object without "text"
            raise ValueError(f'{path}, line {n}: expected a JSON object with a "text" field, '
                             'or a line of plain text')
        passages.append(record)
    if not passages:
        raise ValueError(f"{path} holds no passages")
    return passages


@torch.no_grad()
def lambada(model, enc, passages, autocast=None, name=""):
    """(greedy last-word accuracy, perplexity, the number of passages) of a model on LAMBADA
    passages. With a name, prints its progress."""
    device, T = model.wte.weight.device, model.config.block_size
    hits, nats, t0 = 0, [], time.time()
    for n, passage in enumerate(passages, 1):
        # the last word follows any whitespace (a tab too), as the reference scorers split
        m = re.fullmatch(r"(.*\S)\s+(\S+)\s*", passage, re.S)
        context, word = (m[1], m[2]) if m else ("", "")
        if not context:
            raise ValueError("a LAMBADA passage needs words before its last word: "
                             f"{passage[:60]!r}")
        target = enc.encode(" " + word, disallowed_special=())
        if len(target) >= T:
            raise ValueError(f"the last word {word[:40]!r} is {len(target)} tokens, "
                             f"too long for block_size={T}")
        # the context kept within block_size
        ids = (enc.encode(context, disallowed_special=()) + target)[-T - 1:]
        x = torch.tensor([ids[:-1]], device=device)
        with autocast or torch.autocast("cpu", enabled=False):
            logits = model(x)[0][0, -len(target):, :GPT2_VOCAB].float()
        y = torch.tensor(target, device=device)
        hits += bool((logits.argmax(-1) == y).all())
        nats.append(F.cross_entropy(logits, y, reduction="sum").item())
        progress(name, n, len(passages), "passages", t0)
    return hits / len(passages), perplexity(sum(nats) / len(nats)), len(passages)


def perplexity(loss):
    """exp(loss), or inf for a loss beyond a float's range (an untrained or broken model):
    not an OverflowError."""
    return math.exp(loss) if loss < 709 else math.inf


def progress(name, done, total, unit, t0):
    """A line at every tenth of the work, so that a long evaluation shows it is moving."""
    if name and (done == total or done % max(1, total // 10) == 0):
        print(f"{name}: {done:,}/{total:,} {unit}, {time.time() - t0:.0f} s", flush=True)


def read_run(folder):
    """The losses of a train.py run folder against tokens seen:
    {"train": [(tokens, loss)], "val": [...]}. Where a resumed run logged a step again (from its
    last checkpoint on), the later record wins."""
    curves = {"train": {}, "val": {}}
    path = os.path.join(folder, "metrics.jsonl")
    for n, record in read_json_lines(path, "record (a cut-off line? delete it)"):
        for kind, key in (("train", "loss"), ("val", "val_loss")):
            if key not in record:
                continue
            step, loss = record.get("iter"), record[key]
            if type(step) is not int or step < 0:  # "10", None, True, 1.5: not what train.py writes
                raise ValueError(f'{path}, line {n}: "iter" is {step!r}, not a step number: '
                                 'not a train.py record')
            if type(loss) not in (int, float):  # true would be drawn as a loss of 1
                raise ValueError(f'{path}, line {n}: "{key}" is {loss!r}, not a number: '
                                 'not a train.py record')
            if math.isfinite(loss):  # a diverged run's nan is left out
                curves[kind][step] = loss
    try:
        ckpt = read_checkpoint(os.path.join(folder, "ckpt.pt"))
        tokens_per_step = ckpt["config"]["tokens_per_step"]  # steps -> tokens seen
    except (RuntimeError, KeyError, TypeError, pickle.UnpicklingError):
        raise ValueError(f"{folder}/ckpt.pt is not a train.py checkpoint: "
                         "--curves draws train.py runs") from None
    return {kind: [(step * tokens_per_step, loss) for step, loss in sorted(losses.items())]
            for kind, losses in curves.items()}


def curves_svg(runs, width=720, height=420):
    """An SVG of the training (thin) and validation (thick) losses of runs {name: read_run(folder)}
    against the tokens seen: one path per curve (a dot where a curve is a single point), written by
    hand. The loss axis spans the losses after the first tenth of the tokens: the steep start is cut
    off, not to flatten the rest."""
    series = [(name, kind, points) for name, curves in runs.items()
              for kind, points in curves.items() if points]
    if not series:
        raise ValueError("the runs' metrics.jsonl hold no losses")
    series = [(name, kind, thinned(points, width)) for name, kind, points in series]
    xs, ys = [x for *_, p in series for x, _ in p], [y for *_, p in series for _, y in p]
    x1 = max(xs)
    # a huge loss: off the chart
    late = [min(max(y, -1e6), 1e6) for *_, p in series for x, y in p if x >= x1 / 10]
    x0, y0, y1 = 0, math.floor(min(max(min(ys), -1e6), 1e6) * 2) / 2, math.ceil(max(late) * 2) / 2
    y1 = max(y1, y0 + 0.5)  # a constant loss still gets a range
    # room for the names, ~7 pixels a letter
    legend = min(width // 2, 7 * max(len(name) for name in runs) + 90)
    left, right, top, bottom = 60, width - legend, 20, height - 45

    def sx(x):
        return left + (x - x0) / max(x1 - x0, 1) * (right - left)

    def sy(y):  # a loss off the chart is clipped to just beyond the axis
        return bottom - (min(max(y, y0 - 1), y1 + 1) - y0) / (y1 - y0) * (bottom - top)

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd",
              "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    names = list(runs)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">'
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<clipPath id="plot"><rect x="{left}" y="{top}" width="{right - left}" '
           f'height="{bottom - top}"/></clipPath>',
           f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>']
    for k in range(5):  # ticks: tokens seen
        x = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{sx(x):.1f}" y="{bottom + 16}" text-anchor="middle">'
                   f'{x / 1e6:.3g}M</text>')
    # ... and loss, at a round step
    step = next((s for s in (0.25, 0.5, 1, 2, 5, 10) if (y1 - y0) / s <= 8), (y1 - y0) / 4)
    for k in range(int((y1 - y0) / step + 1e-9) + 1):
        y = y0 + k * step
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{right}" y2="{sy(y):.1f}" '
                   'stroke="#eee"/>')
    out.append(f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">'
               'tokens seen</text>')
    out.append(f'<text x="14" y="{(top + bottom) / 2}" '
               f'transform="rotate(-90 14 {(top + bottom) / 2})" '
               'text-anchor="middle">loss (nats)</text>')
    for n, (name, kind, points) in enumerate(series):
        color, thick = colors[names.index(name) % len(colors)], kind == "val"
        stroke = (f'stroke="{color}" stroke-width="{2.5 if thick else 1}" '
                  f'opacity="{1 if thick else 0.6}"')
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}"
                     for i, (x, y) in enumerate(points))
        out.append(f'<path class="curve" d="{d}" fill="none" {stroke} clip-path="url(#plot)">'
                   f'<title>{escape(name)} {kind}</title></path>')
        if len(points) == 1:  # a path of one point draws nothing
            out.append(f'<circle cx="{sx(points[0][0]):.1f}" cy="{sy(points[0][1]):.1f}" r="3" '
                       f'fill="{color}" clip-path="url(#plot)"/>')
        y = top + 18 * n
        out.append(f'<line x1="{right + 12}" y1="{y + 8}" x2="{right + 32}" y2="{y + 8}" {stroke}/>'
                   f'<text x="{right + 38}" y="{y + 12}">{escape(name)} {kind}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def thinned(points, width):
    """At most about 2 x width points of a curve, the first and the last kept: a picture shows no
    more, and a run of 300,000 logged steps is drawn in a moment."""
    stride = max(1, math.ceil(len(points) / (2 * width)))
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv):
    s, given = configure(settings, allowed, argv, __file__)
    mode = "--curves" if s["curves"] else f"--task={s['task']}"
    own = {"--curves": ("curves", "svg"),
           "--task=lambada": ("models", "task", "lambada", "device", "dtype"),
           "--task=loss": ("models", "task", "dataset", "split", "data_dir", "file", "stride",
                           "batch_size", "device", "dtype")}[mode]
    if stray := [key for key in given if key not in own]:  # it would be silently ignored
        raise ValueError(f"--{stray[0]} does not go with {mode}")
    if s["file"] and (stray := [key for key in ("dataset", "split", "data_dir") if key in given]):
        raise ValueError(f"--{stray[0]} does not go with --file: the text is the file")
    if s["curves"]:
        # named as given
        runs = {os.path.normpath(folder): read_run(folder) for folder in s["curves"]}
        svg = curves_svg(runs)
        with atomic_write(s["svg"]) as f:  # a failure or a kill leaves the old file as it was
            f.write(svg.encode())
        return print(f"wrote {s['svg']}: the training and validation losses of {', '.join(runs)}")
    _, _, autocast = device_and_autocast(s["device"], s["dtype"])
    enc, sources = get_tokenizer(), s["models"]
    models = [load(source).to(s["device"]) for source in sources]
    if s["task"] == "loss" and s["stride"] > min(model.config.block_size for model in models):
        raise ValueError(f"--stride must be at most the models' block_size "
                         f"({min(model.config.block_size for model in models)}), got {s['stride']}")
    if s["task"] == "lambada":
        path = s["lambada"] or download(LAMBADA_URL, cache_path("lambada_test.jsonl"))
        passages = read_lambada(path)
        rows = [lambada(model, enc, passages, autocast, source)
                for model, source in zip(models, sources)]
        table = [("passages", [f"{n:,}" for *_, n in rows]),
                 ("last-word accuracy", [f"{a:.2%}" for a, *_ in rows]),
                 ("last-word perplexity", [f"{p:.2f}" for _, p, _ in rows])]
        what = f"LAMBADA, {path}"
    else:
        if s["file"]:
            tokens, what = enc.encode(read_text(s["file"]), disallowed_special=()), s["file"]
        else:
            what = os.path.join(s["data_dir"], s["dataset"], f"{s['split']}.bin")
            if not os.path.exists(what):
                raise FileNotFoundError(f"{what} not found; prepare it "
                                        f"(python prepare.py --dataset={s['dataset']}) "
                                        "or give --file=TEXT")
            tokens = read_tokens(what).astype(np.int64).tolist()
        if len(tokens) < 2:
            raise ValueError(f"{what} holds {len(tokens)} tokens: nothing to score")
        rows, scored_bytes = [], text_bytes(enc, tokens)
        if not scored_bytes:
            raise ValueError(f"{what} holds no text to score, only <|endoftext|> tokens")
        for model, source in zip(models, sources):
            total, count, _ = sliding_loss(model, tokens, s["stride"], s["batch_size"],
                                           autocast, source)
            rows.append((count, total / count, total / math.log(2) / scored_bytes))
        table = [("tokens scored", [f"{c:,}" for c, *_ in rows]),
                 ("loss (nats)", [f"{l:.4f}" for _, l, _ in rows]),
                 ("perplexity", [f"{perplexity(l):.2f}" for _, l, _ in rows]),
                 ("bits per byte", [f"{b:.4f}" for *_, b in rows])]
    width = max(14, *map(len, sources))
    print(f"{what}:")
    print(f"{'':22}" + "".join(f"{source:>{width + 2}}" for source in sources))
    for name, values in table:
        print(f"{name:22}" + "".join(f"{v:>{width + 2}}" for v in values))


if __name__ == "__main__":
    one_line_errors()
    main(sys.argv[1:])
