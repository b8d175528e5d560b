"""
Tests for tokenizer.py and prepare.py: CPU only, no network (OpenWebText is served from 127.0.0.1).
Run: python -m pytest -q tests/test_prepare.py
"""
import errno
import gzip
import http.server
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest

import prepare
import tokenizer
from files import download
from tokenizer import EOT, get_tokenizer
from conftest import REPO



def read_docs(path):
    """A .bin file -> list of document texts (EOT-separated; every document ends with EOT)."""
    ids = np.fromfile(path, dtype=np.uint16)
    assert len(ids) == 0 or ids[-1] == EOT
    enc, docs, start = get_tokenizer(), [], 0
    for end in np.flatnonzero(ids == EOT):
        docs.append(enc.decode(ids[start:end].tolist()))
        start = end + 1
    return docs


def leftovers(folder):
    """Anything half-written: .bin files or temp files."""
    found = []
    for root, _, names in os.walk(folder):
        found += [n for n in names if n.endswith((".bin", ".tmp", ".part"))]
    return found


# ----------------------------------------------------------------------------- tokenizer

def test_tokenizer_hello_world():
    enc = get_tokenizer()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.n_vocab == tokenizer.GPT2_VOCAB == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [EOT]
    assert get_tokenizer() is enc  # cached


def test_tokenizer_sha_check(tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    data = bytearray(open(tokenizer.RANKS_PATH, "rb").read())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        tokenizer.load_ranks(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.tiktoken"):
        tokenizer.load_ranks(str(tmp_path / "missing.tiktoken"))


# ----------------------------------------------------------------------------- --input

@pytest.fixture
def text_folder(tmp_path):
    docs = {
        "corpus/a.txt": "The first document.\nIt has two lines.\n",
        "corpus/sub/b.txt": "Naïve café — “quoted” text, 2nd doc.",
        "corpus/sub/deeper/c.txt.gz": "Compressed third document.\n\n\nWith a gap.",
        "corpus/notes.md": "not text for us: folders take only .txt and .txt.gz",
        "extra/d.txt": "Fourth, found by a glob.",
        "extra/e.txt": "Fifth, also by the glob.",
    }
    for name, text in docs.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text, encoding="utf-8")
    return tmp_path, {name: text for name, text in docs.items() if not name.endswith(".md")}


@pytest.mark.parametrize("num_proc", [1, 2])
def test_input_roundtrip(text_folder, num_proc):
    root, docs = text_folder
    out = prepare.prepare_input([str(root / "corpus"), str(root / "extra" / "*.txt")], "mine",
                                data_dir=str(root / "data"), num_proc=num_proc)
    train, val = read_docs(os.path.join(out, "train.bin")), read_docs(os.path.join(out, "val.bin"))
    # every document comes back whole, exactly once, in train or in val: the split is by document
    assert sorted(train + val) == sorted(docs.values())
    assert len(val) == 1 and len(train) == 4
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["train_docs"] == 4 and meta["val_docs"] == 1
    assert meta["train_tokens"] == os.path.getsize(os.path.join(out, "train.bin")) // 2
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_input_bad_inputs(text_folder):
    root, _ = text_folder
    data = str(root / "data")
    with pytest.raises(FileNotFoundError, match="no such file"):
        prepare.prepare_input([str(root / "nothing" / "*.txt")], "x", data_dir=data)
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt or .txt.gz files matched"):
        prepare.prepare_input([str(root / "empty")], "x", data_dir=data)
    with pytest.raises(ValueError, match="at least 2 documents"):
        prepare.prepare_input([str(root / "extra" / "d.txt")], "x", data_dir=data)
    with pytest.raises(ValueError, match="plain folder name"):
        prepare.prepare_input([str(root / "extra")], "../escape", data_dir=data)
    (root / "extra" / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8.*convert it to UTF-8"):
        prepare.prepare_input([str(root / "extra")], "x", data_dir=data, num_proc=2)
    (root / "extra" / "latin1.txt").unlink()
    (root / "extra" / "broken.txt.gz").write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.txt\.gz"):
        prepare.prepare_input([str(root / "extra")], "x", data_dir=data, num_proc=1)
    assert leftovers(data) == []


def test_disk_full_leaves_nothing(tmp_path, monkeypatch):
    class FullDisk(io.FileIO):  # a real file whose writes fail like a full disk
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open
    def full_disk_open(p, mode="r", *a, **k):
        return FullDisk(p, "w") if str(p).endswith(".tmp") else real_open(p, mode, *a, **k)

    monkeypatch.setattr("files.open", full_disk_open, raising=False)
    message = f"disk full while writing {tmp_path}/brown/train.bin: free some space"
    with pytest.raises(OSError, match=message):
        prepare.main([f"--data_dir={tmp_path}"])
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- the Brown Corpus

def test_brown(tmp_path):
    out = prepare.prepare_brown(data_dir=str(tmp_path))
    train = np.fromfile(os.path.join(out, "train.bin"), dtype=np.uint16)
    val = np.fromfile(os.path.join(out, "val.bin"), dtype=np.uint16)
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert (meta["train_docs"], meta["val_docs"]) == (475, 25)
    assert (train == EOT).sum() == 475 and (val == EOT).sum() == 25  # one EOT per document
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train), len(val))
    assert 1_250_000 < len(train) + len(val) < 1_400_000
    assert train.max() < tokenizer.GPT2_VOCAB
    # the val documents are whole Brown samples, the ones meta.json names
    with lzma.open(prepare.BROWN_PATH, "rt", encoding="utf-8") as f:
        brown = {r["id"]: r for r in map(json.loads, f)}
    assert len(brown) == 500 and set(r["genre"] for r in brown.values()) == set("abcdefghjklmnpr")
    assert read_docs(os.path.join(out, "val.bin")) == [brown[i]["text"] for i in meta["val_ids"]]
    assert brown["ca01"]["text"].startswith(
        "The Fulton County Grand Jury said Friday an investigation of "
        "Atlanta's recent primary election produced \"no evidence\" that")
    # the same seed gives the same split
    again = prepare.prepare_brown(data_dir=str(tmp_path / "again"))
    assert json.load(open(os.path.join(again, "meta.json")))["val_ids"] == meta["val_ids"]


# ------------------------------------------------------------------ OpenWebText from a local server

def make_owt_shard(shard, docs_per_member=(5, 4)):
    """A tar with the real layout: members urlsf_subsetNN-M_data.xz, each an xz-compressed
    tar of .txt."""
    outer_buf, expected = io.BytesIO(), []
    with tarfile.open(fileobj=outer_buf, mode="w") as outer:
        for m, n_docs in enumerate(docs_per_member, start=1):
            member = f"urlsf_subset{shard:02d}-{m}_data.xz"
            inner_buf = io.BytesIO()
            with tarfile.open(fileobj=inner_buf, mode="w") as inner:
                for d in range(n_docs):
                    name = f"{m:04d}{d:03d}-{'ab' * 8}.txt"
                    text = (f"\n Shard {shard} member {m} doc {d}: some web text."
                            "\n\n\n\n\nA paragraph after a gap. \n\n")
                    data = text.encode()
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    inner.addfile(info, io.BytesIO(data))
                    cleaned = (f"Shard {shard} member {m} doc {d}: some web text."
                               "\n\nA paragraph after a gap.")
                    expected.append((f"{member}/{name}", cleaned))
            xz = lzma.compress(inner_buf.getvalue())
            info = tarfile.TarInfo(member)
            info.size = len(xz)
            outer.addfile(info, io.BytesIO(xz))
    return outer_buf.getvalue(), expected


@pytest.fixture
def owt_server(monkeypatch):
    """An HTTP server on 127.0.0.1 that honours Range requests and can misbehave on demand."""
    state = {"files": {}, "log": [], "cut_once": set(), "lie_size": set(), "after_cut": {}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path, rng = self.path, self.headers.get("Range")
            state["log"].append((path, rng))
            if path not in state["files"]:
                self.send_error(404)
                return
            data = state["files"][path]
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            claimed = len(body) + (100 if path in state["lie_size"] else 0)
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range",
                                 f"bytes {start}-{start + claimed - 1}/{start + claimed}")
            self.send_header("Content-Length", str(claimed))
            self.end_headers()
            if path in state["cut_once"]:  # drop the connection half-way through, once
                state["cut_once"].discard(path)
                body = body[: len(body) // 2]
                if path in state["after_cut"]:  # ... and then the file changes on the server
                    state["files"][path] = state["after_cut"].pop(path)
            self.wfile.write(body)
            self.wfile.flush()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr("files.RETRY_SLEEP", 0.0)
    monkeypatch.setattr("files.DOWNLOAD_CHUNK", 1024)  # the fake shards are ~10 KB
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/owt"
    yield state
    server.shutdown()
    server.server_close()


def test_openwebtext_resumes_and_splits(tmp_path, owt_server):
    shards, expected = {}, []
    for s in (0, 3):
        shards[s], docs = make_owt_shard(s)
        expected += docs
        owt_server["files"][f"/owt/subsets/urlsf_subset{s:02d}.tar"] = shards[s]
    owt_server["cut_once"].add("/owt/subsets/urlsf_subset00.tar")
    data = str(tmp_path / "data")
    out = prepare.prepare_openwebtext(data, shards=[0, 3], base_url=owt_server["url"], num_proc=2,
                                      val_fraction=0.3)
    # shard 00 was cut mid-way and resumed with a Range request from where the .part file ended
    ranges = [rng for path, rng in owt_server["log"] if path.endswith("00.tar")]
    assert ranges[0] is None and ranges[1] == f"bytes={len(shards[0]) // 2}-"
    train, val = read_docs(os.path.join(out, "train.bin")), read_docs(os.path.join(out, "val.bin"))
    want_val = [text for key, text in expected if prepare.is_val_document(key, 0.3)]
    want_train = [text for key, text in expected if not prepare.is_val_document(key, 0.3)]
    # in order, cleaned, split by document
    assert train == want_train and val == want_val and len(val) > 0
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["shards"] == [0, 3] and meta["train_docs"] + meta["val_docs"] == 18
    # downloads and shard files are cleaned up by default; nothing half-written anywhere
    assert sorted(os.listdir(out)) == ["downloads", "meta.json", "shards", "train.bin", "val.bin"]
    assert os.listdir(os.path.join(out, "downloads")) == []
    assert os.listdir(os.path.join(out, "shards")) == []
    # a second run with the same shards does nothing
    n_requests = len(owt_server["log"])
    prepare.prepare_openwebtext(data, shards=[0, 3], base_url=owt_server["url"], num_proc=1,
                                val_fraction=0.3)
    assert len(owt_server["log"]) == n_requests


def test_openwebtext_resumes_per_shard(tmp_path, owt_server):
    owt_server["files"]["/owt/subsets/urlsf_subset00.tar"], docs0 = make_owt_shard(0)
    data = str(tmp_path / "data")
    # shard 01 is missing on the server: the run fails clearly, once shard 00 is done and recorded
    with pytest.raises(ValueError, match="HTTP 404"):
        prepare.prepare_openwebtext(data, shards=[0, 1], base_url=owt_server["url"], num_proc=1,
                                    keep_downloads=True)
    owt = os.path.join(data, "openwebtext")
    shard_files = ["00.json", "00.train.bin", "00.val.bin"]
    assert sorted(os.listdir(os.path.join(owt, "shards"))) == shard_files
    assert not os.path.exists(os.path.join(owt, "train.bin"))
    assert os.path.exists(os.path.join(owt, "downloads", "urlsf_subset00.tar"))  # --keep_downloads
    owt_server["files"]["/owt/subsets/urlsf_subset01.tar"], docs1 = make_owt_shard(1, (3,))
    owt_server["log"].clear()
    prepare.prepare_openwebtext(data, shards=[0, 1], base_url=owt_server["url"], num_proc=1,
                                keep_shards=True)
    # 00 not redone
    assert [path for path, _ in owt_server["log"]] == ["/owt/subsets/urlsf_subset01.tar"]
    docs = read_docs(os.path.join(owt, "train.bin")) + read_docs(os.path.join(owt, "val.bin"))
    assert sorted(docs) == sorted(text for _, text in docs0 + docs1)
    assert len(os.listdir(os.path.join(owt, "shards"))) == 6  # --keep_shards


def test_download_wrong_size_and_corrupt_shard(tmp_path, owt_server):
    # the server claims 100 bytes more than it has: never accepted, a clear error after the retries
    owt_server["files"]["/owt/liar.tar"] = b"x" * 5000
    owt_server["lie_size"].add("/owt/liar.tar")
    dest = str(tmp_path / "liar.tar")
    with pytest.raises(ConnectionError,
                       match=r"failed 5 times in a row \(connection cut \(.*100 more expected\)\)"):
        download(owt_server["url"] + "/liar.tar", dest)
    assert not os.path.exists(dest) and os.path.getsize(dest + ".part") < 5000
    # the file changes size between a cut and the resume: caught, not spliced together
    owt_server["files"]["/owt/moving.tar"] = b"y" * 5000
    owt_server["cut_once"].add("/owt/moving.tar")
    owt_server["after_cut"]["/owt/moving.tar"] = b"z" * 7000
    with pytest.raises(ValueError,
                       match=r"changed size during the download \(5,000 -> 7,000 bytes\)"):
        download(owt_server["url"] + "/moving.tar", str(tmp_path / "moving.tar"))
    assert not os.path.exists(tmp_path / "moving.tar")
    # a complete .part from an interrupted run is recognised (416); a stale longer one starts over
    owt_server["files"]["/owt/done.tar"] = b"d" * 3000
    owt_server["files"]["/owt/stale.tar"] = b"t" * 3000
    (tmp_path / "done.tar.part").write_bytes(b"d" * 3000)
    (tmp_path / "stale.tar.part").write_bytes(b"s" * 9000)
    for name, want in (("done.tar", b"d" * 3000), ("stale.tar", b"t" * 3000)):
        download(owt_server["url"] + "/" + name, str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == want
        assert not os.path.exists(tmp_path / (name + ".part"))
    # a download that completes but is not a tar: a clear error, and it is deleted for a fresh try
    owt_server["files"]["/owt/subsets/urlsf_subset02.tar"] = b"not a tar file at all" * 100
    data = str(tmp_path / "data")
    with pytest.raises(ValueError, match="not a valid tar"):
        prepare.prepare_openwebtext(data, shards=[2], base_url=owt_server["url"], num_proc=1)
    assert leftovers(data) == []
    assert os.listdir(os.path.join(data, "openwebtext", "downloads")) == []


# ----------------------------------------------------------------------------- the command line

def test_cli(text_folder):
    root, docs = text_folder
    run = lambda *args: subprocess.run([sys.executable, os.path.join(REPO, "prepare.py"), *args],
                                       capture_output=True, text=True, cwd=root, timeout=120)
    ok = run("--files=corpus,extra/*.txt", "--dataset", "cli", "--num_proc", "2")
    assert ok.returncode == 0, ok.stderr
    assert "train tokens (4 docs)" in ok.stdout
    written = read_docs(root / "data/cli/train.bin") + read_docs(root / "data/cli/val.bin")
    assert sorted(written) == sorted(docs.values())
    assert "--keep_downloads" in run("--help").stdout  # bad input: test_errors.py
    assert sorted(os.listdir(root / "data")) == ["cli"]
