"""Tests of evaluate.py: the exact loss of a text, LAMBADA scoring, and the curves' SVG. Tiny models
and files, CPU."""

import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
from backpack import Backpack, BackpackConfig
from conftest import REPO



@pytest.fixture(scope="module")
def enc():
    from tokenizer import get_tokenizer
    return get_tokenizer()


def tiny(block_size=16, num_senses=4, seed=0):
    torch.manual_seed(seed)
    config = BackpackConfig(block_size=block_size, n_layer=1, n_head=2, n_embd=16,
                            num_senses=num_senses)
    return Backpack(config).eval()


def test_the_loss_of_a_text_shorter_than_the_context_is_the_direct_computation():
    model, tokens = tiny(), torch.randint(0, 50257, (12,)).tolist()
    total, count, scored = evaluate.sliding_loss(model, tokens)
    # the padding ids are not in the softmax
    logits = model(torch.tensor([tokens[:-1]]))[0][..., :50257]
    direct = F.cross_entropy(logits[0], torch.tensor(tokens[1:]), reduction="sum").item()
    assert count == 11 and total == pytest.approx(direct, rel=1e-6)
    assert scored.tolist() == [0] + [1] * 11


@pytest.mark.parametrize("n,stride,batch_size", [(100, 0, 4), (101, 5, 3), (17, 16, 1), (40, 1, 8)])
def test_a_longer_text_scores_every_token_once_with_context(n, stride, batch_size):
    model, tokens = tiny(), torch.randint(0, 50257, (n,)).tolist()
    total, count, scored = evaluate.sliding_loss(model, tokens, stride, batch_size)
    # each token after the first, once
    assert count == n - 1 and scored.tolist() == [0] + [1] * (n - 1)
    # by hand: token t is predicted from the window that scores it, which holds at least
    # 16 - stride tokens before it
    stride, by_hand, done = stride or 8, 0.0, 0
    for start in range(0, n - 1, stride):
        end = min(start + 16, n - 1)
        logits = model(torch.tensor([tokens[start:end]]))[0][..., :50257]
        targets = torch.tensor(tokens[done + 1:end + 1])
        by_hand += F.cross_entropy(logits[0, done - start:], targets, reduction="sum").item()
        done = end
        if end == n - 1:
            break
    assert total == pytest.approx(by_hand, rel=1e-5)


def test_bits_per_byte_follow_from_the_loss_and_the_bytes(enc, tmp_path):
    text = "Caf\u00e9 au lait, twice.\nAnd once more: caf\u00e9!"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    torch.save({"model_args": asdict(tiny().config), "model": tiny().state_dict()},
               tmp_path / "ckpt.pt")
    p = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"),
                        "--models", str(tmp_path), f"--file={tmp_path}/t.txt", "--device=cpu"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = {line[:22].strip(): line[22:].strip() for line in p.stdout.splitlines()[-4:]}
    tokens = enc.encode(text)
    total, count, scored = evaluate.sliding_loss(tiny(), tokens)
    scored_bytes = len(text.encode("utf-8")) - len(enc.decode_single_token_bytes(tokens[0]))
    assert evaluate.text_bytes(enc, tokens) == scored_bytes
    assert rows["tokens scored"] == f"{len(tokens) - 1:,}"
    assert float(rows["loss (nats)"]) == pytest.approx(total / count, abs=1e-4)
    bits_per_byte = total / math.log(2) / scored_bytes
    assert float(rows["bits per byte"]) == pytest.approx(bits_per_byte, abs=1e-4)
    assert float(rows["perplexity"]) == pytest.approx(math.exp(total / count), rel=1e-3)


def test_lambada_scoring_by_hand(enc, tmp_path):
    model = tiny(block_size=64)
    passages = ["The cat sat on the mat and then the cat",
                "She opened the door and saw her old friend Zyzzyvaquack",
                "one two three four five six"]
    lines = "\n".join(json.dumps({"text": p}) for p in passages) + "\n"
    (tmp_path / "lambada.jsonl").write_text(lines)
    assert evaluate.read_lambada(tmp_path / "lambada.jsonl") == passages
    accuracy, perplexity, n = evaluate.lambada(model, enc, passages)
    hits, nats = 0, []
    for p in passages:
        context, word = p.rsplit(" ", 1)
        target = enc.encode(" " + word)
        ids = enc.encode(context) + target
        logits = model(torch.tensor([ids[:-1]]))[0][0, -len(target):, :50257]
        # every token of the word
        hits += all(logits[k].argmax().item() == target[k] for k in range(len(target)))
        nats.append(F.cross_entropy(logits, torch.tensor(target), reduction="sum").item())
    assert len(enc.encode(" Zyzzyvaquack")) > 1  # a last word of several tokens
    assert n == 3 and accuracy == hits / 3
    assert perplexity == pytest.approx(math.exp(np.mean(nats)), rel=1e-5)
    long_word = "the word is " + " ".join(["Zyzzyvaquack"] * 3).replace(" ", "")
    # not a shape error in torch
    with pytest.raises(ValueError, match="is 17 tokens, too long for block_size=8"):
        evaluate.lambada(tiny(block_size=8), enc, [long_word])


def test_the_curves_svg_parses_and_holds_one_path_per_curve():
    runs = {}
    for name, offset in (("backpack", 0.0), ("gpt2", 0.3)):
        runs[name] = {"train": [(i * 1024, 10 - i / 10 + offset) for i in range(10, 60, 10)],
                      "val": [(i * 1024, 9.5 - i / 10 + offset) for i in (25, 50)]}
    svg = evaluate.curves_svg(runs)
    root = ET.fromstring(svg)
    paths = [e for e in root.iter("{http://www.w3.org/2000/svg}path") if e.get("class") == "curve"]
    titles = {p.find("{http://www.w3.org/2000/svg}title").text for p in paths}
    assert len(paths) == 4
    assert titles == {"backpack train", "backpack val", "gpt2 train", "gpt2 val"}
    assert all(p.get("d").startswith("M") and p.get("d").count("L") in (1, 4) for p in paths)
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    # one point, constant
    one = ET.fromstring(evaluate.curves_svg({"short": {"train": [(1024, 3.0)], "val": []}}))
    assert len(list(one.iter("{http://www.w3.org/2000/svg}circle"))) == 1


def test_curves_from_run_folders_keep_the_last_record_of_a_resumed_step(tmp_path):
    records = {"out": [{"iter": 10, "loss": 9.0}, {"iter": 20, "loss": 8.0},
                       {"iter": 20, "train_loss": 7.9, "val_loss": 8.1}],
               "out-gpt2": [{"iter": 10, "loss": 9.5}, {"iter": 20, "loss": 8.5},
                            {"iter": 10, "loss": 9.4},  # resumed
                            {"iter": 20, "loss": 8.4}, {"iter": 30, "loss": float("nan")},
                            {"iter": 30, "loss": 8.3}]}
    for name in records:
        os.makedirs(tmp_path / name)
        lines = "".join(json.dumps(r) + "\n" for r in records[name])
        (tmp_path / name / "metrics.jsonl").write_text(lines)
        torch.save({"config": {"tokens_per_step": 1024}}, tmp_path / name / "ckpt.pt")
    assert evaluate.read_run(tmp_path / "out-gpt2") == {
        "train": [(10240, 9.4), (20480, 8.4), (30720, 8.3)], "val": []}
    p = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--curves", "out",
                        "out-gpt2", "--svg=c.svg"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and "wrote c.svg" in p.stdout, p.stderr
    paths = list(ET.parse(tmp_path / "c.svg").getroot().iter("{http://www.w3.org/2000/svg}path"))
    # out train, out val (a dot), out-gpt2 train
    assert [path.get("d").count("L") for path in paths] == [1, 0, 2]
    torch.save({"model": {}}, tmp_path / "out" / "ckpt.pt")  # not train.py's, so no tokens per step
    with pytest.raises(ValueError, match="out/ckpt.pt is not a train.py checkpoint"):
        evaluate.read_run(tmp_path / "out")
    (tmp_path / "out-gpt2" / "metrics.jsonl").write_text('{"iter": 10, "loss": 9.5}\n[]\n')
    with pytest.raises(ValueError, match="line 2: not a JSON record"):
        evaluate.read_run(tmp_path / "out-gpt2")
    diverged = {"train": [(1024, 1e4), (2048, 2.0), (40960, 2.5)], "val": []}
    ET.fromstring(evaluate.curves_svg({"diverged": diverged}))


def test_odd_metrics_values_are_named_not_drawn(tmp_path):
    os.makedirs(tmp_path / "run")
    torch.save({"config": {"tokens_per_step": 1024}}, tmp_path / "run" / "ckpt.pt")
    for line, message in [
            ('{"iter": "10", "loss": 9.0}', "line 1: \"iter\" is '10', not a step number"),
            ('{"iter": null, "loss": 9.0}', 'line 1: "iter" is None, not a step number'),
            ('{"iter": 10, "loss": true}', 'line 1: "loss" is True, not a number'),
            ('{"iter": 10, "val_loss": "8.1"}', "line 1: \"val_loss\" is '8.1', not a number")]:
        (tmp_path / "run" / "metrics.jsonl").write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            evaluate.read_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.jsonl").write_bytes(b'{"iter": 10, "loss": 9.0}\n{"caf\xe9": 1}\n')
    # the file, so the run, named
    with pytest.raises(ValueError, match=r"run/metrics.jsonl is not UTF-8 text"):
        evaluate.read_run(tmp_path / "run")
    # a huge (finite) loss is drawn off the chart, not an OverflowError; the axis follows the others
    big = {"train": [(1024, 1e308), (2048, 3.0), (40960, 2.5)], "val": []}
    svg = evaluate.curves_svg({"big": big})
    assert max(float(t.text) for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")
               if t.text.replace(".", "").isdigit()) <= 1e6


def test_a_long_run_is_drawn_thinned_to_what_a_picture_shows():
    points = [(i * 1024, 10 / (1 + i / 1000)) for i in range(300_000)]
    svg = evaluate.curves_svg({"long": {"train": points, "val": points[::1000]}}, width=720)
    paths = [p for p in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}path")]
    assert all(p.get("d").count("L") + 1 <= 2 * 720 + 1 for p in paths)
    thinned = evaluate.thinned(points, 720)
    assert thinned[-1] == points[-1] and thinned[0] == points[0]


def test_lambada_lines_are_json_objects_or_plain_text(tmp_path, enc):
    good = tmp_path / "good.jsonl"
    separated = "a line\u2028with a separator and a last word"
    good.write_text(json.dumps({"text": separated}) + "\n" + "plain text line\n")
    assert evaluate.read_lambada(good) == [separated, "plain text line"]
    for bad in ('["an", "array"]', '"a bare string"', '{"txt": "no text"}', '{"text": "broken"'):
        (tmp_path / "bad.jsonl").write_text(bad + "\n")
        with pytest.raises(ValueError, match='line 1: expected a JSON object with a "text" field'):
            evaluate.read_lambada(tmp_path / "bad.jsonl")
    model = tiny(block_size=64)  # the last word follows any whitespace: a tab too
    tab = evaluate.lambada(model, enc, ["the cat sat on the\tmat"])
    assert tab == evaluate.lambada(model, enc, ["the cat sat on the mat"])


def test_the_perplexity_of_a_huge_loss_is_inf_not_an_error():
    assert evaluate.perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert evaluate.perplexity(1000.0) == math.inf
