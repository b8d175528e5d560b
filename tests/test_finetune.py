"""Tests of finetune_senses.py: sense finetuning from canonical examples. Tiny models on CPU, no
network, seconds."""

import copy
import json
import os
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import files
import finetune_senses as ft
from backpack import Backpack, BackpackConfig
from pretrained import load
from conftest import REPO


def tiny_model(seed=0, **kw):
    """A tiny Backpack over GPT-2's vocabulary, for the tests that tokenize text."""
    args = dict(block_size=32, n_layer=1, n_head=2, n_embd=16, num_senses=4)
    torch.manual_seed(seed)
    return Backpack(BackpackConfig(**{**args, **kw})).eval()


@pytest.fixture(scope="module")
def enc():
    from tokenizer import get_tokenizer
    return get_tokenizer()


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def run_folder(tmp_path):
    """A tiny model saved as train.py saves one, a background split, and a pair task in the
    authors' format."""
    model = tiny_model()
    os.makedirs(tmp_path / "run")
    torch.save({"model_args": asdict(model.config), "model": model.state_dict()},
               tmp_path / "run" / "ckpt.pt")
    jobs = ["nurse", "driver", "teacher", "writer"]
    # background text: random tokens, and sentences with the task's words
    from tokenizer import get_tokenizer
    said = [t for j in jobs for t in get_tokenizer().encode(f" The {j} said that he and she")]
    noise = np.random.default_rng(0).integers(0, 50257, 5000)
    np.concatenate([noise[i:i + 50].tolist() + said
                    for i in range(0, 5000, 50)]).astype(np.uint16).tofile(tmp_path / "val.bin")
    write_jsonl(tmp_path / "train.jsonl", [{"prefix": f"The {j} said", "suffix1": " he",
                                            "suffix2": " she"} for j in jobs])
    write_jsonl(tmp_path / "eval.jsonl", [{"prefix": f"My {j} thinks that", "suffix1": " he",
                                           "suffix2": " she"} for j in jobs])
    return tmp_path


def settings(folder, *extra):
    return [f"--init_from={folder}/run", f"--examples={folder}/train.jsonl",
            f"--eval={folder}/eval.jsonl", f"--background={folder}/val.bin",
            "--background_windows=6", "--measure_windows=2", "--epochs=3",
            f"--out_dir={folder}/edited", "--device=cpu", *extra]


# 1. data, in the authors' formats


def test_examples_are_read_in_the_authors_formats(tmp_path, enc):
    # their country_capital lines carry other keys too
    single = write_jsonl(tmp_path / "capitals.jsonl", [
        {"statement": "The capital of France is Paris.", "clear_document": "A long text ...",
         "country": "France", "capital": "Paris", "prefix": "The capital of France is",
         "suffix": " Paris"},
        {"prefix": "The capital of Japan is", "suffix": " Tokyo", "capital": "Tokyo"}])
    text = (tmp_path / "capitals.jsonl").read_text()
    (tmp_path / "capitals.jsonl").write_text(text.replace("\n", "\n\n", 1))
    examples = files.read_examples(single, enc, 32)
    assert examples == [(enc.encode("The capital of France is"), [enc.encode(" Paris")]),
                        (enc.encode("The capital of Japan is"), [enc.encode(" Tokyo")])]
    pair = write_jsonl(tmp_path / "gender.jsonl",
                       [{"prefix": "The janitor said", "suffix1": " he", "suffix2": " she"}])
    assert files.read_examples(pair, enc, 32) == [(enc.encode("The janitor said"),
                                                   [enc.encode(" he"), enc.encode(" she")])]
    # a line ends at a newline only: JSON strings may hold U+2028, as text from the web does
    (tmp_path / "web.jsonl").write_text('{"prefix": "A\u2028B", "suffix": " C"}\n')
    web = files.read_examples(str(tmp_path / "web.jsonl"), enc, 32)
    assert web == [(enc.encode("A\u2028B"), [enc.encode(" C")])]


def test_background_windows_never_overlap_and_span_the_text(tmp_path, enc):
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "val.bin")
    windows = ft.read_background(str(tmp_path / "val.bin"), enc, 16, 5)
    # they run from the start of the text to its end
    assert windows.shape == (5, 17) and windows[0, 0] == 0 and windows[-1, -1] >= 995
    assert (windows[:, 1:] - windows[:, :-1] == 1).all()  # each a run of consecutive tokens
    assert (windows[1:, 0] > windows[:-1, -1]).all()  # no token in two windows
    # as many as fit, when more are asked for
    assert len(ft.read_background(str(tmp_path / "val.bin"), enc, 16, 100)) == 1000 // 17
    with pytest.raises(ValueError, match="holds 1000 tokens; the background needs at least 1002"):
        ft.read_background(str(tmp_path / "val.bin"), enc, 500, 10)
    (tmp_path / "notes.txt").write_text("Hello world, " * 40)
    windows = ft.read_background(str(tmp_path / "notes.txt"), enc, 16, 3)
    assert windows[0].tolist() == enc.encode("Hello world, " * 40)[:17]


def test_bad_example_lines_name_the_line_and_the_problem(tmp_path, enc):
    for record, message in [({"prefix": 3, "suffix": " x"}, 'line 1: "prefix" is not a string'),
                            ({"prefix": "", "suffix": " x"}, "line 1: the prefix is empty"),
                            ({"prefix": "a", "suffix1": " b"}, 'line 1: no "suffix2" string')]:
        with pytest.raises(ValueError, match=message):
            files.read_examples(write_jsonl(tmp_path / "bad.jsonl", [record]), enc, 32)


# 2. the losses


def test_losses_equal_a_direct_computation(enc):
    model = tiny_model()
    examples = [(enc.encode("The nurse said"), [enc.encode(" he"), enc.encode(" she is")]),
                (enc.encode("My old teacher told us that"),
                 [enc.encode(" she"), enc.encode(" he")])]
    # both examples, four sequences of three lengths, in one padded batch
    nll = ft.suffix_nll(model, examples)
    for n, (prefix, suffixes) in enumerate(examples):
        # each sequence alone, no padding: sum of -log p(token | before)
        for m, suffix in enumerate(suffixes):
            ids = prefix + suffix
            logp = F.log_softmax(model(torch.tensor([ids]))[0][0], dim=-1)
            by_hand = -sum(logp[len(prefix) - 1 + i, t] for i, t in enumerate(suffix))
            assert nll[n, m].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert torch.equal(ft.example_losses(nll, "balance"), (nll[:, 0] - nll[:, 1]).abs())
    assert torch.equal(ft.example_losses(nll, "good-v-bad"), nll[:, 0] - nll[:, 1])
    assert torch.equal(ft.example_losses(nll[:, :1], "good"), nll[:, 0])
    assert torch.equal(ft.example_losses(nll[:, :1], "bad"), -nll[:, 0])


def test_success_thresholds_are_the_authors_criteria():
    nll = torch.tensor([[1.0, 1.3], [0.5, 3.5], [7.0, 4.0]])  # NLLs in nats of (suffix1, suffix2)

    def succeeds(loss, threshold, columns=2):
        limit = ft.loss_limit(loss, threshold)
        return (ft.example_losses(nll[:, :columns], loss) <= limit).tolist()
    assert succeeds("good", 0.3, 1) == [True, True, False]  # p = e^-1 = 0.37 >= 0.3; e^-7 is not
    assert succeeds("bad", 0.3, 1) == [False, False, True]  # p <= 0.3
    assert succeeds("balance", 1.5) == [True, False, False]  # within a factor e^0.3 = 1.35 <= 1.5
    assert succeeds("good-v-bad", 16) == [False, True, False]  # p1/p2 = e^3 = 20 >= 16


# 3. which senses


def test_selection_prefers_senses_that_background_text_leans_on_little():
    background = torch.zeros(10, 4)
    background[5, 0] = 0.01  # word 5's sense 0 is used by every text; word 6's sense 0 by none
    scores = [{(5, 0): 1.0, (6, 0): 0.9, (7, 1): -0.2, (8, 2): 0.0, (9, 3): 0.5}]
    # lambda 0: the largest alpha
    assert ft.choose_senses(scores, background, 0.0, 1) == {(5, 0): 1.0}
    # 1.0 - 1000 x 0.01 = -9 loses
    assert ft.choose_senses(scores, background, 1000.0, 1) == {(6, 0): 0.9}
    everything = ft.choose_senses(scores, background, 1000.0, 10)
    # a non-positive raw score is never chosen, even with room
    assert set(everything) == {(5, 0), (6, 0), (9, 3)}
    assert everything[5, 0] == pytest.approx(-9.0)
    # the union over examples, each pair with its best score
    union = ft.choose_senses(scores + [{(9, 3): 2.0}], background, 1000.0, 1)
    assert union == {(6, 0): 0.9, (9, 3): 2.0}


def test_sense_scores_sum_alpha_over_the_positions_that_predict_the_suffix(enc):
    model = tiny_model()
    prefix, s1, s2 = enc.encode("The nurse said"), enc.encode(" he was"), enc.encode(" she")
    for loss, signs in (("balance", (1, 1)), ("good-v-bad", (1, -1))):
        (table,) = ft.sense_scores(model, [(prefix, [s1, s2])], loss)
        nurse = prefix[1]
        by_hand = 0
        for suffix, sign in zip((s1, s2), signs):
            alpha = model.sense_weights(torch.tensor([prefix + suffix]))[0]  # (k, T, T)
            rows = slice(len(prefix) - 1, len(prefix) + len(suffix) - 1)
            by_hand = by_hand + sign * alpha[2, rows, 1].sum()
        assert table[nurse, 2] == pytest.approx(by_hand.item(), rel=1e-5)
        assert (s1[-1], 0) not in table  # the suffix's last token is only predicted
    (single,) = ft.sense_scores(model, [(prefix, [s1])], "good")
    alpha = model.sense_weights(torch.tensor([prefix + s1]))[0]
    assert single[s1[0], 3] == pytest.approx(alpha[3, len(prefix), len(prefix)].item(), rel=1e-5)


def test_background_alpha_is_the_mean_over_windows_of_what_each_sense_receives():
    model = tiny_model()
    windows = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    background = ft.background_alpha(model, windows)
    alpha = model.sense_weights(windows)  # (3, k, T, T)
    token = windows[1, 4].item()
    by_hand = sum(alpha[b, :, :, j].sum(-1)
                  for b in range(3) for j in range(12) if windows[b, j] == token) / 3
    torch.testing.assert_close(background[token], by_hand)
    # each sense's rows sum to 1, per position
    assert background.sum().item() == pytest.approx(4 * 12, rel=1e-5)


# 4. training


def test_kl_is_zero_before_the_first_step():
    model = tiny_model().requires_grad_(False)
    windows = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    deltas = ft.SenseDeltas({(5, 1): 1.0, (windows[0, 3].item(), 2): 1.0}, model.config)
    assert ft.kl_to_original(model, windows, deltas).item() == 0.0
    full = copy.deepcopy(model).requires_grad_(True)
    assert ft.kl_to_original(full, windows, original=model).item() == 0.0
    with torch.no_grad():
        deltas.delta.fill_(0.5)
    # the edited word occurs in window 0
    assert ft.kl_to_original(model, windows, deltas).item() > 0


def test_deltas_change_only_the_chosen_senses_of_the_chosen_words():
    model = tiny_model()
    idx = torch.tensor([[7, 5, 9, 5, 7]])
    deltas = ft.SenseDeltas({(5, 1): 1.0, (7, 3): 0.5}, model.config)
    with torch.no_grad():
        deltas.delta.normal_()
    base, edited = model.senses(idx), deltas(idx, model.senses(idx))
    changed = (edited != base).any(-1)[0]  # (k, T)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[1, [1, 3]] = expected[3, [0, 4]] = True
    assert torch.equal(changed, expected)
    torch.testing.assert_close(edited[0, 1, 1] - base[0, 1, 1], deltas.delta[0].detach())


def test_a_few_steps_lower_the_training_loss(enc):
    model = tiny_model().requires_grad_(False)
    examples = [(enc.encode(f"The capital of {c} is"), [enc.encode(f" {city}")])
                for c, city in (("France", "Paris"), ("Japan", "Tokyo"))]
    windows = torch.randint(0, 50257, (4, 17), generator=torch.Generator().manual_seed(0))
    pairs = ft.choose_senses(ft.sense_scores(model, examples, "good"),
                             ft.background_alpha(model, windows[:, :-1]), 1000.0, 4)
    deltas = ft.SenseDeltas(pairs, model.config)
    # a large rate: E is small at init
    optimizer = torch.optim.AdamW([deltas.delta], lr=1.0, weight_decay=0.0)
    # about ln 50264 at first
    before = ft.example_losses(ft.suffix_nll(model, examples, deltas), "good").mean().item()
    for _ in range(10):
        ft.train_epoch(model, deltas, None, optimizer, examples, windows, "good", 0.1, 1,
                       torch.Generator().manual_seed(0))
    after = ft.example_losses(ft.suffix_nll(model, examples, deltas), "good").mean().item()
    assert after < before - 1


def test_the_budget_keeps_the_last_epoch_within_it():
    history = [{"background_loss": 5.0}, {"background_loss": 5.0004}, {"background_loss": 5.004},
               {"background_loss": 5.0003}, {"background_loss": 5.02}]
    assert ft.last_within(history, 1e-3) == 3  # epoch 2 rose 8e-4, epoch 4 4e-3
    assert ft.last_within(history, 1e-4) == 3  # 6e-5
    assert ft.last_within(history, 1e-5) == 0  # the unedited model


# 5. the whole script: only the senses change, and the result is a model every script loads


def test_finetuning_senses_changes_only_them_and_saves_a_model_that_reloads_exactly(
        run_folder, enc, capsys):
    model = ft.main(settings(run_folder, "--learning_rate=0.05", "--max_degradation=1"))
    out = capsys.readouterr().out
    assert "chose " in out and "epoch  3:" in out and "saved the model of epoch 3" in out
    record = json.loads((run_folder / "edited" / "finetune.json").read_text())
    assert record["kept_epoch"] == 3 and len(record["history"]) == 4
    original, edited = load(run_folder / "run"), load(run_folder / "edited")
    # every weight bit-identical: only senses were edited
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, edited.state_dict()[name]), name
    chosen = {(s["token"], s["sense"]) for s in record["senses"]}
    assert set(edited.sense_edits) == {t for t, _ in chosen}
    # of an edited word, the chosen senses moved, the others not
    for token, new in edited.sense_edits.items():
        old = original.senses(torch.tensor([[token]]))[0, :, 0]
        moved = {l for l in range(4) if not torch.allclose(new[l], old[l], atol=1e-6)}
        assert moved == {l for t, l in chosen if t == token}
    # save -> load -> the edited model's logits and generations, exactly
    idx = torch.tensor([enc.encode("My nurse thinks that he said")])
    torch.testing.assert_close(edited(idx)[0], model(idx)[0], rtol=0, atol=0)
    assert torch.equal(edited.generate(idx, 8, temperature=0),
                       model.generate(idx, 8, temperature=0))
    assert not torch.equal(edited(idx)[0], original(idx)[0])


def test_full_finetuning_trains_every_weight_under_the_same_budget(run_folder, capsys):
    model = ft.main(settings(run_folder, "--method=full", "--learning_rate=1e-3",
                             "--max_degradation=1"))
    assert "saved the model of epoch 3" in capsys.readouterr().out
    edited, original = load(run_folder / "edited"), load(run_folder / "run")
    assert not edited.sense_edits
    changed = [n for n, t in original.state_dict().items()
               if not torch.equal(t, edited.state_dict()[n])]
    assert "h.0.mlp.c_fc.weight" in changed and "sense_weight_net.weight" in changed
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, edited.state_dict()[name])


def test_a_budget_of_zero_keeps_the_unedited_model(run_folder, enc, capsys):
    # make " Rome" unlikely after "The capital of France is", in a background that says just that
    noise = np.random.default_rng(1).integers(0, 50257, 3000)
    text = enc.encode(" The capital of France is Rome.")
    np.concatenate([noise[i:i + 30].tolist() + text
                    for i in range(0, 3000, 30)]).astype(np.uint16).tofile(run_folder / "val.bin")
    for name in ("train", "eval"):
        write_jsonl(run_folder / f"{name}.jsonl",
                    [{"prefix": " The capital of France is", "suffix": " Rome"}])
    # lambda 0: the words that the background holds too
    ft.main(settings(run_folder, "--loss=bad", "--learning_rate=0.5", "--kl_weight=0",
                     "--max_degradation=0", "--background_weight=0"))
    out = capsys.readouterr().out
    assert "saved the model of epoch 0" in out, out
    assert not load(run_folder / "edited").sense_edits


def test_good_v_bad_with_one_token_suffixes_says_why_nothing_is_chosen(run_folder):
    with pytest.raises(ValueError,
                       match="two one-token suffixes are predicted from the same position"):
        ft.main(settings(run_folder, "--loss=good-v-bad"))


def test_the_edited_model_goes_into_sample_senses_and_evaluate_as_it_is(run_folder):
    import subprocess
    import sys
    ft.main(settings(run_folder, "--learning_rate=0.05", "--max_degradation=1"))
    repo, out = REPO, str(run_folder / "edited")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for script, *args in (("sample.py", f"--out_dir={out}", "--max_new_tokens=5",
                           "--num_samples=1"),
                          ("senses.py", f"--init_from={out}", "--word", "nurse"),
                          ("evaluate.py", "--models", out, f"--file={run_folder}/eval.jsonl")):
        p = subprocess.run([sys.executable, os.path.join(repo, script), *args], env=env,
                           cwd=run_folder, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and p.stdout.strip(), p.stderr


def test_a_checkpoint_with_malformed_sense_edits_is_refused(run_folder):
    ckpt = torch.load(run_folder / "run" / "ckpt.pt", weights_only=True)
    torch.save({**ckpt, "sense_edits": {5: torch.zeros(3, 16)}}, run_folder / "run" / "ckpt.pt")
    with pytest.raises(ValueError,
                       match=r"its sense_edits are not \{token id: a \(4, 16\) tensor\}"):
        load(run_folder / "run")
