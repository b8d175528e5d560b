"""Tests of train.py, the settings (settings.configure), sample.py and bench.py, run as a user runs
them: as scripts, on CPU, on a tiny model and a tiny fake dataset written under pytest's tmp_path
(never the repo's data/ or out/)."""

import glob
import hashlib
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--num_senses=4", "--block_size=16",
        "--batch_size=4", "--tokens_per_step=128", "--eval_iters=2", "--log_interval=1",
        "--warmup_iters=2", "--learning_rate=1e-2"]


def run(script, *args, check=True, launcher=None, cwd=REPO):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable] + (launcher or []) + [os.path.join(REPO, script), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def train(data_dir, out_dir, *args, **kw):
    return run("train.py", *TINY, f"--data_dir={data_dir}", "--dataset=fake",
               f"--out_dir={out_dir}", *args, **kw)


def one_line_error(p, *fragments):
    """A clear error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def losses(out_dir):
    """{iter: training loss} from metrics.jsonl (a later record of the same step wins)."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["iter"]: r["loss"] for r in records if "loss" in r}


def digest(state):
    # the same fingerprint train.py prints per rank under DDP
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A fake token stream with learnable structure (each odd token follows from the one before
    it)."""
    root = tmp_path_factory.mktemp("data")
    os.makedirs(root / "fake")
    rng = np.random.default_rng(0)
    tokens = rng.zipf(1.5, 60_000) % 50257
    tokens[1::2] = (tokens[0::2] * 7 + 3) % 50257
    tokens.astype(np.uint16).tofile(root / "fake" / "train.bin")
    tokens[:6_000].astype(np.uint16).tofile(root / "fake" / "val.bin")
    return root


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    p = train(data_dir, out, "--max_iters=6", "--eval_interval=3")
    return out, p


# -- a run, its log and its checkpoint -------------------------------------------------------------


def test_run_logs_and_checkpoints(tiny_run):
    out, p = tiny_run
    assert "tokens per step 128 = 4 seqs x 16 tokens x 1 rank x 2 accumulation steps" in p.stdout
    assert "unigram entropy" in p.stdout
    assert "iter 6: loss" in p.stdout and "ms/iter" in p.stdout and "tok/s" in p.stdout
    assert p.stdout.count("no MFU") == 1 and "mfu" not in p.stdout  # CPU: no known peak, said once
    assert "step 6: train loss" in p.stdout
    l = losses(out)
    assert sorted(l) == [1, 2, 3, 4, 5, 6] and l[6] < l[1]


def test_checkpoint_loads_with_weights_only(tiny_run):
    out, _ = tiny_run
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 6
    assert ckpt["model_args"]["n_embd"] == 32 and ckpt["model_args"]["vocab_size"] == 50264
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    assert {"optimizer", "best_val_loss", "config", "iter_num", "origin"} <= set(ckpt)
    assert ckpt["config"]["max_iters"] == 6 and isinstance(ckpt["best_val_loss"], float)
    assert not glob.glob(str(out / "*.tmp*"))  # the atomic write left no temp file
    from backpack import Backpack, BackpackConfig  # the model rebuilds from model_args alone
    model = Backpack(BackpackConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])


def test_eval_only_evaluates_and_writes_nothing(tiny_run, data_dir):
    out, _ = tiny_run
    before = {f: (out / f).read_bytes() for f in ("ckpt.pt", "metrics.jsonl")}
    p = train(data_dir, out, "--init_from=resume", "--eval_only=True", "--max_iters=6")
    assert "step 6: train loss" in p.stdout
    assert {f: (out / f).read_bytes() for f in before} == before


# -- reproducibility -------------------------------------------------------------------------------


def test_killed_and_resumed_run_matches_the_uninterrupted_one(data_dir, tmp_path):
    # log_interval=4 does not divide eval_interval=6: the averaging window closes before each
    # checkpoint
    args = ["--max_iters=24", "--eval_interval=6", "--dropout=0.1", "--log_interval=4"]
    train(data_dir, tmp_path / "straight", *args)

    # the same run, killed (SIGKILL, no chance to clean up) as soon as it has written its first
    # checkpoint
    interrupted = tmp_path / "interrupted"
    cmd = [sys.executable, os.path.join(REPO, "train.py"), *TINY, f"--data_dir={data_dir}",
           "--dataset=fake", f"--out_dir={interrupted}", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("saved checkpoint at step 6"):
            proc.kill()
            break
    proc.wait()
    killed_at = torch.load(interrupted / "ckpt.pt", weights_only=True)["iter_num"]
    assert 6 <= killed_at < 24

    # resuming needs only the folder: the run's own settings come from its checkpoint
    p = run("train.py", f"--out_dir={interrupted}", "--init_from=resume")
    assert f"resuming from {interrupted}" in p.stdout and "changed settings" not in p.stdout
    straight, resumed = losses(tmp_path / "straight"), losses(interrupted)
    assert sorted(resumed) == [4, 6, 8, 12, 16, 18, 20, 24]
    assert resumed == straight  # exactly: every step's loss, before and after the kill
    a = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)
    b = torch.load(interrupted / "ckpt.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["iter_num"] == b["iter_num"] == 24


def test_a_diverged_run_stops_with_one_line_that_says_where_it_can_continue(data_dir, tmp_path):
    args = ["--learning_rate=1e6", "--grad_clip=0", "--warmup_iters=0", "--max_iters=20"]
    p = train(data_dir, tmp_path / "new", *args, check=False)
    one_line_error(p, "training diverged; lower --learning_rate (no checkpoint was saved)")
    train(data_dir, tmp_path / "out", "--max_iters=2", "--eval_interval=2")
    p = train(data_dir, tmp_path / "out", "--init_from=resume", *args, check=False)
    one_line_error(p, f"(the last checkpoint is {tmp_path / 'out' / 'ckpt.pt'}, from step 2: "
                   "--init_from=resume continues from it)")


def test_torchrun_two_ranks_stay_identical_and_match_one_process(data_dir, tmp_path):
    # 2 ranks x 1 micro-batch vs 1 process x 2 accumulation steps: the same 128 tokens per step
    args = ["--max_iters=5", "--eval_interval=5", "--dropout=0.1"]
    p = train(data_dir, tmp_path / "ddp", *args,
              launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])
    assert "4 seqs x 16 tokens x 2 ranks x 1 accumulation step" in p.stdout
    per_rank = {}
    for line in p.stdout.splitlines():
        if ": weights sha256 " in line:
            rank, h = line.split(": weights sha256 ")
            per_rank[rank] = h.strip()
    assert set(per_rank) == {"rank 0", "rank 1"}
    assert per_rank["rank 0"] == per_rank["rank 1"]
    ddp = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)
    assert ddp["iter_num"] == 5 and digest(ddp["model"]) == per_rank["rank 0"]

    train(data_dir, tmp_path / "single", *args)
    single = torch.load(tmp_path / "single" / "ckpt.pt", weights_only=True)
    # the same batches and dropout masks: equal up to float summation order (which Adam amplifies
    # where gradients are ~0, hence the weights' atol; other batches would differ by ~lr=1e-2
    # everywhere)
    a, b = losses(tmp_path / "ddp"), losses(tmp_path / "single")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    assert a == pytest.approx(b, rel=1e-5)
    for k in single["model"]:
        torch.testing.assert_close(ddp["model"][k], single["model"][k], rtol=1e-3, atol=1e-3)


def test_torchrun_with_default_batches_matches_one_process(data_dir, tmp_path):
    # `torchrun --nproc_per_node=4 train.py` as typed: the per-process batch follows from
    # tokens_per_step (1,024 = 8 sequences of 128: 2 per rank) and the 4 ranks see exactly the
    # sequences one process sees
    args = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--num_senses=4", "--max_iters=2",
            "--eval_interval=2", "--eval_iters=4", "--log_interval=1", f"--data_dir={data_dir}",
            "--dataset=fake"]
    p = run("train.py", *args, f"--out_dir={tmp_path / 'ddp'}",
            launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"])
    assert "tokens per step 1,024 = 2 seqs x 128 tokens x 4 ranks x 1 accumulation step" in p.stdout
    assert "all 4 ranks hold identical weights" in p.stdout
    run("train.py", *args, f"--out_dir={tmp_path / 'single'}")
    a, b = losses(tmp_path / "ddp"), losses(tmp_path / "single")
    assert sorted(a) == [1, 2] and a == pytest.approx(b, rel=1e-5)


def test_an_error_under_torchrun_is_printed_once(data_dir, tmp_path):
    p = train(data_dir, tmp_path, "--tokens_per_step=100", check=False,
              launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])
    assert p.returncode != 0
    assert p.stderr.count("train.py: tokens_per_step=100 is not a multiple") == 1


def test_fine_tune_from_a_run_crops_block_size_and_resumes(tiny_run, data_dir, tmp_path):
    out, _ = tiny_run  # Backpack.from_pretrained takes a train.py out_dir
    # the architecture comes from the checkpoint (n_embd=64 here is ignored); a shorter block_size
    # crops wpe
    args = [f"--init_from={out}", "--block_size=8", "--n_embd=64", "--max_iters=4",
            "--eval_interval=2"]
    p = train(data_dir, tmp_path, *args)
    assert f"fine-tuning {out}" in p.stdout
    assert "block_size=8, n_layer=1, n_head=2, n_embd=32" in p.stdout
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["model_args"]["block_size"] == 8 and ckpt["model"]["wpe.weight"].shape == (8, 32)
    assert ckpt["origin"] == str(out)
    # n_embd not checked: not ours
    p = train(data_dir, tmp_path, *args[1:3], "--max_iters=6", "--init_from=resume")
    assert "step 6: train loss" in p.stdout
    one_line_error(train(data_dir, tmp_path / "x", f"--init_from={out}", "--block_size=32",
                         check=False),
                   "--block_size=32 is larger than", "block_size=16")


# -- clear errors ----------------------------------------------------------------------------------


def test_batch_size_is_a_maximum_and_the_split_follows(data_dir, tmp_path):
    # 128 tokens = 8 sequences of 16, at most 3 at once: 4 micro-batches of 2
    p = train(data_dir, tmp_path, "--batch_size=3", "--max_iters=1", "--eval_interval=1",
              "--eval_iters=1")
    assert "tokens per step 128 = 2 seqs x 16 tokens x 1 rank x 4 accumulation steps" in p.stdout


def test_settings_from_files_and_both_argument_forms(tmp_path):
    from settings import configure
    config = tmp_path / "c.py"
    config.write_text("import math\nlearning_rate = math.sqrt(1e-6)\nname = 'x'\n")
    defaults = dict(learning_rate=3e-3, name="", flag=False, steps=10, start="")
    s, given = configure(defaults, {}, [str(config), "--steps", "1e3", "--flag", "--start",
                                        "The old man", "--name=y"], "train.py")
    assert s == dict(learning_rate=1e-3, name="y", flag=True, steps=1000, start="The old man")
    assert given == s
    # left as they were
    assert defaults == dict(learning_rate=3e-3, name="", flag=False, steps=10, start="")
    s, _ = configure(defaults, {}, ["--flag", "false", "--start=--x", "--steps=2", "--steps", "3"],
                     "train.py")
    assert s["flag"] is False and s["start"] == "--x" and s["steps"] == 3  # the last value wins
    edits = dict(scale=[])  # a list collects every value: --scale a --scale b
    assert configure(edits, {}, ["--scale", "nurse:10=0", "--scale=ThinkPad:0=2"], "")[1] == {
        "scale": ["nurse:10=0", "ThinkPad:0=2"]}
    runs = dict(models=[], svg="")  # ... and takes several at once: --models out out-gpt2
    assert configure(runs, {}, ["--models", "out", "out-gpt2", "--svg", "c.svg", "--models=x"],
                     "")[1] == {"models": ["out", "out-gpt2", "x"], "svg": "c.svg"}
    for argv, message in [(["--steps"], "--steps needs a value"),
                          (["--steps", "ten"], "--steps expects an int"),
                          (["The old man"], "is neither a --key=value setting nor a config file")]:
        with pytest.raises(ValueError, match=message):
            configure(defaults, {}, argv, "")


def test_resume_with_another_architecture_is_refused(tiny_run, data_dir):
    out, _ = tiny_run
    one_line_error(train(data_dir, out, "--init_from=resume", "--n_embd=64", check=False),
                   "was trained with n_embd=32 (the config says 64)")


def test_config_files_parse_and_paper_recipes_divide():
    # every shipped config file names only known settings with the right types
    configs = sorted(glob.glob(os.path.join(REPO, "config", "*.py")))
    # finetune_senses.py's
    edits = [path for path in configs if os.path.basename(path).startswith("edit_")]
    configs = [path for path in configs if path not in edits]
    assert len(configs) >= 7 and edits
    p = run("train.py", *configs, "--help")
    assert "--tokens_per_step=" in p.stdout
    assert "--senses_per_example=" in run("finetune_senses.py", *edits, "--help").stdout
    # config/train_brown.py documents the defaults: it changes nothing
    assert run("train.py", "--help").stdout == run(
        "train.py", os.path.join(REPO, "config", "train_brown.py"), "--help").stdout
    for path in configs:
        settings = {}
        exec(open(path).read(), settings)
        # the paper's recipe
        if os.path.basename(path).startswith(("train_backpack_", "train_gpt2_")):
            assert settings["tokens_per_step"] == 524288
            assert 524288 % (settings["batch_size"] * settings["block_size"] * 4) == 0, path
    # the CPU comparison trains both models on the quickstart's data and schedule: only these
    # settings differ
    read = lambda name: {k: v for k, v in runpy.run_path(os.path.join(REPO, "config", name)).items()
                         if k[0] != "_"}
    brown = read("train_brown.py")
    for name, own in [("compare_brown_backpack.py", {"out_dir", "learning_rate", "max_iters"}),
                      ("compare_brown_gpt2.py", {"out_dir", "num_senses", "max_iters"})]:
        settings = read(name)
        assert settings.keys() == brown.keys(), name
        assert {k for k in brown if settings[k] != brown[k]} == own, name


# -- sample.py -------------------------------------------------------------------------------------


def test_sample_prints_text(tiny_run):
    out, _ = tiny_run
    p = run("sample.py", f"--out_dir={out}", "--start=The old man", "--num_samples=2",
            "--max_new_tokens=8", "--device=cpu")
    samples = p.stdout.split("---------------\n")
    assert len(samples) == 3
    assert all(s.startswith("The old man") and len(s) > 12 for s in samples[:2])


def test_sample_empty_and_too_long_prompts(tiny_run, tmp_path):
    out, _ = tiny_run
    p = run("sample.py", f"--out_dir={out}", "--start=", "--num_samples=1", "--max_new_tokens=4",
            "--device=cpu")
    assert "starting from <|endoftext|>" in p.stderr
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("word" + " word" * 39)  # 40 tokens, block_size is 16
    p = run("sample.py", f"--out_dir={out}", f"--start=FILE:{prompt}", "--num_samples=1",
            "--max_new_tokens=4", "--temperature=0", "--device=cpu")
    assert ("the prompt is 40 tokens, longer than the model's block_size=16; keeping its last 16"
            in p.stderr)


def test_unconditional_samples_do_not_print_the_end_of_text_token(tiny_run):
    out, _ = tiny_run
    p = run("sample.py", f"--out_dir={out}", "--num_samples=2", "--max_new_tokens=5",
            "--device=cpu")
    assert not any(s.startswith("<|endoftext|>") for s in p.stdout.split("---------------\n"))


def test_bench_runs_and_cached_generation_matches_uncached(tmp_path):
    # bench.py reads data/<dataset>/train.bin under the working directory
    os.makedirs(tmp_path / "data" / "fake")
    tokens = np.random.default_rng(0).integers(0, 50257, 5000, dtype=np.uint16)
    tokens.tofile(tmp_path / "data" / "fake" / "train.bin")
    p = run("bench.py", "--preset=micro", "--device=cpu", "--compile=0", "--dtype=float32",
            "--dataset=fake", "--batch_size=1", "--block_size=32", "--steps=1", "--warmup=1",
            "--compare", "--generate", "--gen_tokens=8", cwd=tmp_path)
    assert "Backpack" in p.stdout and "Transformer" in p.stdout and "tokens/s" in p.stdout
    assert "Backpack / Transformer training throughput:" in p.stdout
    assert "greedy outputs identical" in p.stdout, p.stdout
    # progress, phase by phase
    assert "warmup step 1 of 1" in p.stdout and "timing 1 steps" in p.stdout


def test_help_shows_each_setting_its_default_and_its_comment():
    out = run("train.py", "--help").stdout
    assert out.startswith("Train a Backpack language model")  # the script's docstring first
    assert ("  --eval_iters=16  [1, inf)\n      batches per loss estimate: always the same batches"
            in out)
    # a comment too long for its setting's line stands above it, and is shown all the same
    assert ("  --decay_lr='linear'  ('linear', 'cosine', 'constant')\n"
            "      'linear': warmup, then linear decay") in out
    # no comment, no line
    assert "  --log_interval=10  [1, inf)\n  --eval_only=False\n      estimate the losses" in out
    # "# -- model" heads its group of settings, and is not the comment of the first
    assert "  -- model\n  --n_layer=4  [1, inf)\n  --n_head=4" in out
