"""
Command-line configuration for train.py, in nanoGPT's style: the settings are the module-level globals of
the script; a config file (plain Python assigning some of them) and --key=value arguments override them,
in the order given:

    python train.py config/train_backpack_micro.py --batch_size=8 --compile=True

Unlike nanoGPT's exec-based configurator, a misspelled key or a value of the wrong type is a one-line
error (train.py: unknown config key --lerning_rate (did you mean --learning_rate?)), not a silent new
global or a traceback halfway through the run.
"""

import difflib
import sys
from ast import literal_eval


def fail(prog, message):
    sys.exit(f"{prog}: {message}")


def _convert(prog, where, key, value, default):
    """value (parsed from a config file or the command line) as the type of default, or a clear error."""
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
        return str(value)
    else:
        return value
    fail(prog, f"{where}{key} expects {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")


def _unknown(prog, key, known, dashes="--", source=""):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {dashes}{close[0]}?)" if close else ""
    fail(prog, f"{source}unknown config key {dashes}{key}{hint}")


def configure(settings, argv, prog, help_text=""):
    """Apply the config files and --key=value arguments in argv to the dict settings (e.g. globals()),
    whose current values give each key's default and type. Returns {key: new value} of what changed."""
    known = [k for k, v in settings.items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))]
    overrides = {}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text.strip() + "\n\nSettings (--key=value) and their current values:")
            for k in known:
                print(f"  --{k}={settings[k]!r}")
            sys.exit(0)
        if not arg.startswith("--"):  # a config file: plain Python that assigns some of the settings
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError as e:
                fail(prog, f"cannot read config file {arg}: {e.strerror}")
            namespace = {}
            try:
                exec(compile(source, arg, "exec"), namespace)
            except Exception as e:
                fail(prog, f"error in config file {arg}: {type(e).__name__}: {e}")
            for key, value in namespace.items():
                if key.startswith("_") or type(value).__name__ in ("module", "function", "type"):
                    continue  # imports and helpers inside the config file
                if key not in known:
                    _unknown(prog, key, known, dashes="", source=f"{arg} sets ")
                overrides[key] = settings[key] = _convert(prog, f"{arg}: ", key, value, settings[key])
            continue
        key, eq, text = arg[2:].partition("=")
        if key not in known:
            _unknown(prog, key, known)
        if not eq:  # a bare --flag switches a boolean on
            if type(settings[key]) is not bool:
                fail(prog, f"--{key} needs a value: --{key}=...")
            text = "True"
        if isinstance(settings[key], str):
            value = text  # strings need no quotes: --init_from=resume
        else:
            try:
                value = literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        overrides[key] = settings[key] = _convert(prog, "--", key, value, settings[key])
    return overrides
