"""
What the scripts share: settings, one-line errors, the device and precision, prepared splits, atomic writes,
downloads.

Settings follow nanoGPT: a script's settings are plain values with defaults (its globals, or a dict); config
files (plain Python that assigns some of them) and --key=value arguments override them, in the order given:

    python train.py config/train_backpack_micro.py --batch_size=8 --compile=True
    python senses.py --word science            # --key value works too; a bare --flag turns a boolean on
    python evaluate.py --models out out-gpt2  # a setting whose default is a list takes several values

Unlike nanoGPT's exec-based configurator, a misspelled key, a value of the wrong type or one outside the
values a script declares allowed is a one-line error (unknown config key --lerning_rate (did you mean
--learning_rate?); --dropout must be in [0, 1), got 1.5), not a silent new global or a wrong run.
"""

import contextlib
import difflib
import errno
import gzip
import os
import re
import sys
import time
from ast import literal_eval
from urllib.parse import urlparse

import numpy as np
import requests
import torch

from tokenizer import GPT2_VOCAB

RETRIES = 5  # download attempts in a row that make no progress before giving up
RETRY_SLEEP = 2.0  # seconds before the first retry, doubled after each (the tests set 0)
DOWNLOAD_CHUNK = 1 << 20  # a cut connection loses at most the chunk being read


def configure(settings, argv, doc="", allowed=None):
    """Apply the config files and --key=value (or --key value) arguments in argv to settings, a dict such as
    globals() whose current values give each key's default and type, then check the values against allowed:
    {key: an interval such as "[0, 1)" or "(0, inf)" for a number, or for the length of a string; or a tuple of
    the choices for a string}. Returns {key: value} of what argv set."""
    known = [k for k, v in settings.items() if not k.startswith("_") and isinstance(v, (bool, int, float, str, list))]
    given, args, allowed = {}, list(argv), allowed or {}
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(doc.strip() + "\n\nSettings (--key=value), their defaults and the values allowed:")
            print("\n".join(f"  --{k}={settings[k]!r}" + (f"  {allowed[k]}" if k in allowed else "") for k in known))
            raise SystemExit(0)
        if not arg.startswith("--"):  # a config file: plain Python assigning some of the settings
            if not arg.endswith(".py"):
                raise ValueError(f"{arg!r} is neither a --key=value setting nor a config file (.py); quote a "
                                 "value with spaces: --start='The old man'")
            for key, value in read_config_file(arg).items():
                check_known(key, known, f"{arg} sets ")
                given[key] = settings[key] = convert(f"{arg}: {key}", value, settings[key])
            continue
        key, eq, text = arg[2:].partition("=")
        check_known(key, known, "")
        if not eq:  # --key value, or a bare --flag (with an optional True/False after it)
            takes_bool = type(settings[key]) is bool
            if args and not args[0].startswith("--") and (not takes_bool or args[0].lower() in ("true", "false", "1", "0")):
                text = args.pop(0)
            elif takes_bool:
                text = "True"
            else:  # a value that starts with -- needs the = form
                raise ValueError(f"--{key} needs a value: --{key}=...")
        if isinstance(settings[key], list):  # every value given is kept: --models a b, --scale a --scale b
            values = [text]  # ... up to the next --key or config file
            while not eq and args and not args[0].startswith("--") and not args[0].endswith(".py"):
                values.append(args.pop(0))
            given[key] = settings[key] = given.get(key, []) + values
            continue
        if isinstance(settings[key], str):
            value = text  # strings need no quotes: --init_from=resume
            if any("\udc80" <= c <= "\udcff" for c in text):  # how Python keeps the bytes of an argument
                raise ValueError(f"--{key} is not UTF-8 text (the shell passed bytes that are not): give UTF-8")
        else:
            try:
                value = literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        given[key] = settings[key] = convert(f"--{key}", value, settings[key])
    check_allowed(settings, allowed)
    return given


def check_allowed(settings, allowed):
    """Settings against their allowed values (see configure): a one-line error for the first that is not."""
    for key, rule in allowed.items():
        value = settings[key]
        if isinstance(rule, tuple) and value not in rule:
            raise ValueError(f"--{key} must be one of {', '.join(rule)}, got {value!r}")
        if isinstance(rule, str) and isinstance(value, str) and not in_interval(len(value), rule):
            raise ValueError(f"--{key} must be {rule} characters long, got {value!r}" if value else f"--{key} is empty")
        if isinstance(rule, str) and not isinstance(value, str) and not in_interval(value, rule):
            raise ValueError(f"--{key} must be in {rule}, got {value!r}")


def in_interval(x, interval):
    """Whether x lies in an interval such as "[0, 1)" or "(0, inf)". nan lies in none."""
    low, high = (float(end) for end in interval[1:-1].split(","))
    return (low <= x if interval[0] == "[" else low < x) and (x <= high if interval[-1] == "]" else x < high)


def read_config_file(path):
    """The settings a config file assigns: its public names, less imports and functions."""
    source, namespace = read_text(path), {}
    try:
        exec(compile(source, path, "exec"), namespace)
    except (Exception, SystemExit) as e:
        raise ValueError(f"error in config file {path}: {type(e).__name__}: {e}") from None
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and type(v).__name__ not in ("module", "function", "type")}


def check_known(key, known, source):
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        dashes = "" if source else "--"
        hint = f" (did you mean {dashes}{close[0]}?)" if close else ""
        raise ValueError(f"{source}unknown config key {dashes}{key}{hint}")


def convert(name, value, default):
    """value (parsed from a config file or the command line) as the type of default, or a one-line error."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e5 -> 100000
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    raise ValueError(f"{name} expects {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")


def one_line_errors():
    """Make this script end on an expected error with one line on stderr, `script.py: message`, not a
    traceback: ValueError (bad settings or input), OSError (files, the disk, the network), running out of
    memory, and Ctrl-C. Under torchrun an error before the processes connect is the same on every rank, and
    only rank 0 prints it; after that every rank prints its own. Any other exception is a bug: a traceback."""
    prog = os.path.basename(sys.argv[0])

    def hook(kind, error, tb):
        memory = issubclass(kind, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(error)
        if not (issubclass(kind, (ValueError, OSError, KeyboardInterrupt)) or memory):
            return sys.__excepthook__(kind, error, tb)
        message = str(error)
        if isinstance(error, OSError) and error.filename:  # "No such file or directory" and the like
            message = f"{error.filename}: {error.strerror}"
        if memory:
            message = f"out of memory ({message.splitlines()[0] if message else kind.__name__}): use smaller settings"
        if kind is KeyboardInterrupt:
            message = "interrupted" + (f"; {message}" if message else "")
        rank = os.environ.get("RANK", "0")  # Ctrl-C reaches every rank: rank 0 says so
        if rank == "0" or "TORCHELASTIC_RUN_ID" not in os.environ or (
                torch.distributed.is_initialized() and kind is not KeyboardInterrupt):
            where = "" if rank == "0" else f" (rank {rank})"
            print(f"{prog}{where}: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever it was
        elif kind is not KeyboardInterrupt:  # rank 0 meets the same error: torchrun would stop it on our exit
            time.sleep(5)
    sys.excepthook = hook


def device_and_autocast(device, dtype):
    """(device_type, dtype, autocast context) for the --device and --dtype settings. dtype 'auto' is bfloat16 on
    CUDA where supported, else float16 (which needs a GradScaler to train); float32 on CPU."""
    device_type = "cuda" if device.startswith("cuda") else device.split(":")[0]
    if device_type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or mps, not {device!r}")
    if device_type == "cuda" and not torch.cuda.is_available() or device_type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device={device}, but this PyTorch has no {device_type.upper()} device; use --device=cpu")
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if device_type == "cuda" else "float32"
    autocast = torch.autocast(device_type, dtype=getattr(torch, dtype)) if dtype != "float32" else contextlib.nullcontext()
    return device_type, dtype, autocast


def read_text(path):
    """The text of a UTF-8 file (.gz too; a byte-order mark dropped), or an error of one line that names it."""
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            return f.read().decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8 first") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def read_tokens(path, more_than=0, need=""):
    """The token ids of a prepared split (python prepare.py: uint16 GPT-2 ids), memory-mapped; or a one-line error
    that names the file: not whole uint16s, not more than more_than ids (need says what needs them), or ids that
    GPT-2 does not have (50257-50263 are padding rows; larger ones another tokenizer's). The first 100M are checked."""
    size = os.path.getsize(path)  # a missing file: an OSError that names it
    if size % 2:
        raise ValueError(f"{path} is not a file of uint16 token ids (its size, {size:,} bytes, is odd); make it with "
                         "prepare.py")
    if size // 2 <= more_than:
        raise ValueError(f"{path} holds {size // 2:,} token ids; {need or 'this'} needs more than {more_than:,}")
    tokens = np.memmap(path, dtype=np.uint16, mode="r") if size else np.zeros(0, dtype=np.uint16)
    if size and (top := int(tokens[:100_000_000].max())) >= GPT2_VOCAB:
        kind = "a padding id of the embedding" if top < GPT2_VOCAB + 7 else "an id of another tokenizer"
        raise ValueError(f"{path} holds token id {top}, {kind}, which GPT-2 text never has: make the file with "
                         "prepare.py")
    return tokens


@contextlib.contextmanager
def atomic_write(*paths):
    """Open PATH.tmp for writing, for each path; if the block succeeds, flush them to disk and rename each onto
    its PATH, so a reader never finds half a file (a crash leaves the old file or none). On any failure, a
    full disk or Ctrl-C too, the temp files are removed."""
    paths = [os.fspath(p) for p in paths]
    tmps, files = [p + ".tmp" for p in paths], []
    if folder := next((p for p in paths if os.path.isdir(p)), None):  # found before any file is replaced
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
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # a full disk, a quota, a file size limit
            reason = "disk full" if e.errno == errno.ENOSPC else e.strerror.lower()
            raise OSError(f"{reason} while writing {paths[0]}: free some space and run again") from None
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
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "backpack"), name)


def download(url, dest):
    """Fetch url into dest, unless dest is there. The bytes go to dest.part, which a cut connection (or a later
    run) resumes with an HTTP Range request; attempts that make no progress are retried with backoff; the size
    is checked against the server's, and the Hugging Face hub's, before dest.part becomes dest. Prints a
    progress line. Raises ConnectionError (run again later) or ValueError (the file is not what it should be)."""
    if os.path.isfile(dest):
        return dest
    part, name = dest + ".part", os.path.basename(dest)
    failures, total, mid_line, answered = 0, None, False, False
    while True:
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        try:
            with requests.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True, timeout=60) as r:
                answered = True
                # a Range is answered 206 "bytes START-END/SIZE", or 416 "bytes */SIZE" when nothing is left
                m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+)", r.headers.get("Content-Range", ""))
                if r.status_code in (206, 416) and m:
                    start, size = int(m[1] or have), int(m[2])
                elif r.status_code == 200:  # the whole file (no Range asked, or the server ignored it)
                    have, start, size = 0, 0, int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
                elif r.status_code == 416:  # nothing at that byte: a stale .part longer than the file
                    os.remove(part)
                    raise requests.RequestException(f"the server has no byte {have:,} (deleted the .part)")
                elif 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    raise ValueError(f"{url} answered HTTP {r.status_code}: check the name or the address")
                else:
                    raise requests.RequestException(f"HTTP {r.status_code}")
                hub = next((int(h.headers["X-Linked-Size"]) for h in (*r.history, r) if "X-Linked-Size" in h.headers),
                           None)  # the hub's size of a file it redirects to its storage
                if total is not None and size is not None and size != total:
                    raise ValueError(f"{url} changed size during the download ({total:,} -> {size:,} bytes); run again")
                total = size
                if r.status_code == 416 and have == total:
                    break  # the .part was already complete
                if start != have or r.status_code == 416:  # e.g. a stale .part longer than the file
                    os.remove(part)
                    raise requests.RequestException(f"the server cannot resume at byte {have:,} (deleted the .part)")
                os.makedirs(os.path.dirname(os.path.abspath(part)), exist_ok=True)  # only once bytes arrive
                with open(part, "ab" if have else "wb") as f:
                    last_print = 0.0
                    for chunk in r.iter_content(chunk_size=DOWNLOAD_CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                        failures = 0  # progress: a flaky connection may take many tries on a big file
                        if time.time() - last_print > 0.5:
                            of_total = f" of {total / 1e6:,.1f}" if total else ""
                            print(f"\r{name}: {have / 1e6:,.1f}{of_total} MB", end="", file=sys.stderr, flush=True)
                            last_print, mid_line = time.time(), True
            if total is None or have == total:
                if hub is not None and have != hub:
                    os.remove(part)
                    raise ValueError(f"{url} gave {have} bytes, but the hub says {hub}; removed them, run again")
                break
            raise requests.RequestException(f"got {have:,} of {total:,} bytes")
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL):
            raise ValueError(f"{url} is not a web address") from None
        except requests.RequestException as e:
            if isinstance(e, requests.ConnectionError) and not answered and failures:  # no answer, twice
                kept = f" ({have:,} bytes of it are kept in {part})" if have else ""
                raise ConnectionError(f"cannot reach {urlparse(url).hostname} to download {dest}{kept}: no network "
                                      "connection, or the host is down; run again later, or use a local copy") from None
            # requests' own wording nests three exceptions deep: keep the part a person needs
            cut, os_error = re.search(r"IncompleteRead\((.*?)\)", str(e)), re.search(r"\[Errno [-\d]+\] ([^'\")]+)", str(e))
            reason = f"connection cut ({cut[1]})" if cut else os_error[1] if os_error else str(e)[:200]
            failures += 1
            if failures >= RETRIES:
                kept = f"; the {have:,} bytes received are kept in {part}" if os.path.isfile(part) else ""
                raise ConnectionError(f"download of {url} failed {RETRIES} times in a row ({reason}){kept}: run "
                                      "again to resume") from None
            print(f"{chr(10) if mid_line else ''}{name}: {reason}; trying again", file=sys.stderr, flush=True)
            mid_line = False
            time.sleep(RETRY_SLEEP * 2 ** (failures - 1))
    if mid_line:
        print(file=sys.stderr)
    os.replace(part, dest)
    return dest
