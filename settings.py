"""
The scripts' settings, their one-line errors, and the device and precision they run on.

Settings follow nanoGPT: each script declares its settings once, at its top, as
`settings = dict(...)`, one per line with its default and a comment (what --help shows); config
files (plain Python that assigns some of them) and --key=value arguments override them, in the
order given:

    python train.py config/train_backpack_micro.py --batch_size=8 --compile=True
    python senses.py --word science            # --key value works too; a bare --flag is True
    python evaluate.py --models out out-gpt2   # a setting whose default is a list takes several

Unlike nanoGPT's exec-based configurator, a misspelled key, a value of the wrong type or one outside
the values a script declares allowed is a one-line error (unknown config key --lerning_rate (did you
mean --learning_rate?); --dropout must be in [0, 1), got 1.5), not a silent new global or a wrong
run.
"""

import ast
import contextlib
import difflib
import os
import sys
import time
from ast import literal_eval

import torch

from files import read_text


def configure(defaults, allowed, argv, script):
    """The settings of a script (its file: script) after the config files and --key=value (or
    --key value) arguments in argv: (settings, given), all of them and those argv set. defaults, the
    script's settings dict, gives each key's default and type, and is left as it is; the values are
    checked against allowed: {key: an interval such as "[0, 1)" or "(0, inf)" for a number, or for
    the length of a string; or a tuple of the choices for a string}. --help prints the script's
    docstring and its settings with their comments."""
    settings, known = dict(defaults), list(defaults)
    given, args = {}, list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print_help(settings, allowed, script)
            raise SystemExit(0)
        # a config file: plain Python assigning some of the settings
        if not arg.startswith("--"):
            if not arg.endswith(".py"):
                raise ValueError(f"{arg!r} is neither a --key=value setting nor a config file "
                                 "(.py); quote a value with spaces: --start='The old man'")
            for key, value in read_config_file(arg).items():
                check_known(key, known, f"{arg} sets ")
                given[key] = settings[key] = convert(f"{arg}: {key}", value, settings[key])
            continue
        key, eq, text = arg[2:].partition("=")
        check_known(key, known, "")
        if not eq:  # --key value, or a bare --flag (with an optional True/False after it)
            takes_bool = type(settings[key]) is bool
            if args and not args[0].startswith("--") and (
                    not takes_bool or args[0].lower() in ("true", "false", "1", "0")):
                text = args.pop(0)
            elif takes_bool:
                text = "True"
            else:  # a value that starts with -- needs the = form
                raise ValueError(f"--{key} needs a value: --{key}=...")
        # every value given is kept: --models a b, --scale a --scale b
        if isinstance(settings[key], list):
            values = [text]  # ... up to the next --key or config file
            while not eq and args and not args[0].startswith("--") and not args[0].endswith(".py"):
                values.append(args.pop(0))
            given[key] = settings[key] = given.get(key, []) + values
            continue
        if isinstance(settings[key], str):
            value = text  # strings need no quotes: --init_from=resume
            # how Python keeps the bytes of an argument
            if any("\udc80" <= c <= "\udcff" for c in text):
                raise ValueError(f"--{key} is not UTF-8 text (the shell passed bytes that are "
                                 "not): give UTF-8")
        else:
            try:
                value = literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        given[key] = settings[key] = convert(f"--{key}", value, settings[key])
    check_allowed(settings, allowed)
    return settings, given


def print_help(settings, allowed, script):
    """A script's docstring, then each setting: --key=default, the values allowed, and the comment
    beside the setting in the script's `settings = dict(...)` (and the comment lines above it)."""
    source = read_text(script)
    tree, lines, comments = ast.parse(source), source.split("\n"), {}
    call = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "settings")
    end, headings = call.lineno, {}  # where the previous setting's lines end
    for keyword in call.keywords:
        above = [line.strip()[1:].strip() for line in lines[end:keyword.value.lineno - 1]]
        # "# -- I/O" heads a group of settings; it is no setting's comment
        headings[keyword.arg] = [text for text in above if text.startswith("-- ")]
        beside = (lines[keyword.value.end_lineno - 1][keyword.value.end_col_offset:]
                  .partition("#")[2].strip())
        comments[keyword.arg] = " ".join(text for text in [*above, beside]
                                          if text and not text.startswith("-- "))
        end = keyword.value.end_lineno
    print((ast.get_docstring(tree) or "").strip() + "\n\nSettings (--key=value), their defaults "
          "and the values allowed:")
    for key, value in settings.items():
        for heading in headings.get(key, []):
            print(f"  {heading}")
        print(f"  --{key}={value!r}" + (f"  {allowed[key]}" if key in allowed else ""))
        if comments.get(key):
            print(f"      {comments[key]}")


def check_allowed(settings, allowed):
    """Settings against their allowed values (see configure): a one-line error for the first that is
    not."""
    for key, rule in allowed.items():
        value = settings[key]
        if isinstance(rule, tuple) and value not in rule:
            raise ValueError(f"--{key} must be one of {', '.join(rule)}, got {value!r}")
        if isinstance(rule, str) and isinstance(value, str) and not in_interval(len(value), rule):
            raise ValueError(f"--{key} must be {rule} characters long, got {value!r}" if value
                             else f"--{key} is empty")
        if isinstance(rule, str) and not isinstance(value, str) and not in_interval(value, rule):
            raise ValueError(f"--{key} must be in {rule}, got {value!r}")


def in_interval(x, interval):
    """Whether x lies in an interval such as "[0, 1)" or "(0, inf)". nan lies in none."""
    low, high = (float(end) for end in interval[1:-1].split(","))
    return ((low <= x if interval[0] == "[" else low < x)
            and (x <= high if interval[-1] == "]" else x < high))


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
    """value (parsed from a config file or the command line) as the type of default, or a one-line
    error."""
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
    raise ValueError(f"{name} expects {'an' if kind is int else 'a'} {kind.__name__}, "
                     f"got {value!r}")


def one_line_errors():
    """Make this script end on an expected error with one line on stderr, `script.py: message`, not
    a traceback: ValueError (bad settings or input), OSError (files, the disk, the network), running
    out of memory, and Ctrl-C. Under torchrun an error before the processes connect is the same on
    every rank, and only rank 0 prints it; after that every rank prints its own. Any other exception
    is a bug: a traceback."""
    prog = os.path.basename(sys.argv[0])

    def hook(kind, error, tb):
        memory = (issubclass(kind, (MemoryError, torch.OutOfMemoryError))
                  or "can't allocate memory" in str(error))
        if not (issubclass(kind, (ValueError, OSError, KeyboardInterrupt)) or memory):
            return sys.__excepthook__(kind, error, tb)
        message = str(error)
        # "No such file or directory" and the like
        if isinstance(error, OSError) and error.filename:
            message = f"{error.filename}: {error.strerror}"
        if memory:
            message = (f"out of memory ({message.splitlines()[0] if message else kind.__name__}): "
                       "use smaller settings")
        if kind is KeyboardInterrupt:
            message = "interrupted" + (f"; {message}" if message else "")
        rank = os.environ.get("RANK", "0")  # Ctrl-C reaches every rank: rank 0 says so
        if rank == "0" or "TORCHELASTIC_RUN_ID" not in os.environ or (
                torch.distributed.is_initialized() and kind is not KeyboardInterrupt):
            where = "" if rank == "0" else f" (rank {rank})"
            print(f"{prog}{where}: {' '.join(message.split())}", file=sys.stderr)  # one line
        elif kind is not KeyboardInterrupt:
            time.sleep(5)  # rank 0 meets the same error: let it print before torchrun stops it
    sys.excepthook = hook


def device_and_autocast(device, dtype):
    """(device_type, dtype, autocast context) for the --device and --dtype settings. dtype 'auto' is
    bfloat16 on CUDA where supported, else float16 (which needs a GradScaler to train); float32 on
    CPU."""
    device_type = "cuda" if device.startswith("cuda") else device.split(":")[0]
    if device_type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or mps, not {device!r}")
    if (device_type == "cuda" and not torch.cuda.is_available()
            or device_type == "mps" and not torch.backends.mps.is_available()):
        raise ValueError(f"--device={device}, but this PyTorch has no {device_type.upper()} "
                         "device; use --device=cpu")
    if dtype == "auto":
        dtype = (("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
                 if device_type == "cuda" else "float32")
    autocast = (torch.autocast(device_type, dtype=getattr(torch, dtype)) if dtype != "float32"
                else contextlib.nullcontext())
    return device_type, dtype, autocast
