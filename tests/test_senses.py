"""Tests of senses.py and of edits of senses: tiny models on CPU, no network, seconds."""

import math
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

import files
import interventions
import senses
from backpack import GPT2_VOCAB, Backpack, BackpackConfig
from conftest import REPO


def tiny_model(seed=0, **kw):
    args = dict(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32, num_senses=4,
                dropout=0.0)
    args.update(kw)
    torch.manual_seed(seed)
    return Backpack(BackpackConfig(**args)).eval()


def gpt2_model(seed=0, **kw):
    """A tiny model over the real GPT-2 vocabulary, for the tests that tokenize words."""
    return tiny_model(seed, vocab_size=50264, n_layer=1, n_embd=16, **kw)


@pytest.fixture(scope="module")
def enc():
    from tokenizer import get_tokenizer
    return get_tokenizer()


# 1. attribution


def test_contributions_sum_to_the_logit():
    model = tiny_model()
    idx = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(1))
    logits, _ = model(idx)
    senses_, alpha = model.senses(idx)[0], model.sense_weights(idx)[0]
    for position, target in [(-1, 7), (0, 3), (5, 63)]:
        contrib, logit = senses.contributions(model, idx, target, position)
        i = position % 12
        assert contrib.shape == (4, 12)
        assert (contrib[:, i + 1:] == 0).all()  # causal: later words contribute nothing
        assert logit == pytest.approx(logits[0, i, target].item(), abs=1e-6)
        assert contrib.sum().item() == pytest.approx(logit, abs=1e-5)
        # one entry by hand: alpha[l, i, j] * (E C(x_j)_l)[target]
        l, j = 2, i // 2
        by_hand = alpha[l, i, j] * (senses_[l, j] @ model.wte.weight[target])
        assert contrib[l, j].item() == pytest.approx(by_hand.item(), rel=1e-5, abs=1e-8)
    with pytest.raises(ValueError, match="position 12 is outside"):
        senses.contributions(model, idx, 7, 12)
    with pytest.raises(ValueError, match="target -1 is no word"):  # it would read a padding row
        senses.contributions(model, idx, -1)


# 2. interventions in backpack.py


def test_scale_sense_equals_scaling_alpha_at_the_words_positions():
    model = tiny_model()
    idx = torch.tensor([[5, 9, 5, 1, 2, 5, 7, 3]])
    alpha = model.sense_weights(idx)
    for j in (idx[0] == 5).nonzero().flatten().tolist():
        alpha[:, 2, :, j] *= 0.3
        alpha[:, 0, :, j] *= 0.0
    expected, _ = model(idx, sense_weights=alpha)
    interventions.scale_sense(model, 5, {2: 0.3, 0: 0.0})
    got, _ = model(idx)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # persistent: cached generation sees the edit too (greedy, so both runs are deterministic)
    out = model.generate(idx[:, :3], 10, temperature=0)
    for t in range(3, 13):
        logits, _ = model(out[:, :t])
        assert out[0, t] == logits[0, -1, :GPT2_VOCAB].argmax()
    with pytest.raises(ValueError, match="sense 4 is out of range"):
        interventions.scale_sense(model, 5, {4: 0.0})
    # -1 would silently scale the last sense
    with pytest.raises(ValueError, match="sense -1 is out of range"):
        interventions.scale_sense(model, 5, {-1: 0.0})
    with pytest.raises(ValueError, match="sense 1.5 is out of range"):  # it would scale none
        interventions.scale_sense(model, 5, {1.5: 0.0})


def test_edit_knowledge_formula_on_hand_made_vectors():
    model = tiny_model(n_embd=8, n_head=2, num_senses=2)
    old, new, word = 10, 11, 12
    with torch.no_grad():
        model.wte.weight[old] = torch.tensor([2.0, 0, 0, 0, 0, 0, 0, 0])   # |e_r|^2 = 4
        model.wte.weight[new] = torch.tensor([0, 1.0, 0, 0, 0, 0, 0, 0])   # |e_a|^2 = 1
    hand = torch.tensor([[3.0, 5, 7, 0, 0, 0, 0, 1], [-2.0, 0, 0, 1, 0, 0, 0, 0]])
    model.edit_senses(word, lambda s: hand.clone())
    got = interventions.edit_knowledge(model, word, old, new)
    # sense 0: c = 3*2/4 = 1.5; C' = C - 1.5*e_r + 1.5*e_a*4/1 = [3-3, 5+6, 7, 0, 0, 0, 0, 1]
    # sense 1: c = -2*2/4 = -1; C' = C + e_r - 4*e_a = [0, -4, 0, 1, 0, 0, 0, 0]
    expected = torch.tensor([[0.0, 11, 7, 0, 0, 0, 0, 1], [0.0, -4, 0, 1, 0, 0, 0, 0]])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(model.senses(torch.tensor([[word]]))[0, :, 0], expected)
    # what each sense gave Apple now goes to HP: E C'[new] = E C[new] + E C[old] (e_r . e_a = 0)
    E = model.wte.weight
    torch.testing.assert_close(expected @ E[new], hand @ E[new] + hand @ E[old])
    torch.testing.assert_close(expected @ E[old], torch.zeros(2))
    # -1 would be a padding row
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\)"):
        interventions.edit_knowledge(model, word, -1, new)


# 3. Spearman


def test_rankdata_averages_ties():
    np.testing.assert_allclose(senses.rankdata([10, 20, 20, 5, 20]), [2, 4, 4, 1, 4])
    np.testing.assert_allclose(senses.rankdata([3.0, 1.0, 2.0]), [3, 1, 2])


def test_spearman_against_hand_values():
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6*4/120 = 0.8
    assert senses.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties: ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]: Pearson = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert senses.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / 10 ** 0.5)
    assert senses.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(senses.spearman([1, 1, 1], [1, 2, 3]))
    assert np.isnan(senses.spearman([1, np.nan, 3], [1, 2, 3]))  # not a rank for nan


def test_read_similarity(tmp_path):
    f = tmp_path / "sim.txt"
    f.write_text("word1\tword2\tscore\n\nold\tnew\t1.5\nsmart\tintelligent\t9.2\textra\nbad line\n")
    pairs, skipped = files.read_similarity(f)
    assert pairs == [("old", "new", 1.5), ("smart", "intelligent", 9.2)]
    assert skipped == 2  # the header and the line without tabs; the blank line is not counted


def test_similarity_eval_by_hand(enc):
    model = gpt2_model()
    pairs = [("cat", "dog", 8.0), ("car", "automobile", 9.5), ("old", "new", 1.0),
             ("cup", "mug", 7.0)]
    result, n_split = senses.similarity_eval(model, enc, pairs)

    def vec(w):  # the senses of a word, its subwords averaged
        ids = enc.encode(" " + w)
        return model.senses(torch.tensor([ids]))[0].mean(1)  # (k, d)

    sims = torch.stack([torch.nn.functional.cosine_similarity(vec(a), vec(b), dim=-1)
                        for a, b, _ in pairs])
    gold = [s for _, _, s in pairs]
    for l in range(4):
        assert result[l] == pytest.approx(senses.spearman(sims[:, l].tolist(), gold))
    assert result["min"] == pytest.approx(senses.spearman(sims.min(1).values.tolist(), gold))
    assert n_split == sum(len(enc.encode(" " + w)) > 1
                          for w in {"cat", "dog", "car", "automobile", "old", "new", "cup", "mug"})


# 4. the bias measurement


def test_gender_bias_machinery(enc):
    model = gpt2_model()
    professions = ["nurse", "CEO", "hairdresser"]
    templates = ["My {} said that", "The {} was with the car. When"]
    # an edit of the user's own: kept as it was
    interventions.scale_sense(model, enc.encode(" the")[0], {0: 0.5})
    saved = {k: v.clone() for k, v in model.sense_edits.items()}
    before, after, used, skipped = interventions.gender_bias(model, enc, sense=1, factor=0.0,
                                                             professions=professions,
                                                             templates=templates)
    assert skipped == ["hairdresser"] and used == ["nurse", "CEO"]
    he, she = enc.encode(" he")[0], enc.encode(" she")[0]
    ratios_before, ratios_after = [], []
    for job in used:
        job_id = enc.encode(" " + job)[0]
        for t in templates:
            idx = torch.tensor([enc.encode(t.format(job))])
            p = torch.softmax(model(idx)[0][0, -1].double(), -1)
            ratios_before.append(max(p[he] / p[she], p[she] / p[he]).item())
            # removing sense 1 = zeroing its weights where the job is
            alpha = model.sense_weights(idx)
            alpha[:, 1, :, idx[0] == job_id] = 0
            p = torch.softmax(model(idx, sense_weights=alpha)[0][0, -1].double(), -1)
            ratios_after.append(max(p[he] / p[she], p[she] / p[he]).item())
    assert before == pytest.approx(np.mean(ratios_before), rel=1e-5)
    assert after == pytest.approx(np.mean(ratios_after), rel=1e-5)
    assert before != pytest.approx(after, rel=1e-9)
    assert saved.keys() == model.sense_edits.keys()
    for k in saved:
        torch.testing.assert_close(model.sense_edits[k], saved[k])
    with pytest.raises(ValueError, match="sense 10 is out of range"):
        interventions.gender_bias(model, enc, sense=10)


def test_default_bias_setting_is_the_papers(enc):
    prompts, skipped = interventions.bias_prompts(enc)
    assert len(interventions.PROFESSIONS) == 40 and len(interventions.BIAS_PROMPTS) == 13
    assert len(prompts) == 13 * (40 - len(skipped)) and "nurse" not in skipped and len(skipped) < 20


# 5. interventions for generation (sample.py)


def test_parse_specs():
    assert interventions.parse_scale("nurse:10=0") == ("nurse", {10: 0.0})
    assert interventions.parse_scale("New York:3=0.5,1=2") == ("New York", {3: 0.5, 1: 2.0})
    assert interventions.parse_edit("MacBook:Apple->HP") == ("MacBook", "Apple", "HP")
    for bad in ("nurse", "nurse:10", "nurse:x=1", ":10=0", "nurse:10=abc"):
        with pytest.raises(ValueError, match="--scale"):
            interventions.parse_scale(bad)
    for bad in ("MacBook", "MacBook:Apple", "MacBook:->HP", ":Apple->HP"):
        with pytest.raises(ValueError, match="--edit"):
            interventions.parse_edit(bad)


def test_apply_interventions(enc):
    model = gpt2_model()
    notes = []
    nurse, mac = enc.encode(" nurse"), enc.encode(" MacBook")
    pad = enc.encode(" ThinkPad")
    assert len(nurse) == len(mac) == 1 and len(pad) == 2  # ' Think' + 'Pad'
    idx = torch.tensor([nurse + mac + pad])
    original = model.senses(idx)[0]
    interventions.apply_interventions(model, enc, scale=["nurse:1=0,2=3"],
                                      edit=["MacBook:Apple->HP", "ThinkPad:Lenovo->HP"],
                                      log=notes.append)
    got = model.senses(idx)[0]
    torch.testing.assert_close(got[1, 0], torch.zeros(16))
    torch.testing.assert_close(got[2, 0], 3 * original[2, 0])
    torch.testing.assert_close(got[0, 0], original[0, 0])
    e_a = model.wte.weight[enc.encode(" HP")[0]]
    # every subword of ThinkPad is edited
    for j, old in [(1, " Apple"), (2, " Lenovo"), (3, " Lenovo")]:
        e_r = model.wte.weight[enc.encode(old)[0]]
        c = original[:, j] @ e_r / (e_r @ e_r)
        expected = original[:, j] - c[:, None] * e_r + c[:, None] * e_a * (e_r @ e_r) / (e_a @ e_a)
        torch.testing.assert_close(got[:, j], expected)
    assert notes == ["note: --edit: ' ThinkPad' is 2 subwords (' Think' + 'Pad'); applied to each"]
    with pytest.raises(ValueError, match="must be one token"):
        interventions.apply_interventions(model, enc, edit=["MacBook:Apple->Hewlettpackardish"])
    with pytest.raises(ValueError, match="out of range"):
        interventions.apply_interventions(model, enc, scale=["nurse:4=0"])
    with pytest.raises(ValueError, match="--scale"):
        interventions.apply_interventions(model, enc, scale=["  :1=0"])
    with pytest.raises(ValueError, match="this model has none"):  # the matched Transformer
        interventions.apply_interventions(gpt2_model(num_senses=0), enc, topic="food")


def test_topic_boost_bands():
    scores = torch.arange(100, dtype=torch.float32).reshape(25, 4)
    mult = interventions.topic_boosts(scores, 2).flatten()
    assert (mult == 2.2).sum() == 20 and (mult[95:] == 2.2).all() and (mult[80:95] == 2.2).all()
    assert (mult[60:80] == 1.5).all() and (mult[:60] == 1).all()
    mult = interventions.topic_boosts(scores, 3).flatten()
    assert (mult[80:] == 3.3).all() and (mult[60:80] == 3.0).all()
    mult = interventions.topic_boosts(torch.zeros(10, 4), 1)  # no topic mass: nothing is boosted
    assert (mult == 1).all()


def test_topic_control(enc):
    model = gpt2_model()
    bag, missing = interventions.topic_bag(enc, ["food", "dining", "xqzvbnmw"])
    assert enc.encode(" food")[0] in bag and enc.encode(" Food")[0] in bag
    assert missing == ["xqzvbnmw"]
    candidates = list(range(300))
    # several chunks
    scores = interventions.topic_scores(model, bag, candidates, max_floats=1 << 20)
    # one word by hand: positive mass on the bag over the max of E C(x)_l
    v = senses.sense_vocab_scores(model, 123)
    expected = v[:, bag].clamp(min=0).sum(1) / v.max(1).values
    torch.testing.assert_close(scores[123], torch.where(v.max(1).values > 0, expected, 0))
    before = model.senses(torch.tensor([candidates]))[0]
    notes = []
    n = interventions.topic_control(model, enc, ["food", "dining"], strength=3, topic_vocab=300,
                                    log=notes.append)
    mult = interventions.topic_boosts(scores, 3)
    assert n == int((mult != 1).any(1).sum()) > 0
    after = model.senses(torch.tensor([candidates]))[0]
    torch.testing.assert_close(after, before * mult.T[:, :, None])
    assert any("no annealing" in m for m in notes)
    with pytest.raises(ValueError, match="strength"):
        interventions.topic_control(model, enc, ["food"], strength=4)
    with pytest.raises(ValueError, match="bag of words is empty"):
        interventions.topic_control(model, enc, ["xqzvbnmw"], topic_vocab=10, log=notes.append)


# 6. the command line on a small checkpoint in train.py's format


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    model = gpt2_model(seed=3, num_senses=4)
    path = tmp_path_factory.mktemp("ckpt")
    torch.save({"model_args": asdict(model.config), "model": model.state_dict(), "iter_num": 0,
                "best_val_loss": 9.9}, os.path.join(path, "ckpt.pt"))
    return str(path)


def run(capsys, *argv):
    senses.main(list(argv))
    return capsys.readouterr().out


def test_cli_word_table(capsys, ckpt_dir):
    out = run(capsys, "--word", "science", "--init_from", ckpt_dir, "--top", "3").splitlines()
    assert out[0].startswith("' science' = token 3783")
    rows = out[1:]
    assert len(rows) == 2 * 4  # a top line and a bottom line per sense
    for l in range(4):
        top, bottom = rows[2 * l].split(), rows[2 * l + 1].split()
        assert top[:3] == ["sense", str(l), "top"] and bottom[0] == "bottom"
        assert len(top) == 3 + 2 * 3 and len(bottom) == 1 + 2 * 3  # 3 (word, score) pairs each
        scores = [float(s) for s in top[4::2]] + [float(s) for s in bottom[2::2]]
        assert scores[:3] == sorted(scores[:3], reverse=True) and scores[3:] == sorted(scores[3:])
    # a word of several subwords: says so, and --subword picks one
    out = run(capsys, "--word", "ThinkPad", "--init_from", ckpt_dir, "--subword", "1")
    assert "is 2 subwords (' Think' + 'Pad'); showing subword 1, 'Pad'" in out


def test_cli_context(capsys, ckpt_dir):
    out = run(capsys, "--context", "The nurse said that", "--target", " she",
              "--init_from", ckpt_dir, "--top", "4")
    lines = out.splitlines()
    assert lines[0].startswith("logit of ' she' after 'The nurse said that' (position 3)")
    assert len(lines) == 2 + 4 + 2
    check = lines[-1]
    assert check.startswith("check: the contributions sum to")
    total, logit = float(check.split()[5].rstrip(";")), float(check.split()[10])
    assert total == pytest.approx(logit, abs=2e-4)
    out = run(capsys, "--context", "The nurse said that", "--init_from", ckpt_dir)
    assert "no --target" in out
    # a target without its leading space is a different token: said, not refused
    out = run(capsys, "--context", "The nurse said that", "--target", "she", "--out_dir", ckpt_dir)
    assert "note: --target 'she' is taken verbatim; the word inside text is ' she'" in out
    assert "logit of 'she' after" in out


def test_cli_similarity_and_bias(capsys, ckpt_dir, tmp_path, enc):
    f = tmp_path / "sim.tsv"
    f.write_text("cat\tdog\t8\ncar\tautomobile\t9\nold\tnew\t1\n")
    out = run(capsys, "--similarity", str(f), "--init_from", ckpt_dir)
    assert "3 word pairs" in out and "min:" in out and " 3: " in out
    out = run(capsys, "--bias", "--sense", "2", "--init_from", ckpt_dir)
    lines = out.splitlines()
    # 10 professions are several tokens
    assert lines[0].startswith("gender bias: mean over 30 professions x 13 prompts")
    assert lines[2].startswith("  unmodified: ")
    assert lines[3].startswith("  each profession's sense 2 removed: ")
    model = Backpack.from_pretrained(ckpt_dir)
    before, after, _, _ = interventions.gender_bias(model, enc, sense=2)
    assert float(lines[2].split()[1]) == pytest.approx(before, abs=1e-3)
    assert float(lines[3].split()[5]) == pytest.approx(after, abs=1e-3)


@pytest.mark.parametrize("argv,message", [
    (["--word", ""], "the word is empty"),
    (["--word", "   "], "the word is empty"),
    (["--word", "science", "--subword", "1"],
     "--subword 1 is out of range: 'science' has 1 subword"),
    (["--word", "science", "--top", "0"], "--top must be in [1, inf), got 0"),
    (["--bias"], "sense 10 is out of range: this model has senses 0..3"),
    (["--context", "The nurse said that", "--target", " nurses said"], "must be one token"),
    (["--context", "The nurse said that", "--position", "9"], "--position 9 is outside"),
    (["--context", ""], "--context is empty"),
    (["--similarity", "/nonexistent/sim.txt"], "No such file or directory: '/nonexistent/sim.txt'"),
    (["--word", "science", "--bias"],
     "give one of --word WORD, --context TEXT, --similarity FILE, --bias or --health"),
    (["--wrd", "science"], "unknown config key --wrd (did you mean --word?)"),
    pytest.param(["--word", "science", "--device", "cuda"], "this PyTorch has no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(),
                                          reason="CUDA is available here")),
])
def test_cli_bad_inputs(ckpt_dir, argv, message):
    # the script prints these as one line (test_errors.py)
    with pytest.raises((ValueError, OSError)) as e:
        senses.main(argv + ["--init_from", ckpt_dir])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_a_model_without_senses(tmp_path):
    model = gpt2_model(num_senses=0)  # the matched Transformer
    torch.save({"model_args": asdict(model.config), "model": model.state_dict()},
               tmp_path / "ckpt.pt")
    with pytest.raises(ValueError) as e:
        senses.main(["--word", "science", "--init_from", str(tmp_path)])
    assert str(e.value) == (f"the model in {tmp_path} has no senses "
                            "(num_senses=0: a matched Transformer)")


def test_sample_py_interventions(ckpt_dir):
    def run(*argv):
        return subprocess.run([sys.executable, "sample.py", "--init_from", ckpt_dir, "--device=cpu",
                               *argv], capture_output=True, text=True, cwd=REPO)

    p = run("--start", "The nurse", "--num_samples", "1", "--max_new_tokens", "3",
            "--scale", "nurse:1=0", "--scale", "ThinkPad:0=2", "--edit", "MacBook:Apple->HP",
            "--topic", "food", "--topic_vocab", "50")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("The nurse") and "' ThinkPad' is 2 subwords" in p.stderr
    assert "topic control: boosted" in p.stderr
    p = run("--scale", "nurse")
    assert p.returncode == 1
    assert p.stderr == ("sample.py: --scale 'nurse': expected WORD:SENSE=FACTOR[,SENSE=FACTOR...], "
                        "e.g. nurse:10=0\n")


def test_sense_health_shows_a_collapse(enc):
    model = gpt2_model(seed=4, num_senses=4)
    tokens = enc.encode("the cat sat on the mat, and the dog sat on the log; the end. " * 20)
    cosine, entropy, share = senses.sense_health(model, tokens, words=10, windows=4)
    assert -1 < cosine < 0.9 and len(entropy) == len(share) == 4 and sum(share) == pytest.approx(1)
    # + 1e-3: float32 rounding near the flat maximum
    assert all(0 < e <= math.log(50257) + 1e-3 for e in entropy)
    # every sense the same: the last layer of the sense network repeats sense 0
    with torch.no_grad():
        proj = model.sense_network.final_mlp.c_proj
        d = model.config.n_embd
        for l in range(1, 4):
            proj.weight[l * d:(l + 1) * d] = proj.weight[:d]
            proj.bias[l * d:(l + 1) * d] = proj.bias[:d]
    cosine, entropy, share = senses.sense_health(model, tokens, words=10, windows=4)
    assert cosine > 0.999 and max(entropy) - min(entropy) < 1e-4  # collapsed: one sense, k times
    # and each carries the same share of the output (alpha aside)
    assert max(share) - min(share) < 0.05
