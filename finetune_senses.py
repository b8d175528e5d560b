"""
Edit a Backpack from a few canonical examples: sense finetuning (Hewitt, Chen, Manning, Liang: Model
Editing with Canonical Examples, 2024, arXiv 2402.06155).

Give a handful of examples of what the model should do: "The capital of France is" -> " Paris", or
"My nurse said that" -> " he" and " she" equally likely. Sense finetuning picks the few sense
vectors those predictions lean on and trains an additive change to each of them, nothing else. A
sense does not depend on context, so the change holds wherever its word occurs, in sentences the
examples never showed; a KL term on background text keeps the other predictions where they were.

    python finetune_senses.py  # the quickstart model: he/she, from 10 professions
    python finetune_senses.py config/edit_capitals.py  # a single-suffix task: 10 capitals
    python finetune_senses.py --method=full  # the baseline: every weight, the same loss and budget
    python finetune_senses.py --init_from=stanfordnlp/backpack-gpt2 --examples=F --eval=F \\
        --loss=good

The algorithm, a function per step, in this order:
  1. read_examples (files.py), read_background: the examples (JSON lines), background text
  2. suffix_nll, example_losses: the losses of --loss (good, bad, balance, good-v-bad)
  3. sense_scores, background_alpha, choose_senses: which (word, sense) pairs to train
  4. SenseDeltas, kl_to_original, train_epoch: a zero delta per chosen sense, and the KL term
  5. evaluate, last_within: success and background loss after every epoch; the last epoch within
     the budget --max_degradation is kept
  6. save: the deltas, as sense_edits, in a checkpoint any script loads
The defaults, and where they come from: docs/finetune.md.
"""

import copy
import math
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from files import read_examples, read_text, read_tokens
from interventions import add_to_senses
from pretrained import load, read_checkpoint, write_checkpoint
from settings import configure, device_and_autocast, one_line_errors
from tokenizer import get_tokenizer

PAIR_LOSSES, SINGLE_LOSSES = ("balance", "good-v-bad"), ("good", "bad")
# the authors' success thresholds (their configs for country_capital, stereoset, pronoun_gender_bias
# and verb_conjugation): p(suffix) >= 0.2; p(suffix) <= 0.001; max(p1/p2, p2/p1) <= 1.5; p1/p2 >= 16
THRESHOLDS = {"good": 0.2, "bad": 0.001, "balance": 1.5, "good-v-bad": 16.0}
BUDGETS = (1e-3, 1e-4, 1e-5)  # the authors' degradation budgets, each reported
BATCH = 8  # sequences per forward pass when nothing is trained: memory, not results, depends on it


# -- settings (python finetune_senses.py --help) ---------------------------------------------------
settings = dict(
    init_from="out",  # the model to edit: a train.py run, or anything pretrained.load takes
    examples="assets/edits/gender_train.jsonl",  # the canonical examples, JSON lines
    eval="assets/edits/gender_eval.jsonl",  # the evaluation examples, of the same form
    background="data/brown/val.bin",  # a prepared split (.bin) or a text file
    background_windows=1000,  # at most so many windows of block_size tokens, for selection and KL
    measure_windows=32,  # other windows, for the background loss after every epoch
    loss="balance",  # good | bad (a suffix), balance | good-v-bad (two suffixes)
    method="senses",  # senses: only the chosen senses change; full: every weight
    senses_per_example=8,  # the top pairs per example that are trained (the authors: 5 to 11)
    background_weight=1000.0,  # lambda, the background's weight in the selection
    kl_weight=0.5,  # the KL term's weight (the authors: 0.1 to 1)
    max_degradation=1e-4,  # the budget: the kept epoch's background loss rose at most this much
    threshold=0.0,  # success on --eval; 0: the authors' (see THRESHOLDS)
    epochs=10,
    learning_rate=0.0,  # 0: senses 1e-2, full 1e-4; decayed by a cosine
    batch_size=1,  # canonical examples per step, and background windows for its KL term
    out_dir="out-finetune",
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=1337,
)
allowed = dict(
    init_from="[1, inf)", examples="[1, inf)", eval="[1, inf)", background="[1, inf)",
    background_windows="[1, inf)", measure_windows="[1, inf)", loss=SINGLE_LOSSES + PAIR_LOSSES,
    method=("senses", "full"), senses_per_example="[1, inf)", background_weight="[0, inf)",
    kl_weight="[0, inf)", max_degradation="[0, inf)", threshold="[0, inf)", epochs="[0, inf)",
    learning_rate="[0, inf)", batch_size="[1, inf)", out_dir="[1, inf)", seed="[0, 1e18]")


# -- 1. data ---------------------------------------------------------------------------------------
def read_background(path, enc, length, count):
    """(n, length + 1) token ids: count windows (fewer if the text is short), spread evenly, none
    overlapping another, over a prepared split (.bin, python prepare.py) or a UTF-8 text file."""
    if path.endswith(".bin"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found; prepare it (python prepare.py) or give "
                                    "--background=FILE")
        tokens = read_tokens(path)  # memory-mapped: OpenWebText's train.bin is 18 GB
    else:
        tokens = np.array(enc.encode(read_text(path), allowed_special={"<|endoftext|>"}))
    n = min(count, len(tokens) // (length + 1))
    if n < 2:  # one window for the KL term, one to measure the loss on
        raise ValueError(f"{path} holds {len(tokens)} tokens; the background needs at least "
                         f"{2 * (length + 1)} (two windows of block_size + 1)")
    spacing = (len(tokens) - length - 1) // (n - 1)  # at least length + 1: no overlaps
    windows = np.stack([tokens[i * spacing:i * spacing + length + 1] for i in range(n)])
    return torch.from_numpy(windows.astype(np.int64))


def padded(sequences, device):
    """(B, T) ids of token lists of different lengths, padded on the right (with their last token):
    under causal attention, padding never reaches the positions before it."""
    T = max(map(len, sequences))
    return torch.tensor([s + s[-1:] * (T - len(s)) for s in sequences], device=device)


# -- 2. the losses ---------------------------------------------------------------------------------
def logits_of(model, idx, deltas=None):
    """The model's logits, with the trained deltas added to its senses (forward's senses=)."""
    if deltas is None:
        return model(idx)[0]
    return model(idx, senses=deltas(idx, model.senses(idx)))[0]


def suffix_nll(model, examples, deltas=None):
    """(n, 1 or 2): each example's summed negative log-likelihood (nats) of its suffix, or of each
    of its two, after its prefix. All the sequences prefix + suffix go through one forward pass."""
    sequences = [(prefix + suffix, len(prefix))
                 for prefix, suffixes in examples for suffix in suffixes]
    idx = padded([ids for ids, _ in sequences], model.wte.weight.device)
    targets = torch.full_like(idx, -1)  # -1: not scored
    for row, (ids, start) in enumerate(sequences):  # position i predicts token i + 1
        targets[row, start - 1:len(ids) - 1] = idx[row, start:len(ids)]
    logits = logits_of(model, idx, deltas).float()
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1,
                          reduction="none")
    return nll.view(idx.shape).sum(1).view(len(examples), -1)


def example_losses(nll, loss):
    """(n,) each example's loss from suffix_nll: good NLL (make the suffix likely); bad -NLL
    (unlikely); balance |NLL1 - NLL2| (the two equally likely); good-v-bad NLL1 - NLL2 (p1 > p2)."""
    if loss in SINGLE_LOSSES:
        return nll[:, 0] if loss == "good" else -nll[:, 0]
    difference = nll[:, 0] - nll[:, 1]
    return difference.abs() if loss == "balance" else difference


# -- 3. which senses -------------------------------------------------------------------------------
@torch.no_grad()
def sense_scores(model, examples, loss):
    """Per example {(token id, sense): score}: the sense weights alpha[l, i, j] that the positions i
    predicting the suffix give sense l of each word j, summed over those positions (for a pair, the
    second sum added for balance, subtracted for good-v-bad). One forward pass per example."""
    signs = {"good": (1,), "bad": (1,), "balance": (1, 1), "good-v-bad": (1, -1)}[loss]
    scores = []
    for prefix, suffixes in examples:
        sequences = [prefix + suffix for suffix in suffixes]
        alpha = model.sense_weights(padded(sequences, model.wte.weight.device))  # (1 or 2, k, T, T)
        table = {}
        for ids, a, sign in zip(sequences, alpha, signs):
            received = a[:, len(prefix) - 1:len(ids) - 1, :].sum(1).cpu()  # (k, T): suffix's rows
            for j, token in enumerate(ids[:-1]):  # the last token is only predicted
                for l, value in enumerate(received[:, j].tolist()):
                    table[token, l] = table.get((token, l), 0.0) + sign * value
        scores.append(table)
    return scores


@torch.no_grad()
def background_alpha(model, windows):
    """(vocab_size, k): the sense weights all the positions of a background window (B, T) give each
    (word, sense), summed, and averaged over windows: how much any text leans on a sense (the
    authors' background score, over windows of 500 tokens of OpenWebText)."""
    total = torch.zeros(model.config.vocab_size, model.config.num_senses)
    for chunk in windows.split(BATCH):
        alpha = model.sense_weights(chunk.to(model.wte.weight.device))  # (B, k, T, T)
        received = alpha.sum(2).transpose(1, 2).flatten(0, 1).cpu()  # (B*T, k): j's, from all i
        total.index_add_(0, chunk.flatten(), received)
    return total / len(windows)


def choose_senses(scores, background, background_weight, per_example):
    """{(token id, sense): score - background_weight x background} of the pairs to train: the union
    over examples of each one's top per_example pairs whose own score is positive. A sense that all
    text leans on (a large background) is a poor place for an edit: it changes every prediction."""
    chosen = {}
    for table in scores:
        ranked = sorted(((score - background_weight * background[pair].item(), pair)
                         for pair, score in table.items() if score > 0), reverse=True)
        for value, pair in ranked[:per_example]:
            chosen[pair] = max(value, chosen.get(pair, -math.inf))
    return chosen


# -- 4. training -----------------------------------------------------------------------------------
class SenseDeltas(torch.nn.Module):
    """A trainable vector per chosen (word, sense), zero at first, added wherever its word is."""

    def __init__(self, pairs, config):
        super().__init__()
        self.pairs, self.words = sorted(pairs), sorted({token for token, _ in pairs})
        self.k = config.num_senses
        row = torch.zeros(config.vocab_size, dtype=torch.long)  # a word's row of table(); 0: none
        row[self.words] = torch.arange(1, len(self.words) + 1)
        self.register_buffer("row", row)
        where = torch.tensor([[row[t], l] for t, l in self.pairs]).view(-1, 2)  # (row, sense)
        self.register_buffer("where", where)
        self.delta = torch.nn.Parameter(torch.zeros(len(self.pairs), config.n_embd))

    def table(self):
        """(1 + words, k, d): each edited word's deltas, zero where a sense was not chosen."""
        table = self.delta.new_zeros(len(self.words) + 1, self.k, self.delta.size(1))
        return table.index_put((self.where[:, 0], self.where[:, 1]), self.delta)

    def forward(self, idx, senses):
        """The senses (B, k, T, d) of the ids idx (B, T), with the deltas added."""
        return senses + self.table()[self.row[idx]].transpose(1, 2)


def kl_to_original(model, windows, deltas=None, original=None):
    """KL(original || edited) of the next-token distributions on background windows (B, T), summed
    over positions and vocabulary, averaged over windows (the authors' "batchmean"). The original is
    the model without its deltas, or a frozen copy (full finetuning)."""
    if deltas is None:
        with torch.no_grad():
            target = original(windows)[0]
        edited = model(windows)[0]
    else:  # the sense weights, which the deltas leave alone, computed once for both
        with torch.no_grad():
            alpha, senses = model.sense_weights(windows), model.senses(windows)
            target = model(windows, senses=senses, sense_weights=alpha)[0]
        edited = model(windows, senses=deltas(windows, senses), sense_weights=alpha)[0]
    log_p, log_q = F.log_softmax(target.float(), dim=-1), F.log_softmax(edited.float(), dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum") / windows.size(0)


def train_epoch(model, deltas, original, optimizer, examples, windows, loss, kl_weight, batch_size,
                generator):
    """One pass over the examples in a random order, batch_size a step, each adding kl_weight x the
    KL term on batch_size background windows drawn at random. Returns the mean edit loss and KL."""
    device, order = model.wte.weight.device, torch.randperm(len(examples), generator=generator)
    edit_total = kl_total = 0.0
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start:start + batch_size].tolist()]
        edit = example_losses(suffix_nll(model, batch, deltas), loss).mean()
        drawn = torch.randint(len(windows), (batch_size,), generator=generator)
        kl = kl_to_original(model, windows[drawn, :-1].to(device), deltas, original)
        if not math.isfinite(edit.item()):
            raise ValueError(f"the edit loss is {edit.item()}: training diverged; "
                             "lower --learning_rate")
        optimizer.zero_grad(set_to_none=True)
        (edit + kl_weight * kl).backward()
        optimizer.step()
        edit_total += edit.item() * len(batch)
        kl_total += kl.item() * len(batch)
    return edit_total / len(examples), kl_total / len(examples)


# -- 5. evaluation ---------------------------------------------------------------------------------
def loss_limit(loss, threshold):
    """The largest loss of an example that succeeds: good NLL <= -ln p; bad -NLL <= ln p; balance
    |NLL1 - NLL2| <= ln ratio; good-v-bad NLL1 - NLL2 <= -ln ratio (p1/p2 >= ratio)."""
    return math.log(threshold) if loss in ("bad", "balance") else -math.log(threshold)


@torch.no_grad()
def evaluate(model, deltas, examples, loss, limit, windows):
    """{success: the share of the examples whose loss is at most limit, eval_loss: their mean loss,
    background_loss: the mean next-token loss over the background windows (B, T + 1)}."""
    losses = torch.cat([example_losses(suffix_nll(model, examples[i:i + BATCH], deltas), loss)
                        for i in range(0, len(examples), BATCH)])
    total = 0.0
    for chunk in windows.split(BATCH):
        chunk = chunk.to(model.wte.weight.device)
        logits = logits_of(model, chunk[:, :-1], deltas).float()
        total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(),
                                 reduction="sum").item()
    return dict(success=(losses <= limit).float().mean().item(), eval_loss=losses.mean().item(),
                background_loss=total / windows[:, 1:].numel())


def rise(history, epoch):
    """How much the background loss rose at that epoch, relative to the unedited model's."""
    return history[epoch]["background_loss"] / history[0]["background_loss"] - 1


def last_within(history, budget):
    """The last epoch whose background loss rose by at most budget: epoch 0 (unedited) at least."""
    return max(epoch for epoch in range(len(history)) if rise(history, epoch) <= budget)


# -- 6. the result: a model ------------------------------------------------------------------------
def save(model, out_dir, record):
    """out_dir/ckpt.pt as train.py writes one, with the edited senses (sense_edits) that every
    script reads as they are; and out_dir/finetune.json, what was done and measured. Atomically."""
    ckpt = {"model_args": asdict(model.config), "model": model.state_dict(),
            "sense_edits": dict(model.sense_edits), "finetune": record}
    write_checkpoint(out_dir, ckpt, finetune=record)


def check_out_dir(out_dir, source):
    """Refuse the folder of the model being edited, or one holding a ckpt.pt not written here."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out_dir={out_dir} is a file, not a folder")
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    if os.path.exists(source) and os.path.isdir(out_dir) and os.path.samefile(folder, out_dir):
        raise ValueError(f"--out_dir={out_dir} is the folder of --init_from: the edit would "
                         "replace the model it edits; choose another --out_dir")
    os.makedirs(out_dir, exist_ok=True)  # and writable: found now, not after the training
    try:
        open(os.path.join(out_dir, "ckpt.pt.tmp"), "wb").close()
    except OSError as e:
        raise OSError(e.errno, e.strerror, out_dir) from None
    os.remove(os.path.join(out_dir, "ckpt.pt.tmp"))
    path = os.path.join(out_dir, "ckpt.pt")
    try:
        ours = not os.path.exists(path) or "finetune" in read_checkpoint(path)
    except Exception:  # not a checkpoint at all: not ours either
        ours = False
    if not ours:  # a train.py run, say: not to be overwritten
        raise ValueError(f"{path} exists and is not an edited model of finetune_senses.py: "
                         "choose another --out_dir")


def main(argv):
    s, _ = configure(settings, allowed, argv, __file__)
    device_and_autocast(s["device"], "float32")  # only to check --device: all runs in float32
    loss, senses_method = s["loss"], s["method"] == "senses"
    threshold = s["threshold"] or THRESHOLDS[loss]
    if loss in SINGLE_LOSSES and threshold > 1 or loss in PAIR_LOSSES and threshold < 1:
        wants = "a probability in (0, 1]" if loss in SINGLE_LOSSES else "a ratio, at least 1"
        raise ValueError(f"--threshold={threshold:g} cannot be met: --loss={loss} wants {wants}")
    check_out_dir(s["out_dir"], s["init_from"])
    torch.manual_seed(s["seed"])
    enc, model = get_tokenizer(), load(s["init_from"]).to(s["device"])
    if senses_method and not model.config.num_senses:
        raise ValueError(f"{s['init_from']} has no senses (num_senses=0: a matched Transformer); "
                         "--method=full finetunes it")
    block_size = model.config.block_size
    examples, evals = (read_examples(s[key], enc, block_size) for key in ("examples", "eval"))
    for key, data in (("examples", examples), ("eval", evals)):
        if (len(data[0][1]) == 2) != (loss in PAIR_LOSSES):  # the file holds the other form
            held, fix = (("single suffixes", "--loss=good or --loss=bad") if loss in PAIR_LOSSES
                         else ("pairs (suffix1, suffix2)", "--loss=balance or --loss=good-v-bad"))
            raise ValueError(f"--{key}={s[key]} holds {held}, and --loss={loss} wants "
                             f"{'pairs' if loss in PAIR_LOSSES else 'single suffixes'}: use {fix}, "
                             "and --examples and --eval of one form "
                             "(config/edit_capitals.py sets all three for a single suffix)")
    # "is" + "Paris" reads "isParis": a suffix starting a word is written with its space, " Paris"
    if glued := sum(enc.decode(suffix[:1])[:1].isalnum()
                    and not enc.decode(prefix[-1:])[-1:].isspace()
                    for prefix, suffixes in examples + evals for suffix in suffixes):
        print(f'note: {glued} of the suffixes start with a letter or digit right after their '
              'prefix (the word after a word is written " Paris"): the model reads them glued on')
    windows = read_background(s["background"], enc, block_size,
                              s["background_windows"] + s["measure_windows"])
    # the windows to measure on: spread over the text, and never in the KL term
    measured = torch.zeros(len(windows), dtype=torch.bool)
    measured[torch.linspace(0, len(windows) - 1,
                            min(s["measure_windows"], len(windows) // 2)).round().long()] = 1
    measure, regularize = windows[measured], windows[~measured][:s["background_windows"]]
    print(f"{s['init_from']}: {plural(len(examples), 'canonical example')}, "
          f"{plural(len(evals), 'evaluation example')}; {s['background']}: {len(regularize)} "
          f"windows of {block_size} tokens for the selection and the KL term, {len(measure)} "
          "others to measure the background loss on")

    model.requires_grad_(not senses_method)  # sense finetuning trains the deltas alone
    deltas, original, chosen = None, None, {}
    if senses_method:
        t0 = time.time()
        scores = sense_scores(model, examples, loss)
        chosen = choose_senses(scores, background_alpha(model, regularize[:, :-1]),
                               s["background_weight"], s["senses_per_example"])
        why = (" (with --loss=good-v-bad, two one-token suffixes are predicted from the same "
               "position: every score is 0)" if loss == "good-v-bad" else "")
        if not chosen:
            raise ValueError(f"no (word, sense) has a positive score in any example: "
                             f"nothing to train{why}")
        deltas = SenseDeltas(chosen, model.config).to(model.wte.weight.device)
        print_chosen(enc, chosen, deltas.words, time.time() - t0, s)
        if unused := sum(not any(v > 0 for v in table.values()) for table in scores):
            print(f"note: {unused} of the {len(examples)} examples have no (word, sense) with a "
                  f"positive score, and add none{why}")
    else:
        original = copy.deepcopy(model).requires_grad_(False)  # the KL term's reference
    params = [deltas.delta] if senses_method else list(model.parameters())
    lr = s["learning_rate"] or (1e-2 if senses_method else 1e-4)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.995), weight_decay=0.0)  # = Adam
    limit = loss_limit(loss, threshold)

    h = dict(epoch=0, **evaluate(model, deltas, evals, loss, limit, measure))
    if not math.isfinite(h["background_loss"]):
        raise ValueError(f"{s['init_from']}'s loss on {s['background']} is "
                         f"{h['background_loss']}: it is no trained model")
    print(f"epoch  0: success {h['success']:6.1%} (threshold {threshold:g}), eval loss "
          f"{h['eval_loss']:.4f}, background loss {h['background_loss']:.4f}")
    history = [h]
    kept_epoch, kept = 0, None  # the last epoch within the budget: its deltas (a table) or weights
    generator = torch.Generator().manual_seed(s["seed"])
    for epoch in range(1, s["epochs"] + 1):
        t0 = time.time()
        for group in optimizer.param_groups:  # a cosine decay, a step per epoch (the authors')
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / s["epochs"]))
        edit, kl = train_epoch(model, deltas, original, optimizer, examples, regularize, loss,
                               s["kl_weight"], s["batch_size"], generator)
        h = dict(epoch=epoch, edit_loss=edit, kl=kl,
                 **evaluate(model, deltas, evals, loss, limit, measure))
        history.append(h)
        if last_within(history, s["max_degradation"]) == epoch:
            kept_epoch = epoch
            kept = deltas.table().detach() if senses_method else copy.deepcopy(model.state_dict())
        print(f"epoch {epoch:2d}: edit loss {edit:.4f}, kl {kl:.1e} | success {h['success']:6.1%}, "
              f"eval loss {h['eval_loss']:.4f}, background loss {h['background_loss']:.4f} "
              f"({rise(history, epoch):+.1e}) | {time.time() - t0:.1f} s", flush=True)

    print("the last epoch within each budget, a relative rise of the background loss (* is kept):")
    for budget in sorted({*BUDGETS, s["max_degradation"]}, reverse=True):
        h = history[last_within(history, budget)]
        print(f"  {budget:7.0e}{' *' if budget == s['max_degradation'] else '  '}  "
              f"epoch {h['epoch']:2d}: success {h['success']:6.1%} "
              f"(unedited {history[0]['success']:.1%}), eval loss {h['eval_loss']:.4f}, "
              f"background {rise(history, h['epoch']):+.1e}")
    if senses_method and kept_epoch:  # the kept deltas become persistent edits of the senses
        add_to_senses(model, deltas.words, kept[1:])  # row 0 is no word's; then deltas.words' rows
    elif not senses_method:
        model.load_state_dict(kept if kept_epoch else original.state_dict())
    senses = [dict(token=t, word=enc.decode([t]), sense=l, score=v)
              for (t, l), v in sorted(chosen.items(), key=lambda item: -item[1])]
    save(model, s["out_dir"],
         dict(settings=s, kept_epoch=kept_epoch, history=history, senses=senses))
    edited = (f" (senses of {plural(len(deltas.words), 'word')})"
              if senses_method and kept_epoch else "")
    print(f"saved the model of epoch {kept_epoch} to {s['out_dir']}/ckpt.pt{edited}; try: "
          f"python sample.py --out_dir={s['out_dir']}")
    return model


def plural(n, thing):
    return f"{n} {thing}{'s' * (n != 1)}"


def print_chosen(enc, chosen, words, seconds, s):
    """The chosen (word, sense) pairs, a line per word, the word with the best score first."""
    print(f"chose {plural(len(chosen), 'sense')} of {plural(len(words), 'word')} in "
          f"{seconds:.1f} s, the top {s['senses_per_example']} per example by alpha - "
          f"{s['background_weight']:g} x background alpha (word: sense score, ...):")
    best = {t: max(v for (w, _), v in chosen.items() if w == t) for t in words}
    for token in sorted(words, key=lambda t: -best[t]):
        row = sorted(((v, l) for (w, l), v in chosen.items() if w == token), reverse=True)
        print(f"  {enc.decode([token])!r:>14}: " + ", ".join(f"{l} {v:+.3f}" for v, l in row))


if __name__ == "__main__":
    one_line_errors()
    main(sys.argv[1:])
