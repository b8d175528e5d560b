"""
Look inside a Backpack. Everything here rests on one identity of the model (backpack.py):

    logit(i, w) = sum_j sum_l alpha[l, i, j] * (E C(x_j)_l)[w]

so E C(x)_l, a sense's "vocabulary scores", says what sense l of word x adds to every prediction.

    python senses.py --word science           # each sense's top and bottom words
    python senses.py --context "The nurse said that" --target " she"  # which word senses drive it
    python senses.py --similarity simlex.txt  # word similarity: Spearman rho per sense
    python senses.py --bias                   # he/she bias before and after removing sense 10
    python senses.py --health                 # have the senses specialised, or collapsed?

The model is the train.py run in out/ unless --init_from names another (anything pretrained.load
takes, such as stanfordnlp/backpack-gpt2). The paper's edits of senses are in interventions.py.
"""

import base64
import gzip
import json
import math
import operator
import os
import signal
import sys
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from files import atomic_write, read_similarity, read_text, read_tokens
from interventions import BIAS_PROMPTS, gender_bias
from pretrained import load
from settings import configure, device_and_autocast, one_line_errors
from tokenizer import GPT2_VOCAB, get_tokenizer, pieces, show, single_token, word_ids

# -- settings (python senses.py --help): one of --word, --context, --similarity, --bias, --health --
settings = dict(
    init_from="resume",  # 'resume' (the train.py run in out_dir), or anything pretrained.load takes
    out_dir="out",
    device="cuda" if torch.cuda.is_available() else "cpu",
    word="",  # --word: the sense table of a word ...
    subword=0,  # ... of this subword of it
    top=5,  # words per sense (--word), or (word, sense) pairs (--context)
    context="",  # --context: which (word, sense) pairs drive its prediction ...
    target="",  # ... of this token (default: the likeliest)
    position=-1,  # ... at this position (default: the last)
    similarity="",  # --similarity: a word1<TAB>word2<TAB>score file
    bias=False,  # --bias: the he/she bias before and after scaling ...
    sense=10,  # ... this sense of every profession word ...
    factor=0.0,  # ... by this factor
    html="",  # with --context or --word: write a page to look at into this file, not a table
    health=False,  # --health: have the senses specialised, or collapsed? Measured on ...
    data="data/brown/val.bin",  # ... this prepared text
)
allowed = dict(init_from="[1, inf)", out_dir="[1, inf)", top="[1, inf)", data="[1, inf)",
               subword="[0, inf)", sense="[0, inf)", factor="(-inf, inf)")


# -- what a sense says: E C(x)_l over the vocabulary -----------------------------------------------
@torch.no_grad()
def sense_vocab_scores(model, token_id):
    """(k, 50257): the raw logit contributions E C(x)_l of each sense of one token (no padding)."""
    idx = torch.tensor([[word_token(model, token_id)]], device=model.wte.weight.device)
    senses = model.senses(idx)[0, :, 0]  # (k, d)
    return senses @ model.wte.weight[:GPT2_VOCAB].T


def sense_table(model, enc, token_id, top=5):
    """Per sense: ([(word, score)] of its `top` highest vocabulary scores, [...] of its lowest)."""
    top, rows = min(operator.index(top), GPT2_VOCAB), []
    for s in sense_vocab_scores(model, token_id).float().cpu():
        hi, lo = torch.topk(s, top), torch.topk(s, top, largest=False)
        rows.append(([(show(enc, i), v) for v, i in zip(hi.values.tolist(), hi.indices.tolist())],
                     [(show(enc, i), v) for v, i in zip(lo.values.tolist(), lo.indices.tolist())]))
    return rows


def word_token(model, token_id, what="token id"):
    """token_id as an int that is one of the vocabulary's words: no padding row (50257 and up)."""
    token_id, words = operator.index(token_id), min(model.config.vocab_size, GPT2_VOCAB)
    if not 0 <= token_id < words:  # -1 would read the last padding row
        raise ValueError(f"{what} {token_id} is no word: the vocabulary's words are 0..{words - 1}")
    return token_id


# -- what drives a prediction: (context word, sense) contributions ---------------------------------
@torch.no_grad()
def decompose(model, idx):
    """What the predictions on a text idx (1, T) are made of: the senses C(x_j)_l (k, T, d), the
    sense weights alpha (k, T, T), and the model's own logits (T, V)."""
    return model.senses(idx)[0], model.sense_weights(idx)[0], model(idx)[0][0]


@torch.no_grad()
def contributions(model, idx, target, position=-1, parts=None):
    """(k, T) tensor of alpha[l, i, j] * (E C(x_j)_l)[target] at position i, and the model's logit
    there. idx is (1, T); the contributions sum exactly (up to float rounding) to logit(i, target).
    parts: decompose(model, idx), if it is at hand."""
    if idx.dim() != 2 or idx.size(0) != 1:  # a batch's other rows would be silently left out
        raise ValueError("contributions: idx must be one text, of shape (1, T), not "
                         f"{tuple(idx.shape)}")
    T, target = idx.size(1), word_token(model, target, "target")
    position = operator.index(position)
    i = position + T if position < 0 else position
    if not 0 <= i < T:
        raise ValueError(f"position {position} is outside the context's {T} tokens")
    # (k, T, d), (k, T, T), (T, V)
    senses, alpha, logits = parts if parts is not None else decompose(model, idx)
    contrib = alpha[:, i, :] * (senses @ model.wte.weight[target])  # (E C(x_j)_l)[target]: (k, T)
    return contrib, logits[i, target].item()


# -- word similarity (the paper's section 5.2) -----------------------------------------------------
def rankdata(x):
    """Ranks 1..n of x, ties getting the average of the ranks they span (as scipy's rankdata)."""
    _, where, counts = np.unique(np.asarray(x, float), return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # each distinct value's highest rank; its lowest is last - count + 1
    return ((last - counts + 1 + last) / 2)[where]


def spearman(x, y):
    """Spearman's rho: the Pearson correlation of tie-averaged ranks. nan if either is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    if np.isnan(x).any() or np.isnan(y).any():  # a nan would get a rank as if it were a number
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom else float("nan")


@torch.no_grad()
def similarity_eval(model, enc, pairs):
    """Spearman rho of sim_l(a, b) = cos(C(a)_l, C(b)_l) against the gold scores, for each sense l,
    and of sim_min = the min over l (a word's senses: its subwords' average). Returns
    ({l: rho, "min": rho}, the number of words split into subwords)."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 word1<TAB>word2<TAB>score pairs, got {len(pairs)}")
    ids = {w: word_ids(enc, w) for w in {w for a, b, _ in pairs for w in (a, b)}}
    unique = sorted({i for v in ids.values() for i in v})
    idx = torch.tensor([unique], device=model.wte.weight.device)
    table = dict(zip(unique, model.senses(idx)[0].transpose(0, 1).float().cpu()))  # id: (k, d)
    vectors = {w: torch.stack([table[i] for i in v]).mean(0) for w, v in ids.items()}
    a, b = (torch.stack([vectors[p[n]] for p in pairs]) for n in (0, 1))  # (n, k, d)
    sims = F.cosine_similarity(a, b, dim=-1).numpy()  # (n, k)
    gold = [p[2] for p in pairs]
    result = {l: spearman(sims[:, l], gold) for l in range(sims.shape[1])}
    result["min"] = spearman(sims.min(axis=1), gold)
    return result, sum(len(v) > 1 for v in ids.values())


# -- sense health: have the senses specialised, or collapsed? --------------------------------------
@torch.no_grad()
def sense_health(model, tokens, words=100, windows=32):
    """How distinct and how used a model's senses are, over a text (token ids): for its `words` most
    frequent tokens, the mean cosine similarity between a word's k senses (1: all the same) and the
    entropy of each sense's vocabulary distribution softmax(E C(x)_l) (ln V = 10.8 nats: flat); over
    `windows` windows of the text, each sense's share, by norm, of the output o_i = sum_l sum_j
    alpha[l, i, j] C(x_j)_l (alpha's own mass is 1/k per sense by construction: each sense's rows
    sum to 1). Returns (mean cosine, [entropy per sense], [share per sense])."""
    device, k, T = model.wte.weight.device, model.config.num_senses, model.config.block_size
    if len(tokens) < T:
        raise ValueError(f"sense_health: the text is {len(tokens)} tokens, less than a window of "
                         f"block_size={T}")
    ids = torch.tensor([t for t, _ in Counter(tokens).most_common(words)], device=device)
    senses = F.normalize(model.senses(ids[None])[0].transpose(0, 1).float(), dim=-1)  # (n, k, d)
    cosines = senses @ senses.transpose(1, 2)  # (n, k, k)
    cosine = ((cosines.sum((1, 2)) - k) / (k * (k - 1))).mean().item() if k > 1 else 1.0
    entropy, E = torch.zeros(k, device=device), model.wte.weight[:GPT2_VOCAB].float()
    for chunk in ids.split(10):  # (k, 10, V) at a time: 100 words of a big model take gigabytes
        logp = torch.log_softmax(model.senses(chunk[None])[0].float() @ E.T, -1)
        entropy += -(logp.exp() * logp).sum(-1).sum(1) / len(ids)  # (k,): the mean over the words
    norms = torch.zeros(k, device=device)
    for start in health_windows(len(tokens), T, windows):
        idx = torch.tensor([tokens[start:start + T]], device=device)
        parts = model.sense_weights(idx)[0] @ model.senses(idx)[0]  # (k, T, d): o_i, sense by sense
        norms += parts.norm(dim=-1).mean(-1)
    return cosine, entropy.tolist(), (norms / norms.sum()).tolist()


def health_windows(n_tokens, T, windows):
    """Where sense_health's windows of T tokens start: at most `windows`, spread over the text."""
    return list(range(0, max(1, n_tokens - T), max(1, (n_tokens - T) // windows)))[:windows]


# -- a page to look at: senses.py --context TEXT --html FILE ---------------------------------------
PAGE_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "senses.html")
PAGE_MARK = b"<!-- The page of `python senses.py"  # how every page begins: what --html may replace


def base64_floats(array, dtype):
    """An array as base64 of little-endian float32s or float16s ("<f4", "<f2"), for the page."""
    return base64.b64encode(np.asarray(array, dtype=dtype).tobytes()).decode()


@torch.no_grad()
def page_data(model, enc, text, about, top=10, special=True):
    """The numbers the page shows for a text: per position, the top next tokens; for each and the
    actual next token, each context word's exact share of its logit (contributions(), as --context
    prints them) and the logit; the sense weights and the words' vocabulary scores (float16: for
    the hover breakdowns and the maps); each distinct word's sense table (as --word prints it).
    special: "<|endoftext|>" is the end-of-text token (a context), else text (a word, as --word)."""
    eot = {"<|endoftext|>"} if special else set()
    ids = enc.encode(text, allowed_special=eot, disallowed_special=())
    T, k = len(ids), model.config.num_senses
    if top < 1:
        raise ValueError(f"page_data: top must be at least 1, got {top}")
    if not 0 < T <= model.config.block_size:
        raise ValueError(f"the text is {T} tokens; the page takes 1 to "
                         f"block_size={model.config.block_size}")
    idx = torch.tensor([ids], device=model.wte.weight.device)
    parts = decompose(model, idx)
    senses, alpha, logits = parts
    probs = torch.softmax(logits[:, :GPT2_VOCAB].float(), dim=-1)
    best = probs.topk(min(top, GPT2_VOCAB), dim=-1).indices.tolist()
    distinct = list(dict.fromkeys(ids))  # in order of first occurrence
    # per position: the likeliest next tokens, and the actual next one
    candidates = [list(dict.fromkeys(best[i] + ids[i + 1:i + 2])) for i in range(T)]
    totals, page_logits = [], []  # per (position, candidate): the words' shares, their logit
    for i in range(T):
        for w in candidates[i]:
            contrib, logit = contributions(model, idx, w, i, parts)
            totals.append(contrib.sum(0)[:i + 1].cpu())
            page_logits.append(logit)
    # (E C(x)_l)[w] for every candidate w and the distinct words x up to its last position as one
    last = {w: i for i in range(T) for w in candidates[i]}
    first = [ids.index(x) for x in distinct]
    blocks, offsets, at = [], {}, 0
    for w in sorted(last):
        n = sum(f <= last[w] for f in first)
        block = (senses[:, first[:n], :] @ model.wte.weight[w]).T  # (n, k)
        offsets[w], at = at, at + block.numel()
        blocks.append(block.flatten().cpu())
    # the sense tables, as --word prints them
    tables = [[[[[word, round(v, 2)] for word, v in words] for words in row]
               for row in sense_table(model, enc, x, 10)] for x in distinct]
    weights = torch.cat([alpha[l, i, :i + 1] for l in range(k) for i in range(T)]).cpu()  # causal
    return {"about": about, "text": text, "tokens": [enc.decode([t]) for t in ids], "ids": ids,
            "k": k, "rank": [distinct.index(t) for t in ids], "next": ids[1:] + [None],
            "candidates": candidates, "vocab": {w: enc.decode([w]) for c in candidates for w in c},
            "probs": [[probs[i, w].item() for w in candidates[i]] for i in range(T)],
            "totals": base64_floats(torch.cat(totals), "<f4"), "logits": page_logits,
            "alpha": base64_floats(weights, "<f2"),
            "scores": base64_floats(torch.cat(blocks), "<f2"), "score_offset": offsets,
            "tables": tables}


def write_page(data, path):
    """The page: assets/senses.html with the data in it (JSON, gzipped and base64-encoded: 1 to
    1.5 MB for 128 tokens rather than 2 to 3), one file that opens offline."""
    packed = gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0)
    template = read_text(PAGE_TEMPLATE)
    if '"/*DATA*/"' not in template:  # every page would silently show another text's data
        raise ValueError(f"{PAGE_TEMPLATE} has no \"/*DATA*/\" placeholder: restore it "
                         f"(git checkout {PAGE_TEMPLATE})")
    page = template.replace('"/*DATA*/"', f'"{base64.b64encode(packed).decode()}"')
    with atomic_write(path) as f:
        f.write(page.encode("utf-8"))


def check_page_path(path):
    """Refuse an --html path where writing the page would lose something or fail only after the
    work: empty, a folder, the page template, or an existing file that is no page of senses.py."""
    if not path:
        raise ValueError("--html is empty: give the page's file name, e.g. --html page.html")
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise ValueError(f"--html {path} names a folder: give a file name, e.g. --html "
                         f"{os.path.join(path, 'page.html')}")
    if os.path.exists(path):
        if os.path.exists(PAGE_TEMPLATE) and os.path.samefile(path, PAGE_TEMPLATE):
            raise ValueError(f"--html {path} is the page template: write the page elsewhere")
        with open(path, "rb") as f:
            if PAGE_MARK not in f.read(400):
                raise ValueError(f"--html {path} exists and is no page of senses.py: give a new "
                                 "file name, or delete the file first")


# -- the command line: one function per mode -------------------------------------------------------
def decimals(values):
    """Decimals that show numbers this size: 2 for logits of the order of 1 or more, more below."""
    biggest = max((abs(v) for v in values), default=0.0)
    return 2 if biggest >= 1 or biggest == 0 else min(8, 2 - math.floor(math.log10(biggest)))


def print_word(model, enc, word, subword=0, top=5):
    ids, quoted = word_ids(enc, word), repr(" " + word.strip())
    if not 0 <= subword < len(ids):
        raise ValueError(f"--subword {subword} is out of range: {word.strip()!r} has {len(ids)} "
                         f"subword{'s' * (len(ids) > 1)}")
    tid = ids[subword]
    head = f"{quoted} = token {tid}" if len(ids) == 1 else (
        f"{quoted} is {len(ids)} subwords ({pieces(enc, ids)}); showing subword {subword}, "
        f"{enc.decode([tid])!r} = token {tid} (--subword to choose)")
    print(head + f"; E C(x)_l scores over the vocabulary, top and bottom {top} per sense")
    rows = sense_table(model, enc, tid, top)
    n = decimals(v for hi, lo in rows for _, v in hi + lo)
    for l, (hi, lo) in enumerate(rows):
        print(f"sense {l:2d}  top     " + "  ".join(f"{w} {v:+.{n}f}" for w, v in hi))
        print("          bottom  " + "  ".join(f"{w} {v:+.{n}f}" for w, v in lo))


def print_context(model, enc, context, target="", position=-1, top=5):
    ids = enc.encode(context, allowed_special={"<|endoftext|>"})
    T = len(ids)
    if T > model.config.block_size:
        raise ValueError(f"--context is {T} tokens, more than the model's block_size "
                         f"{model.config.block_size}")
    if not -T <= position < T:  # before anything is printed
        raise ValueError(f"--position {position} is outside the context's {T} tokens")
    idx = torch.tensor([ids], device=model.wte.weight.device)
    if not target:
        with torch.no_grad():
            target_id = int(model(idx)[0][0, position, :GPT2_VOCAB].argmax())
        print("(no --target: explaining the model's most likely token, "
              f"{enc.decode([target_id])!r})")
    else:
        target_id = single_token(enc, target, "--target")
        if not target.startswith(" ") and len(enc.encode(" " + target)) == 1:
            print(f"(note: --target {target!r} is taken verbatim; the word inside text is "
                  f"{' ' + target!r}, a different token)")
    contrib, logit = contributions(model, idx, target_id, position)
    i, flat = position % T, contrib.flatten()
    n = decimals([logit] + flat.tolist()) + 2
    print(f"logit of {enc.decode([target_id])!r} after {enc.decode(ids[:i + 1])!r} (position {i}): "
          f"the {min(top, flat.numel())} largest of {len(contrib)} x {i + 1} (sense, context word) "
          "contributions")
    print(f"{'pos':>4}  {'word':<16} {'sense':>5}  {'contribution':>12}")
    for m in torch.argsort(flat.abs(), descending=True)[:top].tolist():
        l, j = divmod(m, T)
        print(f"{j:4d}  {show(enc, ids[j])[:16]:<16} {l:5d}  {flat[m].item():+12.{n}f}")
    per_word = contrib.sum(0)[:i + 1].tolist()
    print("by context word: "
          + "  ".join(f"{show(enc, t)} {v:+.{n}f}" for t, v in zip(ids, per_word)))
    total = contrib.sum().item()
    print(f"check: the contributions sum to {total:+.{n}f}; the model's logit is {logit:+.{n}f} "
          f"(difference {abs(total - logit):.1e})")


def print_similarity(model, enc, path):
    pairs, skipped = read_similarity(path)
    result, n_split = similarity_eval(model, enc, pairs)
    print(f"{path}: {len(pairs)} word pairs"
          + (f" ({skipped} other lines skipped)" if skipped else "")
          + f"; {n_split} words are several subwords (their senses averaged)")
    print("Spearman rho of cos(C(a)_l, C(b)_l) against the gold scores, per sense l, and of "
          "sim_min (min over l):")
    senses = [l for l in result if l != "min"]
    for start in range(0, len(senses), 8):
        print("  " + "  ".join(f"{l:2d}: {result[l]:+.3f}" for l in senses[start:start + 8]))
    best = max(senses, key=lambda l: -np.inf if math.isnan(result[l]) else result[l])
    print(f"  min: {result['min']:+.3f}    best sense: {best} ({result[best]:+.3f})")


def print_bias(model, enc, sense=10, factor=0.0):
    before, after, used, skipped = gender_bias(model, enc, sense, factor)
    change = f"sense {sense} x {factor:g}" if factor else f"sense {sense} removed"
    print(f"gender bias: mean over {len(used)} professions x {len(BIAS_PROMPTS)} prompts of "
          "max(p(he)/p(she), p(she)/p(he)); 1 is unbiased")
    if skipped:
        print(f"  (not single tokens, left out: {', '.join(skipped)})")
    print(f"  unmodified: {before:.3f}")
    print(f"  each profession's {change}: {after:.3f} "
          f"({100 * (before - after) / before:+.0f}% reduction)")


def print_health(model, path, words=100):
    T = model.config.block_size
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --health measures over a prepared split "
                                "(python prepare.py)")
    if not path.endswith(".bin"):  # text read as token ids would give numbers all the same
        raise ValueError(f"{path}: --health wants a prepared split, a .bin file of python "
                         "prepare.py")
    tokens = read_tokens(path, more_than=T, need=f"a window of block_size={T}").tolist()
    cosine, entropy, share = sense_health(model, tokens, words)
    k, n_words = model.config.num_senses, min(words, len(set(tokens)))
    n_windows = len(health_windows(len(tokens), T, 32))
    print(f"sense health over {path} ({len(tokens):,} tokens)")
    print(f"  mean cosine similarity between a token's senses, over the {n_words} most frequent "
          f"tokens: {cosine:.3f}"
          + (f" (the text has only {n_words} distinct tokens)" if n_words < words else ""))
    print("  (0: unrelated, as at initialization; near 1: collapsed, all alike)")
    print("  sense  vocabulary entropy, nats      share of the output o")
    print(f"         (same tokens; flat: {math.log(GPT2_VOCAB):.2f})      ({n_windows} "
          f"window{'s' * (n_windows > 1)}; even: {1 / k:.1%})")
    for l in range(k):
        print(f"  {l:5d}  {entropy[l]:10.2f}{share[l]:27.1%}")


def main(argv):
    s, given = configure(settings, allowed, argv, __file__)
    modes = [m for m in ("word", "context", "similarity", "bias", "health")
             if m in given and given[m] is not False]
    if len(modes) != 1:
        raise ValueError("give one of --word WORD, --context TEXT, --similarity FILE, --bias or "
                         "--health (python senses.py --help)")
    own = dict(word=("subword", "top", "html"), context=("target", "position", "top", "html"),
               similarity=(), bias=("sense", "factor"), health=("data",))
    of_modes = ("subword", "top", "target", "position", "sense", "factor", "html", "data")
    if stray := [k for k in of_modes if k in given and k not in own[modes[0]]]:
        raise ValueError(f"--{stray[0]} is not a setting of --{modes[0]}")  # else silently ignored
    if "html" in given:
        if stray := [k for k in ("subword", "top", "target", "position") if k in given]:
            raise ValueError(f"--{stray[0]} is not a setting of --html: the page shows every "
                             "subword, position and a top 10")
        check_page_path(s["html"])  # before the work, not after it
    if modes == ["context"] and not s["context"]:  # said before the model is loaded
        raise ValueError("--context is empty")
    if modes == ["word"]:
        word_ids(get_tokenizer(), s["word"])  # an empty word, likewise
    device_and_autocast(s["device"], "float32")  # only to check --device: the analyses use float32
    source = s["out_dir"] if s["init_from"] == "resume" else s["init_from"]
    enc, model = get_tokenizer(), load(source).to(s["device"])
    if not model.config.num_senses:
        raise ValueError(f"the model in {source} has no senses (num_senses=0: a matched "
                         "Transformer)")
    if s["html"]:  # a page of the context, or of the word alone
        c, n_params = model.config, sum(p.numel() for p in model.parameters())
        about = (f"{source}: a Backpack of {n_params:,} parameters ({c.n_layer} layers, width "
                 f"{c.n_embd}, {c.num_senses} senses)")
        text = s["context"] if modes == ["context"] else " " + s["word"].strip()  # as --word does
        write_page(page_data(model, enc, text, about, special=modes == ["context"]), s["html"])
        print(f"wrote {s['html']} ({os.path.getsize(s['html']) / 1e3:,.0f} kB): open it in a "
              "browser")
    elif modes == ["word"]:
        print_word(model, enc, s["word"], s["subword"], s["top"])
    elif modes == ["context"]:
        print_context(model, enc, s["context"], s["target"], s["position"], s["top"])
    elif modes == ["similarity"]:
        print_similarity(model, enc, s["similarity"])
    elif modes == ["health"]:
        print_health(model, s["data"])
    else:
        print_bias(model, enc, s["sense"], s["factor"])


if __name__ == "__main__":
    one_line_errors()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `python senses.py ... | head` ends quietly
    main(sys.argv[1:])
