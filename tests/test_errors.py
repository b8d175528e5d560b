"""Bad input and faults, as a hostile but honest user makes them: every script ends with one line
on stderr that says what is wrong (no traceback, a non-zero exit), and nothing is lost. CASES is
the sweep:

    python -m pytest -q tests/test_errors.py

CPU, tiny files written under pytest's tmp_path. The table's cases run two at a time, each as
`python script.py ARGS` would, in a process forked from a server that has imported torch once
(CaseRunner): a second per case less than a fresh interpreter. The other tests start real
subprocesses."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backpack import Backpack, BackpackConfig
from conftest import REPO
from senses import PAGE_TEMPLATE

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--num_senses=4", "--block_size=16",
        "--batch_size=4", "--tokens_per_step=128", "--eval_iters=2", "--log_interval=1",
        "--warmup_iters=2", "--learning_rate=1e-2"]


# (not under torchrun: RANK, if set, must not silence an error)
def run(script, *args, env=None, cwd=REPO):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# A server, run as `python -c SERVER`, that imports what the scripts import (no torch op runs in it,
# so it forks safely), then per request forks a child that runs the script as
# `python script.py ARGS` would: its own argv, folder, environment, stdin /dev/null, stdout and
# stderr to files, sys.excepthook on an uncaught exception.
SERVER = r"""
import json, os, runpy, signal, sys, tempfile
sys.path.insert(0, sys.argv[1])
import numpy, torch, backpack, files, settings, pretrained, tokenizer, prepare, interventions
import senses, evaluate, finetune_senses
tokenizer.get_tokenizer()
for line in sys.stdin:
    job = json.loads(line)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(300)  # a case that hangs is killed, and fails
            os.chdir(job["cwd"])
            os.environ.update(job["env"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.argv = [job["script"], *job["args"]]
            runpy.run_path(job["script"], run_name="__main__")
            code = 0
        except SystemExit as e:
            code = (e.code if isinstance(e.code, int) else 0 if e.code is None
                    else print(e.code, file=sys.stderr) or 1)
        except BaseException:
            sys.excepthook(*sys.exc_info())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "stdout": texts[0],
                      "stderr": texts[1]}), flush=True)
"""


class CaseRunner:
    """run(script, *args, cwd=...) through a SERVER: a subprocess's result, a second sooner."""

    def __init__(self):
        self.server = subprocess.Popen([sys.executable, "-c", SERVER, REPO], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True,
                                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})

    def run(self, script, *args, cwd=REPO):
        job = {"script": os.path.join(REPO, script), "args": list(args), "cwd": str(cwd),
               "env": {"PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}}
        self.server.stdin.write(json.dumps(job) + "\n")
        self.server.stdin.flush()
        return SimpleNamespace(**json.loads(self.server.stdout.readline()))

    def close(self):
        self.server.stdin.close()
        self.server.wait(timeout=60)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad files for the cases, by name: {data} holds the datasets fake (good), empty, odd
    and bigids."""
    root = tmp_path_factory.mktemp("files")
    tokens = np.random.default_rng(0).integers(0, 50257, 20_000).astype(np.uint16)
    for name, data in (("fake", tokens), ("empty", tokens[:0]),
                       ("bigids", np.full(100, 60000, np.uint16)),
                       ("padids", np.concatenate([tokens[:500], np.full(1, 50260, np.uint16)]))):
        os.makedirs(root / "data" / name)
        for split in ("train", "val"):
            data.tofile(root / "data" / name / f"{split}.bin")
    os.makedirs(root / "data" / "odd")
    for split in ("train", "val"):
        (root / "data" / "odd" / f"{split}.bin").write_bytes(b"\x01" * 1001)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\tcoffee\t5\n".encode("latin-1"))
    (root / "afile").write_text("a file, not a folder")
    (root / "lambada.jsonl").write_text('{"text": "a passage"}\n{"txt": "no text field"}\n')
    (root / "bad_config.py").write_text("n_embd = 64 +\n")
    (root / "typo_config.py").write_text("n_embd = 64\nbatchsize = 8\n")
    torch.manual_seed(0)
    model = Backpack(BackpackConfig(block_size=32, n_layer=1, n_head=2, n_embd=16, num_senses=4))
    ckpt = {"model_args": dataclasses.asdict(model.config), "model": model.state_dict(),
            "optimizer": {}, "iter_num": 0, "best_val_loss": 9.9, "config": {}}
    for name, content in (("model", ckpt), ("notckpt", {"weights": torch.ones(3)}),
                          ("nobest", {**ckpt, "best_val_loss": None}),
                          ("renamed",
                           {**ckpt, "model": {"x" + k: v for k, v in model.state_dict().items()}}),
                          ("twomodels", ckpt)):
        os.makedirs(root / name)
        torch.save(content, root / name / "ckpt.pt")
    torch.save({}, root / "twomodels" / "pytorch_model.bin")
    os.makedirs(root / "dirckpt" / "ckpt.pt")
    (root / "systemexit.py").write_text("raise SystemExit\n")
    (root / "none_config.py").write_text("out_dir = None\n")
    os.makedirs(root / "garbage")
    (root / "garbage" / "ckpt.pt").write_bytes(b"not a checkpoint at all")
    gpt = Backpack(BackpackConfig(block_size=32, n_layer=1, n_head=2, n_embd=16, num_senses=0))
    os.makedirs(root / "transformer")
    torch.save({**ckpt, "model_args": dataclasses.asdict(gpt.config), "model": gpt.state_dict()},
               root / "transformer" / "ckpt.pt")
    for name, text in (
            ("ft_empty", ""),
            ("ft_malformed", '{"prefix": "The nurse said", "suffix1": " he"\n'),
            ("ft_nokey", '{"prefix": "The nurse said", "suffix1": " he"}\n'),
            ("ft_emptysuffix", '{"prefix": "The capital of France is", "suffix": ""}\n'),
            ("ft_long", '{"prefix": "' + "the old man " * 12 + '", "suffix": " Paris"}\n'),
            ("ft_mixed", '{"prefix": "a", "suffix": " b"}\n'
                         '{"prefix": "a", "suffix1": " b", "suffix2": " c"}\n'),
            ("ft_pair", '{"prefix": "My nurse said that", "suffix1": " he", "suffix2": " she"}\n'),
            ("ft_single", '{"prefix": "The capital of France is", "suffix": " Paris"}\n')):
        (root / f"{name}.jsonl").write_text(text)
    from pretrained import save_pretrained
    # the released layout, then spoiled
    for name, change in (("hugecfg", {"n_layer": 10 ** 30}), ("cfgnotjson", None),
                         ("bothlayouts", None), ("sthuge", None)):
        save_pretrained(model, root / name)
        if change:
            config = json.loads((root / name / "config.json").read_text())
            (root / name / "config.json").write_text(json.dumps({**config, **change}))
    (root / "cfgnotjson" / "config.json").write_text("{not json")
    (root / "bothlayouts" / "model.safetensors").write_bytes(b"")
    os.remove(root / "sthuge" / "pytorch_model.bin")
    (root / "sthuge" / "model.safetensors").write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    for name, content in (
            ("intweights", {**ckpt, "model": {k: v.long() for k, v in model.state_dict().items()}}),
            ("nanweights", {**ckpt, "model": {k: v * float("nan")
                                              for k, v in model.state_dict().items()}}),
            ("noheads", {**ckpt, "model_args": {k: v for k, v in ckpt["model_args"].items()
                                                if k != "n_head"}}),
            ("tensorckpt", torch.ones(3))):
        os.makedirs(root / name)
        torch.save(content, root / name / "ckpt.pt")
    os.makedirs(root / "binfolder" / "pytorch_model.bin")
    os.makedirs(root / "dangling")
    os.symlink(root / "nowhere", root / "dangling" / "ckpt.pt")
    (root / "empty.txt").write_text("  \n")
    os.mkfifo(root / "pipe.txt")
    for name, change in (("cfgnohead", "n_head"), ("cfgstr", {"n_layer": "1"}),
                         ("cfgextra", {"unknown_field": 1})):
        save_pretrained(model, root / name)
        config = json.loads((root / name / "config.json").read_text())
        config = ({k: v for k, v in config.items() if k != change} if isinstance(change, str)
                  else {**config, **change})
        (root / name / "config.json").write_text(json.dumps(config))
    os.symlink(root / "model", root / "linked")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "fake.txt.gz").write_bytes(b"not gzip at all")
    # 200 kB, no newline
    (root / "bigline.txt").write_text("all work and no play makes a long line " * 5_000)
    os.makedirs(root / "data" / "oneid")
    for split in ("train", "val"):
        np.full(1000, 464, np.uint16).tofile(root / "data" / "oneid" / f"{split}.bin")
    os.makedirs(root / "texts" / "sub")
    (root / "texts" / "one.txt").write_text("The first document, in plain words.\n")
    (root / "texts" / "sub" / "two.txt").write_text("The second one, one folder down.\n")
    (root / "texts" / "notes.md").write_text("not a .txt file: left out\n")
    os.makedirs(root / "badrun")
    torch.save({"config": {"tokens_per_step": 128}}, root / "badrun" / "ckpt.pt")
    (root / "badrun" / "metrics.jsonl").write_text('{"iter": 10, "loss": 9.0}\n'
                                                   '{"iter": "20", "loss": 8.0}\n')
    os.makedirs(root / "goodrun")
    torch.save({"config": {"tokens_per_step": 128}}, root / "goodrun" / "ckpt.pt")
    (root / "goodrun" / "metrics.jsonl").write_text('{"iter": 10, "loss": 9.0}\n'
                                                    '{"iter": 20, "loss": 8.0}\n')
    os.makedirs(root / "latinrun")
    torch.save({"config": {"tokens_per_step": 128}}, root / "latinrun" / "ckpt.pt")
    (root / "latinrun" / "metrics.jsonl").write_bytes(
        b'{"iter": 10, "loss": 9.0, "note": "caf\xe9"}\n')
    (root / "lambada_array.jsonl").write_text('["not", "a", "passage"]\n')
    (root / "page.html").write_text(
        "<!-- The page of `python senses.py --context TEXT --html FILE` -->\nOLD PAGE\n")
    names = ("data", "latin1.txt", "afile", "lambada.jsonl", "bad_config.py", "typo_config.py",
             "model", "notckpt", "renamed", "garbage", "nobest", "twomodels", "dirckpt",
             "systemexit.py", "none_config.py", "transformer", "ft_empty.jsonl",
             "ft_malformed.jsonl", "ft_nokey.jsonl", "ft_emptysuffix.jsonl", "ft_long.jsonl",
             "ft_mixed.jsonl", "ft_pair.jsonl", "ft_single.jsonl", "badrun", "latinrun",
             "lambada_array.jsonl", "page.html", "hugecfg", "cfgnotjson", "bothlayouts", "sthuge",
             "intweights", "nanweights", "noheads", "tensorckpt", "binfolder", "dangling",
             "empty.txt", "pipe.txt", "goodrun", "cfgnohead", "cfgstr", "cfgextra", "linked",
             "binary.txt", "fake.txt.gz", "bigline.txt", "texts")
    return ({name.split(".")[0]: str(root / name) for name in names}
            | {"tmp": str(root), "template": PAGE_TEMPLATE})


FAKE = ["--data_dir={data}", "--dataset=fake"]
# finetune_senses.py
EDIT = ["--init_from={model}", "--background={data}/fake/val.bin", "--out_dir={tmp}/edited"]
# (script, arguments ({name} from the files fixture), a fragment of the one line it must print)
CASES = [
    # would train uphill
    ("train.py", ["--grad_clip=-1"], "--grad_clip must be in [0, inf), got -1"),
    ("train.py", ["--learning_rate=-1"], "--learning_rate must be in (0, inf), got -1"),
    ("train.py", ["--beta1=1.5"], "--beta1 must be in [0, 1), got 1.5"),
    ("train.py", ["--dropout=1"], "--dropout must be in [0, 1), got 1.0"),
    ("train.py", ["--batch_size=0"], "--batch_size must be in [1, inf), got 0"),
    ("train.py", ["--seed=-1"], "--seed must be in [0, 1e18], got -1"),
    ("train.py", ["--out_dir="], "--out_dir is empty"),
    ("train.py", ["--decay_lr=cos"],
     "--decay_lr must be one of linear, cosine, constant, got 'cos'"),
    ("train.py", ["--dtype=fp8"], "--dtype must be one of auto, float32, bfloat16, float16"),
    ("train.py", ["--device=gpu"], "--device must be cpu, cuda, cuda:N or mps, not 'gpu'"),
    ("train.py", ["--lerning_rate=1e-3"],
     "unknown config key --lerning_rate (did you mean --learning_rate?)"),
    ("train.py", ["--max_iters=abc"], "--max_iters expects an int, got 'abc'"),
    ("train.py", ["--learning_rate"], "--learning_rate needs a value"),
    ("train.py", ["{bad_config}"], "error in config file"),
    ("train.py", ["{typo_config}"],
     "typo_config.py sets unknown config key batchsize (did you mean batch_size?)"),
    ("train.py", ["{tmp}/missing.py"], "missing.py: No such file or directory"),
    ("train.py", ["The old man"], "is neither a --key=value setting nor a config file"),
    ("train.py", [*FAKE, "--n_embd=30", "--n_head=4"], "n_embd=30 must be divisible by n_head=4"),
    ("train.py", [*FAKE, "--tokens_per_step=100"],
     "tokens_per_step=100 is not a multiple of block_size x processes = 128 x 1 = 128; "
     "use e.g. 128"),
    ("train.py", ["--data_dir={data}", "--dataset=nothing"],
     "{data}/nothing/train.bin not found; "
     "prepare the data first (python prepare.py --dataset=nothing)"),
    ("train.py", ["--data_dir={data}", "--dataset=empty"],
     "train.bin holds 0 token ids; a sequence of block_size=128"),
    ("train.py", ["--data_dir={data}", "--dataset=odd"],
     "is not a file of uint16 token ids (its size, 1,001 bytes, is"),
    ("train.py", ["--data_dir={data}", "--dataset=bigids", "--block_size=16"],
     "holds token id 60000, an id of another"),
    ("train.py", ["--data_dir={data}", "--dataset=padids", "--block_size=16"],
     "holds token id 50260, a padding id"),
    ("train.py", ["--init_from=resume", "--out_dir={tmp}/none"],
     "--init_from=resume, but {tmp}/none/ckpt.pt does"),
    ("train.py", ["--init_from=resume", "--out_dir={notckpt}"], "is not a train.py checkpoint"),
    ("train.py", ["--init_from=resume", "--out_dir={garbage}"], "cannot read {garbage}/ckpt.pt"),
    ("train.py", [*FAKE, "--init_from=resume", "--out_dir={renamed}", "--n_layer=1", "--n_head=2",
                  "--n_embd=16", "--num_senses=4", "--block_size=32"],
     "does not fit its own model_args"),
    ("train.py", [*FAKE, "--init_from={tmp}/nothing"],
     "is no file or folder, nor a published model"),
    ("train.py", [*FAKE, "--init_from={model}", "--block_size=64"],
     "--block_size=64 is larger than"),
    ("train.py", [*FAKE, *TINY, "--out_dir={afile}/out"], "Not a directory"),  # a write that fails
    ("train.py", ["--data_dir={afile}"], "Not a directory"),  # preparing Brown: a write that fails
    ("train.py", ["{systemexit}"], "error in config file"),
    ("train.py", ["{none_config}"], "out_dir expects a str, got None"),
    # not the next option as its value
    ("train.py", ["--out_dir", "--max_iters=3"], "--out_dir needs a value"),
    # the script's own names are no settings
    ("train.py", ["--setting_names=x"], "unknown config key --setting_names"),
    ("train.py", ["--init_from=resume", "--out_dir={nobest}"], "is not a train.py checkpoint"),
    ("train.py", [*FAKE, *TINY, "--out_dir={dirckpt}"], "ckpt.pt is a folder"),
    ("train.py", [*FAKE, "--decay_lr=cosine", "--min_lr=1"],
     "--min_lr=1.0 is above --learning_rate"),
    ("train.py", [*FAKE, *TINY, "--learning_rate=1e30", "--max_iters=5",
                  "--out_dir={tmp}/diverged"],
     "training diverged; lower --learning_rate"),
    ("train.py", ["--device=mps"], "no MPS device"),
    ("sample.py", ["--out_dir={model}", "--temperature=nan"],
     "--temperature expects a float, got 'nan'"),
    ("sample.py", ["--out_dir={model}", "--temperature=-1"], "--temperature must be in [0, inf)"),
    ("sample.py", ["--out_dir={model}", "--top_k=-5"], "--top_k must be in [0, inf), got -5"),
    ("sample.py", ["--out_dir={model}", "--top_p=0"], "--top_p must be in (0, 1], got 0"),
    ("sample.py", ["--out_dir={model}", "--top_p=1.5"], "--top_p must be in (0, 1], got 1.5"),
    ("sample.py", ["--out_dir={model}", "--num_samples=0"], "--num_samples must be in [1, inf)"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:{latin1}"], "latin1.txt is not UTF-8 text"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:{tmp}/missing.txt"],
     "missing.txt: No such file or directory"),
    ("sample.py", ["--out_dir={model}", "--scale=the:3=inf"],
     "--scale 'the:3=inf': expected WORD:SENSE=FACTOR"),
    ("sample.py", ["--out_dir={model}", "--scale=the:9=0"],
     "sense 9 is out of range: this model has senses 0..3"),
    ("sample.py", ["--out_dir={model}", "--edit=MacBook:Apple->Hewlettpackardish"],
     "must be one token"),
    ("sample.py", ["--out_dir={model}", "--topic=food", "--strength=4"],
     "--strength must be in [1, 3], got 4"),
    ("sample.py", ["--out_dir={tmp}/none"], "is no file or folder, nor a published model"),
    ("sample.py", ["--out_dir={tmp}"],
     "{tmp}/ has no ckpt.pt, pytorch_model.bin or model.safetensors; "
     "train a model with `python train.py`"),
    ("sample.py", ["--init_from={garbage}/ckpt.pt"], "cannot read {garbage}/ckpt.pt"),
    ("sample.py", ["--out_dir={twomodels}"],
     "holds both ckpt.pt and pytorch_model.bin: give the path"),
    ("sample.py", ["--EOT=0"], "unknown config key --EOT"),
    ("senses.py", ["--out_dir={model}"],
     "give one of --word WORD, --context TEXT, --similarity FILE, --bias or"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={tmp}/none.bin"],
     "none.bin not found: --health measures"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={latin1}"],
     "--health wants a prepared split, a .bin"),
    ("senses.py", ["--out_dir={model}", "--word", "science", "--data=x.bin"],
     "--data is not a setting of --word"),
    ("senses.py", ["--out_dir={model}", "--word", "science", "--top", "0"],
     "--top must be in [1, inf), got 0"),
    ("senses.py", ["--out_dir={model}", "--word", ""], "the word is empty"),
    ("senses.py", ["--out_dir={model}", "--bias", "--sense", "9"], "sense 9 is out of range"),
    ("senses.py", ["--out_dir={model}", "--bias", "--factor", "inf"],
     "--factor expects a float, got 'inf'"),
    ("senses.py", ["--out_dir={model}", "--context", "The nurse", "--position", "5"],
     "--position 5 is outside"),
    ("senses.py", ["--out_dir={model}", "--context", "The nurse", "--target", "nurses said"],
     "must be one token"),
    ("senses.py", ["--out_dir={model}", "--similarity", "{latin1}"],
     "latin1.txt is not UTF-8 text"),
    ("senses.py", ["--out_dir={model}", "--similarity", "{afile}"],
     "need at least 2 word1<TAB>word2<TAB>score"),
    ("senses.py", ["--out_dir={model}", "--word", "--bias"], "--word needs a value"),
    ("senses.py", ["--out_dir={model}", "--word", "science", "--target", " she"],
     "--target is not a setting of --word"),
    ("prepare.py", ["--val_fraction=1"], "--val_fraction must be in (0, 1), got 1.0"),
    ("prepare.py", ["--num_proc=0"], "--num_proc must be in [1, inf), got 0"),
    ("prepare.py", ["--dataset=wikipedia"], "unknown dataset 'wikipedia'"),
    ("prepare.py", ["--dataset=openwebtext", "--shards=x"],
     "--shards wants numbers like 0,1 or 0-4"),
    ("prepare.py", ["--dataset=openwebtext", "--shards=21"], "--shards must be between 0 and 20"),
    ("prepare.py", ["--files={tmp}/none/*.txt", "--dataset=x"], "no such file or folder"),
    ("prepare.py", ["--files={tmp}"], "--files needs --dataset=NAME"),  # not into data/brown
    ("prepare.py", ["--files={tmp}", "--dataset=../up"], "--dataset must be a plain folder name"),
    ("prepare.py", ["--data_dir={afile}"], "Not a directory"),
    ("prepare.py", ["--data_dir={data}", "--dataset=fake", "--files={latin1}"],
     "already holds a dataset"),  # no loss
    ("prepare.py", ["--shards=3"], "--shards is a setting of --dataset=openwebtext"),
    ("prepare.py", ["--dataset=openwebtext", "--base_url=notaurl", "--data_dir={tmp}/owt"],
     "is not a web address"),
    ("evaluate.py", ["--models", "{model}", "--task=perplexity"],
     "--task must be one of loss, lambada"),
    ("evaluate.py", ["--models", "{model}", *FAKE[:1], "--dataset=nothing"],
     "nothing/val.bin not found; prepare it"),
    ("evaluate.py", ["--models", "{model}", "--file={latin1}"], "latin1.txt is not UTF-8 text"),
    ("evaluate.py", ["--models", "{model}", *FAKE, "--stride=33"],
     "--stride must be at most the models' block_size (32)"),
    ("evaluate.py", ["--models", "{model}", "--dtype=fp16"],
     "--dtype must be one of auto, float32, bfloat16, float16"),
    ("evaluate.py", ["--models", "{model}", "--file={afile}", "--split=train"],
     "--split does not go with --file"),
    ("evaluate.py", ["--models", "{model}", "--lambada={afile}"],
     "--lambada does not go with --task=loss"),
    ("evaluate.py", ["--models", "{model}", "--task=lambada", "--lambada={lambada}"],
     "line 2: expected a JSON object with a"),
    ("evaluate.py", ["--models", "{model}", "--task=lambada", "--lambada={tmp}/none"],
     "none: No such file"),
    ("evaluate.py", ["--models", "{model}", "--curves", "{model}"],
     "--models does not go with --curves"),
    ("evaluate.py", ["--curves", "{model}"], "metrics.jsonl: No such file or directory"),
    ("evaluate.py", ["--curves", "{model}", "--stride=4"], "--stride does not go with --curves"),
    ("evaluate.py", ["--models", "{model}", "--svg=x.svg"], "--svg does not go with --task=loss"),
    ("evaluate.py", ["--models", "{model}", "{tmp}/none"],
     "none is no file or folder, nor a published model"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_empty}"],
     "ft_empty.jsonl holds no examples: write one JSON"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_malformed}"],
     "ft_malformed.jsonl, line 1: not a JSON object"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_nokey}"],
     'ft_nokey.jsonl, line 1: no "suffix2" string'),
    ("finetune_senses.py", [*EDIT, "--examples={ft_emptysuffix}"],
     '"suffix" is empty; it is the text to make likely'),
    ("finetune_senses.py", [*EDIT, "--examples={ft_long}"],
     "are 38 tokens, more than the model's block_size=32"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_mixed}"],
     "line 2: every line of a file must have the same suffix"),
    ("finetune_senses.py", [*EDIT, "--examples={latin1}"], "latin1.txt is not UTF-8 text"),
    ("finetune_senses.py", [*EDIT, "--examples={tmp}/none.jsonl"],
     "none.jsonl: No such file or directory"),
    ("finetune_senses.py", [*EDIT, "--init_from={transformer}", "--examples={ft_pair}"],
     "has no senses (num_senses=0: a matched Transformer); --method=full finetunes it"),
    ("finetune_senses.py", [*EDIT, "--max_degradation=-1e-4"],
     "--max_degradation must be in [0, inf), got -0.0001"),
    ("finetune_senses.py", [*EDIT, "--background_weight=-1000"],
     "--background_weight must be in [0, inf), got -1000"),
    ("finetune_senses.py", [*EDIT, "--kl_weight=nan"], "--kl_weight expects a float, got 'nan'"),
    ("finetune_senses.py", [*EDIT, "--method=lora"],
     "--method must be one of senses, full, got 'lora'"),
    ("finetune_senses.py", [*EDIT, "--loss=good", "--threshold=2"],
     "--threshold=2 cannot be met: --loss=good wants a"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_pair}", "--eval={ft_pair}", "--loss=good"],
     "holds pairs (suffix1, suffix2), and --loss=good wants single suffixes: "
     "use --loss=balance or"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_pair}", "--eval={ft_single}"],
     "--eval={ft_single} holds single"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_pair}", "--eval={ft_pair}",
                            "--background={tmp}/none.bin"],
     "none.bin not found; prepare it (python prepare.py) or give --background=FILE"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_pair}", "--eval={ft_pair}",
                            "--background={data}/odd/val.bin"],
     "is not a file of uint16 token ids (its size, 1,001 bytes, is odd)"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_pair}", "--eval={ft_pair}",
                            "--background={afile}"],
     "afile holds 6 tokens; the background needs at least 66 (two windows of block_size + 1)"),
    ("finetune_senses.py", [*EDIT[:2], "--out_dir={afile}"],
     "--out_dir={afile} is a file, not a folder"),
    ("finetune_senses.py", [*EDIT[:2], "--out_dir={nobest}"],
     "nobest/ckpt.pt exists and is not an edited model of"),
    ("finetune_senses.py", [*EDIT[:2], "--out_dir={model}/."],
     "is the folder of --init_from: the edit would replace"),
    ("finetune_senses.py", ["--init_from={model}/ckpt.pt", *EDIT[1:2], "--out_dir={model}"],
     "is the folder of"),
    ("senses.py", ["--out_dir={model}", "--context", "", "--html", "{tmp}/p.html"],
     "--context is empty"),
    ("senses.py", ["--out_dir={model}", "--word", " ", "--html", "{tmp}/p.html"],
     "the word is empty"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html="],
     "--html is empty: give the page's file name"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html", "{afile}"],
     "exists and is no page of senses.py"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html", "{model}/ckpt.pt"],
     "is no page of senses.py"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html", "{tmp}/"],
     "names a folder: give a file name"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html", "{template}"],
     "is the page template: write"),
    ("senses.py", ["--out_dir={model}", "--word", "nurse", "--subword", "1", "--html",
                   "{tmp}/p.html"],
     "--subword is not a setting of --html: the page shows every subword"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--target", " x", "--html",
                   "{tmp}/p.html"],
     "--target is not a setting of --html"),
    ("senses.py", ["--out_dir={model}", "--context", "the " * 40, "--html", "{page}"],
     "the text is 41 tokens"),
    ("senses.py", ["--out_dir={model}", "--context=\udcff\udcfeab"], "--context is not UTF-8 text"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={data}/padids/val.bin"],
     "holds token id 50260, a padding"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={data}/odd/val.bin"],
     "is not a file of uint16 token ids"),
    ("senses.py", ["--out_dir={model}", "--health", "--data="], "--data is empty"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:"], "--start=FILE: needs a file name"),
    ("evaluate.py", ["--models", "{model}", "--data_dir={data}", "--dataset=padids"],
     "holds token id 50260"),
    ("evaluate.py", ["--models", "{model}", "--data_dir={data}", "--dataset=odd"],
     "its size, 1,001 bytes, is odd"),
    ("evaluate.py", ["--curves", "{badrun}", "--svg={tmp}/c.svg"],
     "line 2: \"iter\" is '20', not a step number"),
    ("evaluate.py", ["--curves", "{latinrun}"], "latinrun/metrics.jsonl is not UTF-8 text"),
    ("evaluate.py", ["--models", "{model}", "--task=lambada", "--lambada={lambada_array}"],
     "line 1: expected a JSON"),
    ("sample.py", ["--init_from={hugecfg}"],
     "its config says n_layer=1000000000000000000000000000000, but the file holds"),
    ("sample.py", ["--init_from={cfgnotjson}"], "cfgnotjson/config.json is not JSON"),
    ("sample.py", ["--init_from={bothlayouts}"],
     "holds both model.safetensors and pytorch_model.bin: give the path"),
    ("sample.py", ["--init_from={sthuge}"],
     "its header size (1,099,511,627,776 bytes) does not fit in the file"),
    ("sample.py", ["--init_from={intweights}"],
     "its tensor wte.weight is int64, not floating point"),
    ("sample.py", ["--init_from={nanweights}"], "holds nan or inf (a diverged run?)"),
    ("sample.py", ["--init_from={noheads}"], "its model_args lack n_head"),
    ("sample.py", ["--init_from={tensorckpt}"],
     "it holds a Tensor, not a checkpoint's dict of tensors"),
    ("sample.py", ["--init_from={binfolder}"], "binfolder/pytorch_model.bin is not a file"),
    ("sample.py", ["--init_from={dangling}"], "dangling/ckpt.pt is a link to nothing"),
    ("evaluate.py", ["--models", "{nanweights}"], "holds nan or inf"),
    ("evaluate.py", ["--curves", "{goodrun}", "--svg={tmp}"], "is a folder, not a file"),
    ("prepare.py", ["--files={empty},{afile}", "--dataset=spaces"],
     "empty.txt holds no text: remove it from --files"),
    ("prepare.py", ["--files={pipe},{afile}", "--dataset=piped"],
     "pipe.txt is not a regular file (a pipe, a device?)"),
    ("train.py", [*FAKE, "--out_dir={afile}"], "--out_dir={afile} is a file, not a folder"),
    ("train.py", ["--warmup_iters=-1"], "--warmup_iters must be in [0, inf), got -1"),
    ("train.py", ["--tokens_per_step=0"], "--tokens_per_step must be in [1, inf), got 0"),
    ("train.py", ["--num_senses=-1"], "--num_senses must be in [0, inf), got -1"),
    ("train.py", ["--n_layer=0"], "--n_layer must be in [1, inf), got 0"),
    ("train.py", ["--eval_iters=0"], "--eval_iters must be in [1, inf), got 0"),
    ("train.py", [*FAKE, "--n_embd=32", "--n_head=2", "--num_senses=5"],
     "must be divisible by n_head=2 and by num_senses=5"),
    ("sample.py", ["--out_dir={model}", "--top_p=-0.1"], "--top_p must be in (0, 1], got -0.1"),
    ("sample.py", ["--out_dir={model}", "--top_p=True"], "--top_p expects a float, got True"),
    ("sample.py", ["--out_dir={model}", "--dtype=float64"],
     "--dtype must be one of auto, float32, bfloat16, float16"),
    ("sample.py", ["--out_dir={model}", "--max_new_tokens=-1"],
     "--max_new_tokens must be in [0, inf), got -1"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:{binary}"], "binary.txt is not UTF-8 text"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:{tmp}"], "Is a directory"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:{fake}"],
     "cannot read {fake}: Not a gzipped file"),
    ("sample.py", ["--init_from={transformer}", "--scale=the:1=0"],
     "--scale, --edit and --topic edit senses: this model"),
    ("sample.py", ["--init_from={cfgnohead}"],
     "'n_head' is missing from its config.json or checkpoint"),
    ("sample.py", ["--init_from={cfgstr}"], "BackpackConfig: want int sizes >= 1"),
    ("sample.py", ["--init_from="], "--init_from is empty"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html"], "--html needs a value"),
    ("senses.py", ["--out_dir={model}", "--bias", "--html", "{tmp}/p.html"],
     "--html is not a setting of --bias"),
    ("senses.py", ["--out_dir={model}", "--similarity", "{afile}", "--html", "{tmp}/p.html"],
     "--html is not a setting of --similarity"),
    ("senses.py", ["--out_dir={model}", "--health", "--html", "{tmp}/p.html"],
     "--html is not a setting of --health"),
    ("senses.py", ["--init_from={transformer}", "--context", "hi", "--html", "{tmp}/p.html"],
     "has no senses"),
    ("senses.py", ["--init_from={transformer}", "--health"],
     "has no senses (num_senses=0: a matched Transformer)"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={tmp}"],
     "--health wants a prepared split, a .bin file"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={data}/bigids/val.bin"],
     "holds token id 60000"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={data}/empty/val.bin"],
     "holds 0 token ids; a window of"),
    ("senses.py", ["--out_dir={model}", "--context", "the " * 40],
     "--context is 41 tokens, more than the model's"),
    ("evaluate.py", ["--curves", "{goodrun}", "--svg="], "--svg is empty"),
    ("evaluate.py", ["--curves", "{model}/."], "metrics.jsonl: No such file or directory"),
    ("evaluate.py", ["--models", "{tensorckpt}", "--file={afile}"],
     "it holds a Tensor, not a checkpoint's dict"),
    ("evaluate.py", ["--models", "{model}", "--file={binary}"], "binary.txt is not UTF-8 text"),
    ("evaluate.py", ["--models", "{model}", "--batch_size=0"],
     "--batch_size must be in [1, inf), got 0"),
    ("prepare.py", ["--files={texts}", "--dataset=/abs"], "--dataset must be a plain folder name"),
    ("prepare.py", ["--files={texts}", "--dataset=.."], "--dataset must be a plain folder name"),
    ("prepare.py", ["--files=,", "--dataset=x"], "--files names no file"),
    ("prepare.py", ["--files={tmp}/*.nomatch", "--dataset=x"],
     "no such file or folder, and no file matches it"),
    ("prepare.py", ["--files={binary},{afile}", "--dataset=bin"], "binary.txt is not UTF-8 text"),
    ("prepare.py", ["--files={fake},{afile}", "--dataset=gz"], "Not a gzipped file"),
    ("prepare.py", ["--files={afile}", "--dataset=one"], "need at least 2 documents"),
    ("prepare.py", ["--data_dir="], "--data_dir is empty"),
    ("finetune_senses.py", [*EDIT, "--examples={afile}"], "afile, line 1: not a JSON object"),
    ("finetune_senses.py", [*EDIT, "--measure_windows=0"],
     "--measure_windows must be in [1, inf), got 0"),
    ("finetune_senses.py", [*EDIT, "--senses_per_example=0"],
     "--senses_per_example must be in [1, inf), got 0"),
    ("finetune_senses.py", [*EDIT, "--batch_size=0"], "--batch_size must be in [1, inf), got 0"),
    ("finetune_senses.py", [*EDIT, "--epochs=-1"], "--epochs must be in [0, inf), got -1"),
    ("finetune_senses.py", [*EDIT, "--threshold=-1"], "--threshold must be in [0, inf), got -1"),
    ("finetune_senses.py", [*EDIT, "--loss=good-v-bad", "--examples={ft_single}",
                            "--eval={ft_single}"],
     "holds single suffixes, and --loss=good-v-bad wants pairs"),
    ("finetune_senses.py", [*EDIT, "--init_from={nanweights}"], "holds nan or inf"),
    ("finetune_senses.py", [*EDIT, "--examples={ft_pair}", "--eval={ft_pair}",
                            "--background={binary}"],
     "binary.txt is not UTF-8 text"),
    ("bench.py", ["--device=cpu", "--batch_size=0"], "--batch_size must be in [1, inf), got 0"),
    ("bench.py", ["--device=cpu", "--steps=0"], "--steps must be in [1, inf), got 0"),
    ("bench.py", ["--device=cpu", "--gen_tokens=0"], "--gen_tokens must be in [1, inf), got 0"),
    ("bench.py", ["--preset=huge"], "--preset must be one of micro, mini, small"),
    ("bench.py", ["--dataset=nothing", "--device=cpu"], "data/nothing/train.bin not found"),
    ("bench.py", ["--device=cpu", "--train=False"], "nothing to measure"),
    ("bench.py", ["--device=cpu", "--preset=micro", "--dataset=empty"],
     "holds 0 token ids; a batch of block_size=512"),
]
if not torch.cuda.is_available():
    CASES += [("train.py", ["--device=cuda"],
               "--device=cuda, but this PyTorch has no CUDA device; use --device=cpu"),
              ("sample.py", ["--out_dir={model}", "--device=cuda"], "no CUDA device"),
              ("evaluate.py", ["--models", "{model}", "--device=cuda"], "no CUDA device"),
              # a GPU-sized default: refused without --device=cpu
              ("bench.py", [], "there is no GPU here")]


# (script, arguments, a fragment of its output): odd but valid input that must give the right result
RIGHT = [
    ("senses.py", ["--out_dir={model}", "--context", "Hello", "--html", "{tmp}/one.html"],
     "wrote {tmp}/one.html"),
    ("senses.py", ["--out_dir={model}", "--context", "<|endoftext|>", "--html", "{tmp}/eot.html"],
     "wrote"),
    ("senses.py", ["--out_dir={model}", "--context", " the" * 32, "--html", "{tmp}/long.html"],
     "wrote"),
    ("senses.py", ["--out_dir={model}", "--context", "</script><script>alert(1)</script>", "--html",
                   "{tmp}/xss.html"], "wrote"),  # inert: test_page.py checks the page in a browser
    ("senses.py", ["--out_dir={model}", "--context", "café 😀 日本語\tnaïve", "--html",
                   "{tmp}/utf.html"],
     "wrote"),
    ("senses.py", ["--out_dir={model}", "--word", "<|endoftext|>", "--html", "{tmp}/word.html"],
     "wrote"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html", "{tmp}/new/deeper/p.html"],
     "wrote"),
    ("senses.py", ["--out_dir={model}", "--context", "hi", "--html", "{page}.again"], "wrote"),
    ("senses.py", ["--out_dir={model}", "--health", "--data={data}/oneid/val.bin"],
     "only 1 distinct tokens"),
    ("senses.py", ["--out_dir={model}", "--word", "<|endoftext|>"], "subwords"),
    ("sample.py", ["--out_dir={model}", "--top_p=1", "--max_new_tokens=3"], "---------------"),
    ("sample.py", ["--out_dir={model}", "--top_p=1e-12", "--max_new_tokens=3", "--num_samples=1"],
     "-----"),
    ("sample.py", ["--out_dir={model}", "--top_k=1", "--top_p=0.5", "--max_new_tokens=3"],
     "---------------"),
    ("sample.py", ["--out_dir={model}", "--temperature=0", "--top_p=0.01", "--max_new_tokens=3"],
     "-----"),
    ("sample.py", ["--out_dir={model}", "--temperature=1e-30", "--max_new_tokens=3"],
     "---------------"),
    ("sample.py", ["--out_dir={model}", "--max_new_tokens=0", "--start=Hello"], "Hello"),
    ("sample.py", ["--out_dir={model}", "--start=<|endoftext|>", "--max_new_tokens=3"],
     "---------------"),
    ("sample.py", ["--out_dir={model}", "--start=FILE:{bigline}", "--max_new_tokens=2"],
     "keeping its last 32"),
    # a symlinked folder
    ("sample.py", ["--init_from={linked}", "--max_new_tokens=2"], "---------------"),
    # a field it does not use
    ("sample.py", ["--init_from={cfgextra}", "--max_new_tokens=2"], "---------------"),
    ("sample.py", ["--init_from={cfgextra}/pytorch_model.bin", "--max_new_tokens=2"],
     "---------------"),
    ("prepare.py", ["--files={texts}", "--dataset=texts", "--data_dir={tmp}/prepared"],
     "(1 docs), 10 val tokens (1 docs)"),
    ("prepare.py", ["--files={bigline},{afile}", "--dataset=big", "--data_dir={tmp}/prepared"],
     "-> "),
    ("prepare.py", ["--files={texts}/**/*.txt", "--dataset=globbed", "--data_dir={tmp}/prepared"],
     "-> "),
    ("evaluate.py", ["--models", "{model}", "--file={texts}/one.txt"], "bits per byte"),
]


@pytest.fixture(scope="module")
def results(files):
    runners = [CaseRunner(), CaseRunner()]  # the 2-core machines this runs on: about half the time
    cases = CASES + RIGHT
    halves = [list(range(len(cases)))[i::2] for i in (0, 1)]

    def run_half(runner, half):
        return {n: runner.run(cases[n][0], *[a.format(**files) for a in cases[n][1]],
                              cwd=files["tmp"]) for n in half}
    try:
        with ThreadPoolExecutor(2) as pool:
            done = {n: p for part in pool.map(run_half, runners, halves) for n, p in part.items()}
    finally:
        for runner in runners:
            runner.close()
    return [done[n] for n in range(len(cases))]


@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{s} {' '.join(a)}"[:60] for s, a, _ in CASES])
def test_bad_input_ends_with_one_line_that_says_what_is_wrong(files, results, case):
    script, _, fragment = CASES[case]
    p = results[case]
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: "), p.stderr
    assert fragment.format(**files) in lines[0], lines[0]


@pytest.mark.parametrize("case", range(len(RIGHT)),
                         ids=[f"{s} {' '.join(a)}"[:60] for s, a, _ in RIGHT])
def test_odd_but_valid_input_gives_the_right_result(files, results, case):
    script, _, fragment = RIGHT[case]
    p = results[len(CASES) + case]
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert fragment.format(**files) in p.stdout + p.stderr, p.stdout


def test_the_page_embeds_a_texts_markup_inertly(files, results):
    page = open(os.path.join(files["tmp"], "xss.html"), encoding="utf-8").read()
    # the text is inside base64, nowhere as markup
    assert page.count("</script") == 1 and "alert(1)" not in page


def test_rank_set_by_hand_does_not_silence_an_error(files):
    p = run("train.py", env={"RANK": "1"})  # not torchrun: no other rank would print it
    assert p.returncode != 0 and p.stderr.startswith(
        "train.py (rank 1): RANK is set, but not with LOCAL_RANK")
    p = run("sample.py", f"--out_dir={files['tmp']}/none", env={"RANK": "1"})
    assert p.returncode != 0 and "is no file or folder" in p.stderr and p.stderr.count("\n") == 1


def first_checkpoint(data, out, *args):
    """A tiny run of 12 steps in out, checkpointing at steps 6 and 12."""
    p = run("train.py", *TINY, f"--data_dir={data}", "--dataset=fake", f"--out_dir={out}",
            "--max_iters=12", "--eval_interval=6", *args)
    assert p.returncode == 0, p.stderr
    return (out / "ckpt.pt").read_bytes(), (out / "metrics.jsonl").read_text()


def test_a_full_disk_during_a_checkpoint_loses_nothing(files, tmp_path):
    ckpt, metrics = first_checkpoint(files["data"], tmp_path)
    full = tmp_path / "full_disk"
    # Python imports sitecustomize at start-up: torch.save then fails like a full disk, half-way
    full.mkdir()
    (full / "sitecustomize.py").write_text(
        "import errno, torch\n"
        "def save(obj, f, *args, **kwargs):\n"
        "    f.write(b'x' * 1000)\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "torch.save = save\n")
    p = run("train.py", f"--out_dir={tmp_path}", "--init_from=resume", "--max_iters=18",
            env={"PYTHONPATH": str(full)})
    assert p.returncode != 0 and p.stderr == (f"train.py: disk full while writing {tmp_path}/"
                                              "ckpt.pt: free some space and run again\n"), p.stderr
    assert (tmp_path / "ckpt.pt").read_bytes() == ckpt and not list(tmp_path.glob("*.tmp"))


def test_a_new_run_in_an_old_runs_folder_keeps_the_old_run_until_its_first_checkpoint(
        files, tmp_path):
    ckpt, metrics = first_checkpoint(files["data"], tmp_path)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *TINY,
                             f"--data_dir={files['data']}", "--dataset=fake",
                             f"--out_dir={tmp_path}", "--max_iters=100", "--eval_interval=50"],
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("iter 3:"):
            proc.kill()  # no chance to clean up, before the new run's first checkpoint
            break
    proc.wait()
    assert any("its ckpt.pt and metrics.jsonl are replaced at the first checkpoint" in line
               for line in seen)
    assert ((tmp_path / "ckpt.pt").read_bytes() == ckpt
            and (tmp_path / "metrics.jsonl").read_text() == metrics)


def test_ctrl_c_says_where_the_last_checkpoint_is(files, tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *TINY,
                             f"--data_dir={files['data']}", "--dataset=fake",
                             f"--out_dir={tmp_path}", "--max_iters=1000", "--eval_interval=6"],
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job (&) ignores Ctrl-C, and so would this
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.startswith("saved checkpoint at step 6"):
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    assert stderr.startswith(
        f"train.py: interrupted; the last checkpoint is {tmp_path}/ckpt.pt, from step ")
    assert stderr.count("\n") == 1 and stderr.endswith("--init_from=resume continues from it\n")


def test_a_failed_page_keeps_the_old_page(files, results):
    # the case above failed after reading the model
    assert open(files["page"]).read().endswith("OLD PAGE\n")


# -- the Python API, misused: a clear exception that says what is wrong, not one from inside torch
# (CUDA tensors cannot be made on a CPU build of torch at all: torch refuses them before our code
# sees them.)
@pytest.fixture(scope="module")
def api():
    import finetune_senses
    import interventions
    import senses
    from tokenizer import get_tokenizer
    torch.manual_seed(0)
    model = Backpack(BackpackConfig(block_size=16, n_layer=1, n_head=2, n_embd=16,
                                    num_senses=4)).eval()
    gpt = Backpack(BackpackConfig(block_size=16, n_layer=1, n_head=2, n_embd=16,
                                  num_senses=0)).eval()
    return SimpleNamespace(model=model, gpt=gpt, enc=get_tokenizer(), senses=senses,
                           interventions=interventions, ft=finetune_senses,
                           idx=torch.tensor([[464, 15849, 531, 326]]))


API_CASES = [  # (what, a call of api, the exception, a fragment of its message)
    ("a 1-D prompt", lambda a: a.model.generate(a.idx[0], 3), ValueError,
     "must have shape (batch, time)"),
    ("an empty prompt", lambda a: a.model.generate(a.idx[:, :0], 3), ValueError,
     "must have shape (batch, time)"),
    ("an id past the vocabulary", lambda a: a.model(a.idx + 50264), ValueError,
     "token ids must be in [0, 50264)"),
    ("a negative id", lambda a: a.model(a.idx - 1000), ValueError,
     "token ids must be in [0, 50264), got [-674, 14849]"),
    ("a prompt past block_size", lambda a: a.model(a.idx.repeat(1, 5)), ValueError,
     "1 <= time <= block_size=16"),
    ("top_p 0", lambda a: a.model.generate(a.idx, 2, top_p=0), ValueError, "top_p in (0, 1]"),
    ("top_p True", lambda a: a.model.generate(a.idx, 2, top_p=True), ValueError, "top_p in (0, 1]"),
    ("top_p nan", lambda a: a.model.generate(a.idx, 2, top_p=float("nan")), ValueError,
     "top_p in (0, 1]"),
    ("a negative temperature", lambda a: a.model.generate(a.idx, 2, temperature=-1), ValueError,
     "must be >= 0"),
    ("temperature nan", lambda a: a.model.generate(a.idx, 2, temperature=float("nan")), ValueError,
     "must be >= 0"),
    ("a negative top_k", lambda a: a.model.generate(a.idx, 2, top_k=-1), ValueError,
     "must be >= 0"),
    ("senses of a Transformer", lambda a: a.gpt.senses(a.idx), AssertionError,
     "this model has no senses"),
    ("an edit of the wrong shape", lambda a: a.model.edit_senses(5, lambda s: s[0]), ValueError,
     "the edit must return a (4, 16) tensor"),
    ("an edit of a float id", lambda a: a.model.edit_senses(5.5, lambda s: s), TypeError,
     "'float' object"),
    ("a config of a float width", lambda a: BackpackConfig(n_embd=64.0), ValueError,
     "want int sizes"),
    ("a config whose width k does not divide",
     lambda a: BackpackConfig(n_embd=30, n_head=2, num_senses=4), ValueError,
     "must be divisible by n_head=2 and by num_senses=4"),
    ("contributions of a batch", lambda a: a.senses.contributions(a.model, a.idx.repeat(2, 1), 5),
     ValueError, "idx must be one text, of shape (1, T), not (2, 4)"),
    ("contributions of a padding row", lambda a: a.senses.contributions(a.model, a.idx, 50260),
     ValueError, "target 50260 is no word: the vocabulary's words are 0..50256"),
    ("contributions of a float target", lambda a: a.senses.contributions(a.model, a.idx, 1.5),
     TypeError, "float"),
    ("contributions of a str target", lambda a: a.senses.contributions(a.model, a.idx, " she"),
     TypeError, "str"),
    ("contributions past the context", lambda a: a.senses.contributions(a.model, a.idx, 5, 4),
     ValueError, "position 4 is outside the context's 4 tokens"),
    ("a sense table of a padding row", lambda a: a.senses.sense_table(a.model, a.enc, 50263),
     ValueError, "token id 50263 is no word"),
    ("a sense table of a word as a str", lambda a: a.senses.sense_table(a.model, a.enc, "nurse"),
     TypeError, "str"),
    ("scale a sense by nan", lambda a: a.interventions.scale_sense(a.model, 5, {0: float("nan")}),
     ValueError, "a factor must be a finite number, not nan"),
    ("scale a sense named by a str", lambda a: a.interventions.scale_sense(a.model, 5, {"0": 0.0}),
     ValueError, "sense '0' is out of range"),
    ("scale senses given as a list", lambda a: a.interventions.scale_sense(a.model, 5, [0.0]),
     TypeError, "factors must be a dict {sense: factor}"),
    ("scale a sense of a Transformer", lambda a: a.interventions.scale_sense(a.gpt, 5, {0: 0.0}),
     ValueError, "this model has no senses"),
    ("topic control of a Transformer",
     lambda a: a.interventions.topic_control(a.gpt, a.enc, "food"), ValueError,
     "this model has no senses"),
    ("an empty topic", lambda a: a.interventions.topic_control(a.model, a.enc, []), ValueError,
     "bag of words is empty"),
    ("gender bias with no prompts",
     lambda a: a.interventions.gender_bias(a.model, a.enc, templates=[]), ValueError, "no prompts"),
    ("sense health of a short text", lambda a: a.senses.sense_health(a.model, [1, 2, 3]),
     ValueError, "the text is 3 tokens, less than a window of block_size=16"),
    ("a page of nothing", lambda a: a.senses.page_data(a.model, a.enc, "", "x"), ValueError,
     "the text is 0 tokens"),
    ("a page with no candidates", lambda a: a.senses.page_data(a.model, a.enc, "hi", "x", top=0),
     ValueError, "top must be at least 1"),
    ("save_pretrained to ''", lambda a: __import__("pretrained").save_pretrained(a.model, ""),
     ValueError, "the path is empty"),
    ("a knowledge edit to a padding row",
     lambda a: a.interventions.edit_knowledge(a.model, 5, 7, -1), ValueError,
     "token ids must be in [0, 50264)"),
]


@pytest.mark.parametrize("case", range(len(API_CASES)), ids=[c[0] for c in API_CASES])
def test_the_python_api_misused_says_what_is_wrong(api, case):
    what, call, kind, fragment = API_CASES[case]
    with pytest.raises(kind) as raised:
        call(api)
    assert fragment in str(raised.value), str(raised.value)


def test_gender_bias_takes_one_profession_as_a_word_not_its_letters(api):
    _, _, used, _ = api.interventions.gender_bias(api.model, api.enc, sense=1, professions="nurse")
    assert used == ["nurse"]


def test_a_failed_svg_keeps_the_old_svg(files, tmp_path):
    (tmp_path / "c.svg").write_text("OLD")
    p = CaseRunner()
    try:
        failed = p.run("evaluate.py", "--curves", files["badrun"], f"--svg={tmp_path}/c.svg")
    finally:
        p.close()
    assert failed.returncode != 0 and (tmp_path / "c.svg").read_text() == "OLD"


def test_prepare_killed_mid_way_leaves_no_dataset_and_runs_again(tmp_path):
    for n in range(12):  # a few MB of text in several documents, so that the kill lands mid-way
        (tmp_path / f"doc{n:02d}.txt").write_text(" ".join(f"word{i % 997} and more"
                                                           for i in range(60_000)))
    args = [sys.executable, os.path.join(REPO, "prepare.py"), f"--files={tmp_path}", "--dataset=k",
            f"--data_dir={tmp_path}/data", "--num_proc=1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not os.path.exists(tmp_path / "data" / "k" / "train.bin.tmp"):
        pass
    proc.kill()  # kill -9: no chance to clean up
    proc.wait()
    # nothing a later run would take as done
    assert not os.path.exists(tmp_path / "data" / "k" / "train.bin")
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert os.path.getsize(tmp_path / "data" / "k" / "train.bin") > 1_000_000
