"""
Look inside a Backpack. Everything here rests on one identity of the model (backpack.py):

    logit(i, w) = sum_j sum_l alpha[l, i, j] * (E C(x_j)_l)[w]

so E C(x)_l, a sense's "vocabulary scores", says what sense l of word x adds to every prediction.

    python senses.py --word science                        # each sense's top and bottom words
    python senses.py --context "The nurse said that" --target " she"   # which (word, sense) pairs drive it
    python senses.py --similarity simlex.txt               # word similarity: Spearman rho per sense
    python senses.py --bias                                # he/she bias before and after removing sense 10
    python senses.py --health                              # have the senses specialised, or collapsed?

The model is the train.py run in out/ unless --init_from names another (anything pretrained.load takes, such
as stanfordnlp/backpack-gpt2). The paper's edits of senses, which sample.py applies, are in interventions.py.
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

from files import atomic_write, read_text, read_tokens
from interventions import BIAS_PROMPTS, gender_bias, is_number
from pretrained import load
from settings import configure, device_and_autocast, one_line_errors
from tokenizer import GPT2_VOCAB, get_tokenizer, pieces, single_token, word_ids

# -- settings (python senses.py --help): one of --word, --context, --similarity, --bias and --health ------
settings = dict(
    init_from="resume",  # the model: 'resume' (the train.py run in out_dir), or anything pretrained.load takes
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
    html="",  # with --context or --word: write a page to look at into this file, instead of a table
    health=False,  # --health: have the senses specialised, or collapsed? Measured on ...
    data="data/brown/val.bin",  # ... this prepared text
)
allowed = dict(init_from="[1, inf)", out_dir="[1, inf)", top="[1, inf)", data="[1, inf)", subword="[0, inf)",
               sense="[0, inf)", factor="(-inf, inf)")


# -- words and tokens ---------------------------------------------------------------------------------------
def show(enc, token_id):
    """A token for a table: its text without the leading space, control characters escaped."""
    raw = enc.decode_single_token_bytes(token_id)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a piece of a multi-byte character: show its bytes
        text = repr(raw)[2:-1]
    shown = text[1:] if text.startswith(" ") and len(text) > 1 else text
    return repr(shown)[1:-1] if not shown.strip() or not shown.isprintable() else shown


def decimals(values):
    """Decimals that show numbers of this size: 2 for logits of the order of 1 and above, more below."""
    biggest = max((abs(v) for v in values), default=0.0)
    return 2 if biggest >= 1 or biggest == 0 else min(8, 2 - math.floor(math.log10(biggest)))


# -- what a sense says: E C(x)_l over the vocabulary ----------------------------------------------------------
@torch.no_grad()
def sense_vocab_scores(model, token_id):
    """(k, 50257): the raw logit contributions E C(x)_l of each sense of one token (the padding ids dropped)."""
    token_id = word_token(model, token_id)
    senses = model.senses(torch.tensor([[token_id]], device=model.wte.weight.device))[0, :, 0]  # (k, d)
    return senses @ model.wte.weight[:GPT2_VOCAB].T


def sense_table(model, enc, token_id, top=5):
    """Per sense: ([(word, score)] of its `top` highest vocabulary scores, [...] of its `top` lowest)."""
    top, rows = min(operator.index(top), GPT2_VOCAB), []
    for s in sense_vocab_scores(model, token_id).float().cpu():
        hi, lo = torch.topk(s, top), torch.topk(s, top, largest=False)
        rows.append(([(show(enc, i), v) for v, i in zip(hi.values.tolist(), hi.indices.tolist())],
                     [(show(enc, i), v) for v, i in zip(lo.values.tolist(), lo.indices.tolist())]))
    return rows


def word_token(model, token_id, what="token id"):
    """token_id as an int that is a word of the model's vocabulary: not a padding row (GPT-2's 50257 and up)."""
    token_id, words = operator.index(token_id), min(model.config.vocab_size, GPT2_VOCAB)
    if not 0 <= token_id < words:  # -1 would read the last padding row
        raise ValueError(f"{what} {token_id} is no word: the vocabulary's words are 0..{words - 1}")
    return token_id


# -- what drives a prediction: (context word, sense) contributions --------------------------------------------
@torch.no_grad()
def decompose(model, idx):
    """What the predictions on a text idx (1, T) are made of: the senses C(x_j)_l (k, T, d), the sense weights
    alpha (k, T, T), and the model's own logits (T, V)."""
    return model.senses(idx)[0], model.sense_weights(idx)[0], model(idx)[0][0]


@torch.no_grad()
def contributions(model, idx, target, position=-1, parts=None):
    """(k, T) tensor of alpha[l, i, j] * (E C(x_j)_l)[target] at position i, and the model's logit there. idx is
    (1, T); the contributions sum exactly (up to float rounding) to logit(i, target). parts: decompose(model, idx),
    if it is at hand."""
    if idx.dim() != 2 or idx.size(0) != 1:  # a batch's other rows would be silently left out
        raise ValueError(f"contributions: idx must be one text, of shape (1, T), not {tuple(idx.shape)}")
    T, target, position = idx.size(1), word_token(model, target, "target"), operator.index(position)
    i = position + T if position < 0 else position
    if not 0 <= i < T:
        raise ValueError(f"position {position} is outside the context's {T} tokens")
    senses, alpha, logits = parts if parts is not None else decompose(model, idx)  # (k, T, d), (k, T, T), (T, V)
    contrib = alpha[:, i, :] * (senses @ model.wte.weight[target])  # (E C(x_j)_l)[target]: (k, T)
    return contrib, logits[i, target].item()


# -- word similarity (the paper's section 5.2) ----------------------------------------------------------------
def rankdata(x):
    """Ranks 1..n of x, ties getting the average of the ranks they span (as scipy.stats.rankdata)."""
    _, where, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the highest rank of each distinct value; its lowest is last - count + 1
    return ((last - counts + 1 + last) / 2)[where]


def spearman(x, y):
    """Spearman's rho: the Pearson correlation of the (tie-averaged) ranks. nan if either is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    if np.isnan(x).any() or np.isnan(y).any():  # a nan would get a rank as if it were a number
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom else float("nan")


def read_similarity(path):
    """[(word1, word2, score)] from a word1<TAB>word2<TAB>score file, and the number of other non-blank lines
    skipped (headers, comments). Columns after the third are ignored."""
    pairs, skipped = [], 0
    for line in read_text(path).splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) >= 3 and fields[0] and fields[1] and is_number(fields[2]):
            pairs.append((fields[0], fields[1], float(fields[2])))
        else:
            skipped += bool(line.strip())
    return pairs, skipped


@torch.no_grad()
def word_senses(model, enc, words):
    """{word: (k, d) sense vectors}, a word of several subwords getting their average; and {word: its ids}."""
    ids = {w: word_ids(enc, w) for w in words}
    unique = sorted({i for v in ids.values() for i in v})
    senses = model.senses(torch.tensor([unique], device=model.wte.weight.device))[0].transpose(0, 1)  # (n, k, d)
    table = dict(zip(unique, senses.float().cpu()))
    return {w: torch.stack([table[i] for i in v]).mean(0) for w, v in ids.items()}, ids


def similarity_eval(model, enc, pairs):
    """Spearman rho of sim_l(a, b) = cos(C(a)_l, C(b)_l) against the gold scores, for every sense l, and of
    sim_min = the min over l. Returns ({l: rho, "min": rho}, the number of words split into subwords)."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 word1<TAB>word2<TAB>score pairs, got {len(pairs)}")
    vectors, ids = word_senses(model, enc, {w for a, b, _ in pairs for w in (a, b)})
    a, b = (torch.stack([vectors[p[n]] for p in pairs]) for n in (0, 1))  # (n, k, d)
    sims = torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()  # (n, k)
    gold = [p[2] for p in pairs]
    result = {l: spearman(sims[:, l], gold) for l in range(sims.shape[1])}
    result["min"] = spearman(sims.min(axis=1), gold)
    return result, sum(len(v) > 1 for v in ids.values())


# -- sense health: have the senses specialised, or collapsed? ---------------------------------------------------
@torch.no_grad()
def sense_health(model, tokens, words=100, windows=32):
    """How distinct and how used a model's senses are, over a text (token ids): for its `words` most frequent
    tokens, the mean cosine similarity between a word's k senses (1: all the same) and the entropy of each
    sense's vocabulary distribution softmax(E C(x)_l) (ln V = 10.8 nats: flat); and over `windows` windows of the
    text, each sense's share of the output o_i = sum_l sum_j alpha[l, i, j] C(x_j)_l, by norm (each sense's
    alpha rows sum to 1 whatever it does, so alpha's own mass is 1/k per sense by construction).
    Returns (mean cosine, [entropy per sense], [share per sense])."""
    device, k, T = model.wte.weight.device, model.config.num_senses, model.config.block_size
    if len(tokens) < T:
        raise ValueError(f"sense_health: the text is {len(tokens)} tokens, less than a window of block_size={T}")
    ids = torch.tensor([t for t, _ in Counter(tokens).most_common(words)], device=device)
    senses = torch.nn.functional.normalize(model.senses(ids[None])[0].transpose(0, 1).float(), dim=-1)  # (n, k, d)
    cosines = senses @ senses.transpose(1, 2)  # (n, k, k)
    cosine = ((cosines.sum((1, 2)) - k) / (k * (k - 1))).mean().item() if k > 1 else 1.0
    entropy = torch.zeros(k, device=device)
    for chunk in ids.split(10):  # (k, 10, V) scores at a time: all 100 words of a big model take gigabytes
        logp = torch.log_softmax(model.senses(chunk[None])[0].float() @ model.wte.weight[:GPT2_VOCAB].float().T, -1)
        entropy += -(logp.exp() * logp).sum(-1).sum(1) / len(ids)  # (k,): the mean over the words
    norms = torch.zeros(k, device=device)
    for start in health_windows(len(tokens), T, windows):
        idx = torch.tensor([tokens[start:start + T]], device=device)
        parts = model.sense_weights(idx)[0] @ model.senses(idx)[0]  # (k, T, d): sense l's part of every o_i
        norms += parts.norm(dim=-1).mean(-1)
    return cosine, entropy.tolist(), (norms / norms.sum()).tolist()


def health_windows(n_tokens, T, windows):
    """Where sense_health's windows of T tokens start: at most `windows` of them, spread over the text."""
    return list(range(0, max(1, n_tokens - T), max(1, (n_tokens - T) // windows)))[:windows]


# -- a page to look at: senses.py --context TEXT --html FILE -------------------------------------------------
PAGE_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "senses.html")
PAGE_MARK = b"<!-- The page of `python senses.py"  # the first line of every page: what --html may replace


def base64_floats(array, dtype):
    """A float array as base64 of little-endian float32s or float16s ("<f4", "<f2"): the page decodes them."""
    return base64.b64encode(np.asarray(array, dtype=dtype).tobytes()).decode()


@torch.no_grad()
def page_data(model, enc, text, about, top=10, special=True):
    """The numbers senses.py's page shows for a text: per position, the top next tokens; for each of them and the
    actual next token, the exact contributions of each context word (contributions(), as --context prints them)
    and the model's logit; the sense weights and the words' vocabulary scores (float16: for the hover breakdowns
    and the maps); and the sense table of each distinct word (sense_table(), as --word prints it). special: whether
    "<|endoftext|>" in text is the end-of-text token (a context) or plain text (a word, as --word reads it)."""
    ids = enc.encode(text, allowed_special={"<|endoftext|>"} if special else set(), disallowed_special=())
    if top < 1:
        raise ValueError(f"page_data: top must be at least 1, got {top}")
    if not 0 < len(ids) <= model.config.block_size:
        raise ValueError(f"the text is {len(ids)} tokens; the page takes 1 to block_size={model.config.block_size}")
    idx = torch.tensor([ids], device=model.wte.weight.device)
    parts = decompose(model, idx)
    senses, alpha, logits = parts
    probs = torch.softmax(logits[:, :GPT2_VOCAB].float(), dim=-1)
    best = probs.topk(min(top, GPT2_VOCAB), dim=-1).indices.tolist()
    T, k = len(ids), model.config.num_senses
    nexts = [ids[i + 1] if i + 1 < T else None for i in range(T)]
    distinct = list(dict.fromkeys(ids))  # in order of first occurrence
    rank = [distinct.index(t) for t in ids]
    candidates = [list(dict.fromkeys(best[i] + ([nexts[i]] if nexts[i] is not None else []))) for i in range(T)]
    totals, page_logits = [], []  # per position and candidate: each word's share, and the logit they sum to
    for i in range(T):
        for w in candidates[i]:
            contrib, logit = contributions(model, idx, w, i, parts)
            totals.append(contrib.sum(0)[:i + 1].cpu())
            page_logits.append(logit)
    # (E C(x)_l)[w] for every candidate w and the distinct words x before its last position as a candidate
    last = {w: i for i in range(T) for w in candidates[i]}
    first = [ids.index(x) for x in distinct]
    E = model.wte.weight
    blocks, offsets, at = [], {}, 0
    for w in sorted(last):
        n = sum(f <= last[w] for f in first)
        block = (senses[:, first[:n], :] @ E[w]).T  # (n, k)
        offsets[w], at = at, at + block.numel()
        blocks.append(block.flatten())
    tables = [[[[[word, round(v, 2)] for word, v in words] for words in row] for row in sense_table(model, enc, x, 10)]
              for x in distinct]  # as --word prints them
    return {"about": about, "text": text, "tokens": [enc.decode([t]) for t in ids], "ids": ids, "k": k, "rank": rank,
            "next": nexts, "candidates": candidates, "vocab": {w: enc.decode([w]) for c in candidates for w in c},
            "probs": [[probs[i, w].item() for w in candidates[i]] for i in range(T)],
            "totals": base64_floats(torch.cat(totals), "<f4"), "logits": page_logits,
            "alpha": base64_floats(torch.cat([alpha[l, i, :i + 1] for l in range(k) for i in range(T)]).cpu(), "<f2"),
            "scores": base64_floats(torch.cat(blocks).cpu(), "<f2"), "score_offset": offsets, "tables": tables}


def write_page(data, path):
    """The page: assets/senses.html with the data in it (JSON, gzipped and base64-encoded: 1 to 1.5 MB for 128
    tokens rather than 2 to 3), one file that opens offline."""
    packed = base64.b64encode(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0)).decode()
    with open(PAGE_TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    if '"/*DATA*/"' not in template:  # every page would silently show another text's data
        raise ValueError(f"{PAGE_TEMPLATE} has no \"/*DATA*/\" placeholder: restore it (git checkout {PAGE_TEMPLATE})")
    page = template.replace('"/*DATA*/"', f'"{packed}"')
    with atomic_write(path) as f:
        f.write(page.encode("utf-8"))


def check_page_path(path):
    """Refuse an --html path where writing the page would lose something or fail only after the work: empty, a
    folder, the page template, or an existing file that is no page of senses.py."""
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
                raise ValueError(f"--html {path} exists and is no page of senses.py: give a new file name, or "
                                 "delete the file first")


# -- the command line: one function per mode ------------------------------------------------------------------
def print_word(model, enc, word, subword=0, top=5):
    ids = word_ids(enc, word)
    if not 0 <= subword < len(ids):
        raise ValueError(f"--subword {subword} is out of range: {word.strip()!r} has {len(ids)} "
                         f"subword{'s' * (len(ids) > 1)}")
    tid = ids[subword]
    head = f"{' ' + word.strip()!r} = token {tid}" if len(ids) == 1 else (
        f"{' ' + word.strip()!r} is {len(ids)} subwords ({pieces(enc, ids)}); showing subword {subword}, "
        f"{enc.decode([tid])!r} = token {tid} (--subword to choose)")
    print(head + f"; E C(x)_l scores over the vocabulary, top and bottom {top} per sense")
    rows = sense_table(model, enc, tid, min(top, GPT2_VOCAB))
    n = decimals(v for hi, lo in rows for _, v in hi + lo)
    for l, (hi, lo) in enumerate(rows):
        print(f"sense {l:2d}  top     " + "  ".join(f"{w} {v:+.{n}f}" for w, v in hi))
        print("          bottom  " + "  ".join(f"{w} {v:+.{n}f}" for w, v in lo))


def print_context(model, enc, context, target="", position=-1, top=5):
    if not context:
        raise ValueError("--context is empty")
    ids = enc.encode(context, allowed_special={"<|endoftext|>"})
    if len(ids) > model.config.block_size:
        raise ValueError(f"--context is {len(ids)} tokens, more than the model's block_size {model.config.block_size}")
    if not -len(ids) <= position < len(ids):  # before anything is printed
        raise ValueError(f"--position {position} is outside the context's {len(ids)} tokens")
    idx = torch.tensor([ids], device=model.wte.weight.device)
    if not target:
        with torch.no_grad():
            target_id = int(model(idx)[0][0, position, :GPT2_VOCAB].argmax())
        print(f"(no --target: explaining the model's most likely token, {enc.decode([target_id])!r})")
    else:
        target_id = single_token(enc, target, "--target")
        if not target.startswith(" ") and len(enc.encode(" " + target)) == 1:
            print(f"(note: --target {target!r} is taken verbatim; the word inside text is {' ' + target!r}, "
                  "a different token)")
    contrib, logit = contributions(model, idx, target_id, position)
    k, T = contrib.shape
    i = position % T
    flat, words = contrib.flatten(), idx[0].tolist()
    n = decimals([logit] + flat.tolist()) + 2
    print(f"logit of {enc.decode([target_id])!r} after {enc.decode(words[:i + 1])!r} (position {i}): "
          f"the {min(top, flat.numel())} largest of {k} x {i + 1} (sense, context word) contributions")
    print(f"{'pos':>4}  {'word':<16} {'sense':>5}  {'contribution':>12}")
    for m in torch.argsort(flat.abs(), descending=True)[:top].tolist():
        l, j = divmod(m, T)
        print(f"{j:4d}  {show(enc, words[j])[:16]:<16} {l:5d}  {flat[m].item():+12.{n}f}")
    per_word = contrib.sum(0)
    print("by context word: " + "  ".join(f"{show(enc, words[j])} {per_word[j].item():+.{n}f}" for j in range(i + 1)))
    total = contrib.sum().item()
    print(f"check: the contributions sum to {total:+.{n}f}; the model's logit is {logit:+.{n}f} "
          f"(difference {abs(total - logit):.1e})")


def print_similarity(model, enc, path):
    pairs, skipped = read_similarity(path)
    result, n_split = similarity_eval(model, enc, pairs)
    print(f"{path}: {len(pairs)} word pairs" + (f" ({skipped} other lines skipped)" if skipped else "")
          + f"; {n_split} words are several subwords (their senses averaged)")
    print("Spearman rho of cos(C(a)_l, C(b)_l) against the gold scores, per sense l, and of sim_min (min over l):")
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
    print(f"  each profession's {change}: {after:.3f} ({100 * (before - after) / before:+.0f}% reduction)")


def print_health(model, path, words=100):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --health measures over a prepared split (python prepare.py)")
    if not path.endswith(".bin"):  # text read as token ids would give numbers all the same
        raise ValueError(f"{path}: --health wants a prepared split, a .bin file of python prepare.py")
    tokens = read_tokens(path, more_than=model.config.block_size,
                         need=f"a window of block_size={model.config.block_size}").astype(np.int64).tolist()
    cosine, entropy, share = sense_health(model, tokens, words)
    k, n_words = model.config.num_senses, min(words, len(set(tokens)))
    n_windows = len(health_windows(len(tokens), model.config.block_size, 32))
    print(f"sense health over {path} ({len(tokens):,} tokens)")
    print(f"  mean cosine similarity between a token's senses, over the {n_words} most frequent tokens: {cosine:.3f}"
          + (f" (the text has only {n_words} distinct tokens)" if n_words < words else ""))
    print("  (0: unrelated, as at initialization; near 1: collapsed, all alike)")
    print("  sense  vocabulary entropy, nats      share of the output o")
    print(f"         (same tokens; flat: {math.log(GPT2_VOCAB):.2f})      ({n_windows} window{'s' * (n_windows > 1)}; "
          f"even: {1 / k:.1%})")
    for l in range(k):
        print(f"  {l:5d}  {entropy[l]:10.2f}{share[l]:27.1%}")


def main(argv):
    s, given = configure(settings, allowed, argv, __file__)
    modes = [m for m in ("word", "context", "similarity", "bias", "health") if m in given and given[m] is not False]
    if len(modes) != 1:
        raise ValueError("give one of --word WORD, --context TEXT, --similarity FILE, --bias or --health "
                         "(python senses.py --help)")
    own = dict(word=("subword", "top", "html"), context=("target", "position", "top", "html"), similarity=(),
               bias=("sense", "factor"), health=("data",))
    if stray := [k for k in ("subword", "top", "target", "position", "sense", "factor", "html", "data")
                 if k in given and k not in own[modes[0]]]:
        raise ValueError(f"--{stray[0]} is not a setting of --{modes[0]}")  # it would be silently ignored
    if "html" in given:
        if stray := [k for k in ("subword", "top", "target", "position") if k in given]:
            raise ValueError(f"--{stray[0]} is not a setting of --html: the page shows every subword, position "
                             "and a top 10")
        check_page_path(s["html"])  # before the work, not after it
        if modes == ["context"] and not s["context"]:
            raise ValueError("--context is empty")
        if modes == ["word"]:
            word_ids(get_tokenizer(), s["word"])  # an empty word: said before the model is loaded
    device_and_autocast(s["device"], "float32")  # only to check --device: the analyses run in float32
    source = s["out_dir"] if s["init_from"] == "resume" else s["init_from"]
    enc, model = get_tokenizer(), load(source).to(s["device"])
    if not model.config.num_senses:
        raise ValueError(f"the model in {source} has no senses (num_senses=0: a matched Transformer)")
    if s["html"]:  # a page of the context, or of the word alone
        c = model.config
        about = (f"{source}: a Backpack of {sum(p.numel() for p in model.parameters()):,} parameters ({c.n_layer} "
                 f"layers, width {c.n_embd}, {c.num_senses} senses)")
        text, special = (s["context"], True) if modes == ["context"] else (" " + s["word"].strip(), False)
        write_page(page_data(model, enc, text, about, special=special), s["html"])
        print(f"wrote {s['html']} ({os.path.getsize(s['html']) / 1e3:,.0f} kB): open it in a browser")
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
