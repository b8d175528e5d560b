"""
The files the scripts read and write, one reader per format: text, prepared splits of token ids,
JSON lines, finetune_senses.py's canonical examples, senses.py's word pairs; atomic writes,
downloads into the cache.
"""

import contextlib
import errno
import gzip
import json
import math
import os
import re
import sys
import time
from urllib.parse import urlparse

import numpy as np
import requests

from tokenizer import GPT2_VOCAB

RETRIES = 5  # download attempts in a row that make no progress before giving up
RETRY_SLEEP = 2.0  # seconds before the first retry, doubled after each (the tests set 0)
DOWNLOAD_CHUNK = 1 << 20  # a cut connection loses at most the chunk being read


def read_text(path):
    """The text of a UTF-8 file (.gz too; a byte-order mark dropped), or an error of one line that
    names it."""
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            return f.read().decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it to "
                         "UTF-8 first") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def read_tokens(path, more_than=0, need=""):
    """The token ids of a prepared split (python prepare.py: uint16 GPT-2 ids), memory-mapped; or a
    one-line error that names the file: not whole uint16s, not more than more_than ids (need says
    what needs them), or ids that GPT-2 does not have (50257-50263 are padding rows; larger ones
    another tokenizer's). The first 100M are checked."""
    size = os.path.getsize(path)  # a missing file: an OSError that names it
    if size % 2:
        raise ValueError(f"{path} is not a file of uint16 token ids (its size, {size:,} bytes, is "
                         "odd); make it with prepare.py")
    if size // 2 <= more_than:
        raise ValueError(f"{path} holds {size // 2:,} token ids; {need or 'this'} needs more than "
                         f"{more_than:,}")
    tokens = np.memmap(path, dtype=np.uint16, mode="r") if size else np.zeros(0, dtype=np.uint16)
    if size and (top := int(tokens[:100_000_000].max())) >= GPT2_VOCAB:
        kind = ("a padding id of the embedding" if top < GPT2_VOCAB + 7
                else "an id of another tokenizer")
        raise ValueError(f"{path} holds token id {top}, {kind}, which GPT-2 text never has: make "
                         "the file with prepare.py")
    return tokens


def read_json_lines(path, what):
    """[(line number, object)] of a file of JSON objects, one a line (blank lines skipped), or a
    one-line error at the first line that is none: "not a JSON {what}". Lines end at newlines only:
    a JSON string may hold U+2028, which str.splitlines would split at."""
    records = []
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {n}: not a JSON {what}")
        records.append((n, record))
    return records


def read_examples(path, enc, block_size):
    """finetune_senses.py's canonical examples: [(prefix ids, [suffix ids] or [suffix1 ids, suffix2
    ids])] from JSON lines in the authors' formats, {"prefix", "suffix"} or {"prefix", "suffix1",
    "suffix2"}, other keys ignored (their files carry "statement", "clear_document" and more).
    Prefix and suffix are tokenized apart, as theirs."""
    examples, form = [], None
    for n, record in read_json_lines(path, 'object such as {"prefix": "...", "suffix": "..."}'):
        where = f"{path}, line {n}"
        keys = ("suffix1", "suffix2") if "suffix1" in record or "suffix2" in record else ("suffix",)
        if form and keys != form:
            raise ValueError(f"{where}: every line of a file must have the same suffix keys "
                             "(suffix, or suffix1 and suffix2)")
        form = keys
        for key in ("prefix", *keys):
            if not isinstance(record.get(key), str):
                raise ValueError(f'{where}: no "{key}" string' if key not in record else
                                 f'{where}: "{key}" is not a string')
        prefix = enc.encode(record["prefix"], allowed_special={"<|endoftext|>"})
        suffixes = [enc.encode(record[key], allowed_special={"<|endoftext|>"}) for key in keys]
        if not prefix:  # the first token of a text is predicted from nothing
            raise ValueError(f"{where}: the prefix is empty; an example continues a prefix")
        if empty := [key for key, suffix in zip(keys, suffixes) if not suffix]:
            raise ValueError(f'{where}: "{empty[0]}" is empty; '
                             'it is the text to make likely or unlikely')
        if (length := len(prefix) + max(map(len, suffixes))) > block_size:
            raise ValueError(f"{where}: prefix and suffix are {length} tokens, more than the "
                             f"model's block_size={block_size}; shorten it")
        examples.append((prefix, suffixes))
    if not examples:
        raise ValueError(f'{path} holds no examples: write one JSON object per line, {{"prefix": '
                         '..., "suffix": ...} or {"prefix": ..., "suffix1": ..., "suffix2": ...}')
    return examples


def read_similarity(path):
    """senses.py's word pairs: [(word1, word2, score)] from a word1<TAB>word2<TAB>score file, and
    the number of other non-blank lines skipped (headers, comments). Later columns are ignored."""
    pairs, skipped = [], 0
    for line in read_text(path).splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) >= 3 and fields[0] and fields[1] and is_number(fields[2]):
            pairs.append((fields[0], fields[1], float(fields[2])))
        else:
            skipped += bool(line.strip())
    return pairs, skipped


def is_number(text):
    """Whether text is a finite number: '0.5', '1e-3'; not 'nan', 'inf' or 'x'."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@contextlib.contextmanager
def atomic_write(*paths):
    """Open PATH.tmp for writing, for each path; if the block succeeds, flush them to disk and
    rename each onto its PATH, so a reader never finds half a file (a crash leaves the old file or
    none). On any failure, a full disk or Ctrl-C too, the temp files are removed."""
    paths = [os.fspath(p) for p in paths]
    tmps, files = [p + ".tmp" for p in paths], []
    # found before any file is replaced
    if folder := next((p for p in paths if os.path.isdir(p)), None):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", folder)
    try:
        for tmp in tmps:
            folder = os.path.dirname(os.path.abspath(tmp))
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", folder)
            os.makedirs(folder, exist_ok=True)
            files.append(open(tmp, "wb"))
        yield files if len(files) > 1 else files[0]
        for f in files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except OSError as e:
        # a full disk, a quota, a file size limit
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            reason = "disk full" if e.errno == errno.ENOSPC else e.strerror.lower()
            raise OSError(f"{reason} while writing {paths[0]}: free some space and run "
                          "again") from None
        if e.filename in tmps:  # name the file the user gave, not its temporary twin
            raise OSError(e.errno, e.strerror, paths[tmps.index(e.filename)]) from None
        raise
    finally:
        for f in files:
            f.close()
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


def cache_path(name):
    """Where downloads are kept: $BACKPACK_CACHE, or backpack/ in $XDG_CACHE_HOME or ~/.cache."""
    return os.path.join(os.environ.get("BACKPACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "backpack"), name)


def download(url, dest):
    """Fetch url into dest, unless dest is there. The bytes go to dest.part, which a cut connection
    (or a later run) resumes with an HTTP Range request; attempts that make no progress are retried
    with backoff; the size is checked against the server's, and the Hugging Face hub's, before
    dest.part becomes dest. Prints a progress line. Raises ConnectionError (run again later) or
    ValueError (the file is not what it should be)."""
    if os.path.isfile(dest):
        return dest
    part, name = dest + ".part", os.path.basename(dest)
    failures, total, mid_line, answered = 0, None, False, False
    while True:
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        try:
            with requests.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True,
                              timeout=60) as r:
                answered = True
                # a Range is answered 206 "bytes START-END/SIZE", or 416 "bytes */SIZE" if none left
                m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+)",
                                 r.headers.get("Content-Range", ""))
                if r.status_code in (206, 416) and m:
                    start, size = int(m[1] or have), int(m[2])
                elif r.status_code == 200:  # the whole file (no Range asked, or it was ignored)
                    have, start, size = 0, 0, (int(r.headers["Content-Length"])
                                               if "Content-Length" in r.headers else None)
                elif r.status_code == 416:  # nothing at that byte: a .part longer than the file
                    os.remove(part)
                    raise requests.RequestException(f"the server has no byte {have:,} "
                                                    "(deleted the .part)")
                elif 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    raise ValueError(f"{url} answered HTTP {r.status_code}: "
                                     "check the name or the address")
                else:
                    raise requests.RequestException(f"HTTP {r.status_code}")
                # the hub's size of a file it redirects to its storage
                hub = next((int(h.headers["X-Linked-Size"]) for h in (*r.history, r)
                            if "X-Linked-Size" in h.headers), None)
                if total is not None and size is not None and size != total:
                    raise ValueError(f"{url} changed size during the download ({total:,} -> "
                                     f"{size:,} bytes); run again")
                total = size
                if r.status_code == 416 and have == total:
                    break  # the .part was already complete
                if start != have or r.status_code == 416:  # e.g. a .part longer than the file
                    os.remove(part)
                    raise requests.RequestException(f"the server cannot resume at byte {have:,} "
                                                    "(deleted the .part)")
                # the folder is made only now that the server sends bytes
                os.makedirs(os.path.dirname(os.path.abspath(part)), exist_ok=True)
                with open(part, "ab" if have else "wb") as f:
                    last_print = 0.0
                    for chunk in r.iter_content(chunk_size=DOWNLOAD_CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                        # progress: a flaky connection may take many tries on a big file
                        failures = 0
                        if time.time() - last_print > 0.5:
                            of_total = f" of {total / 1e6:,.1f}" if total else ""
                            print(f"\r{name}: {have / 1e6:,.1f}{of_total} MB", end="",
                                  file=sys.stderr, flush=True)
                            last_print, mid_line = time.time(), True
            if total is None or have == total:
                if hub is not None and have != hub:
                    os.remove(part)
                    raise ValueError(f"{url} gave {have} bytes, but the hub says {hub}; removed "
                                     "them, run again")
                break
            raise requests.RequestException(f"got {have:,} of {total:,} bytes")
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL):
            raise ValueError(f"{url} is not a web address") from None
        except requests.RequestException as e:
            if isinstance(e, requests.ConnectionError) and not answered and failures:  # twice
                kept = f" ({have:,} bytes of it are kept in {part})" if have else ""
                raise ConnectionError(f"cannot reach {urlparse(url).hostname} to download "
                                      f"{dest}{kept}: no network connection, or the host is down; "
                                      "run again later, or use a local copy") from None
            # requests' own wording nests three exceptions deep: keep the part a person needs
            cut, os_error = (re.search(r"IncompleteRead\((.*?)\)", str(e)),
                             re.search(r"\[Errno [-\d]+\] ([^'\")]+)", str(e)))
            reason = (f"connection cut ({cut[1]})" if cut
                      else os_error[1] if os_error else str(e)[:200])
            failures += 1
            if failures >= RETRIES:
                kept = (f"; the {have:,} bytes received are kept in {part}" if os.path.isfile(part)
                        else "")
                raise ConnectionError(f"download of {url} failed {RETRIES} times in a row "
                                      f"({reason}){kept}: run again to resume") from None
            print(f"{chr(10) if mid_line else ''}{name}: {reason}; trying again", file=sys.stderr,
                  flush=True)
            mid_line = False
            time.sleep(RETRY_SLEEP * 2 ** (failures - 1))
    if mid_line:
        print(file=sys.stderr)
    os.replace(part, dest)
    return dest
