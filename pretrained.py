"""
Loading any trained Backpack, and saving one in the released layout. backpack.py alone reads
train.py's ckpt.pt and the released layout (Backpack.from_pretrained); this adds downloads by name
(resumable, size-checked, cached in ~/.cache/backpack or $BACKPACK_CACHE), the authors' Lightning
checkpoints, .safetensors files, save_pretrained, and one-line errors that name the file. Nothing in
a file is run: weights_only=True.

    from pretrained import load
    model = load("stanfordnlp/backpack-gpt2")
    model = load("out")  # a train.py run; or "backpack-micro", a folder or a file
"""

import errno
import json
import math
import os
import pickle
import re

import torch

from backpack import (CONV1D, RELEASED_CONFIG, RELEASED_PREFIXES, Backpack, BackpackConfig,
                      released_to_ours)
from files import atomic_write, cache_path, download

HUB_NAME = "stanfordnlp/backpack-gpt2"
# the authors' checkpoints
STANFORD_URL = "https://downloads.cs.stanford.edu/nlp/data/backpacks-acl2023/main"
LIGHTNING_NAME = re.compile(r"((backpack|gpt2)-(micro|mini|small))(-flash-fp16\.ckpt)?")


def load(source):
    """A trained model, in eval mode, float32, on CPU, from: a train.py run folder or its ckpt.pt
    (finetune_senses.py's too, with its sense_edits); a folder of the released layout (config.json
    with pytorch_model.bin or model.safetensors); a Lightning .ckpt; or a published name:
    stanfordnlp/backpack-gpt2, backpack-{micro,mini,small}, gpt2-{micro,mini,small}. Every file is
    checked before a model is built: a mistake is a ValueError that names it."""
    path = str(source)
    if not os.path.exists(path):
        path = fetch(path)
    if os.path.isdir(path):
        path = model_file(path)
    try:
        config, tensors, edits = read_model(path)
        check_tensors(config, tensors, edits)  # before a model of the config's size is built
        model = Backpack.from_tensors(config, tensors)
    except PermissionError:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
            OSError, AttributeError, IndexError, OverflowError, MemoryError) as e:
        # a file that is not what it should be, whichever way
        raise ValueError(f"cannot read {path}: {what_went_wrong(path, e)}") from None
    model.sense_edits.update(edits)
    return model


def model_file(folder):
    """The one model file in a folder: train.py's ckpt.pt, or the released layout's weights."""
    if not os.access(folder, os.R_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "Permission denied", folder)
    # lexists: a dangling link is found, and said to be one
    found = [f for f in ("ckpt.pt", "model.safetensors", "pytorch_model.bin")
             if os.path.lexists(os.path.join(folder, f))]
    if not found:
        raise FileNotFoundError(f"{folder}/ has no ckpt.pt, pytorch_model.bin or model.safetensors;"
                                f" train a model with `python train.py`, or use {HUB_NAME}")
    if len(found) > 1:  # two models, perhaps different ones: which is meant?
        raise ValueError(f"{folder}/ holds both {found[0]} and {found[1]}: "
                         "give the path of the file you mean")
    path = os.path.join(folder, found[0])
    if not os.path.isfile(path):
        dangling = os.path.islink(path) and not os.path.exists(path)
        raise ValueError(f"{path} is {'a link to nothing' if dangling else 'not a file'}: "
                         "give the model's folder or file")
    return path


CONFIG_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "num_senses",
                 "sense_intermediate_scale")


def read_model(path):
    """(BackpackConfig, {our name: tensor}, sense_edits) from any model file that load() takes."""
    if path.endswith(".ckpt"):
        return *read_lightning(path), {}
    if path.endswith(".safetensors"):
        return *released_to_ours(read_safetensors(path), read_config_json(path)), {}
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a checkpoint's dict of tensors")
    if "model_args" not in state:
        return *released_to_ours(state, read_config_json(path)), {}
    # train.py's checkpoint (or finetune_senses.py's); a default would be a silent guess
    args = state["model_args"]
    if not isinstance(args, dict) or (missing := [k for k in CONFIG_FIELDS if k not in args]):
        lacking = missing[0] if isinstance(args, dict) else "everything"
        raise ValueError(f"its model_args lack {lacking}")
    # _orig_mod.: a compiled model's names
    tensors = {k.removeprefix("_orig_mod."): t for k, t in state["model"].items()}
    return BackpackConfig(**args), tensors, state.get("sense_edits", {})


def read_checkpoint(path, mmap=True):
    """What torch.save wrote into a checkpoint: train.py's ckpt.pt (finetune_senses.py's too) or the
    released pytorch_model.bin. weights_only: tensors and plain Python types only, nothing in the
    file is run. mmap: the tensors are read from the file as they are used (the whole file is read
    at once otherwise)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def read_train_checkpoint(path):
    """train.py's ckpt.pt, read whole to resume from, or a one-line ValueError: it cannot be read,
    or it lacks an entry a resume needs."""
    try:
        ckpt = read_checkpoint(path, mmap=False)
    except Exception as e:  # truncated, or no checkpoint: torch says much, and weights_only=False
        raise ValueError(f"cannot read {path} (truncated, or not a train.py checkpoint?): "
                         f"{type(e).__name__}") from None
    kinds = dict(model_args=dict, model=dict, optimizer=dict, iter_num=int, best_val_loss=float,
                 config=dict)
    if not isinstance(ckpt, dict) or any(not isinstance(ckpt.get(k), kind)
                                         for k, kind in kinds.items()):
        raise ValueError(f"{path} is not a train.py checkpoint; start a new run in another "
                         "--out_dir")
    return ckpt


def write_checkpoint(out_dir, ckpt, **notes):
    """out_dir/ckpt.pt, as train.py and finetune_senses.py write it (a dict of tensors and plain
    Python types: model_args, model and more), and out_dir/NAME.json for each NAME=dict in notes:
    written atomically, together."""
    names = [os.path.join(out_dir, f) for f in ["ckpt.pt"] + [f"{name}.json" for name in notes]]
    with atomic_write(*names) as files:
        files = files if notes else [files]
        torch.save(ckpt, files[0])
        for f, record in zip(files[1:], notes.values()):
            f.write(json.dumps(record, indent=1).encode())


def read_config_json(path):
    """The config.json beside a weights file, as a dict, or an error that names config.json."""
    name = os.path.join(os.path.dirname(path), "config.json")
    with open(name, "rb") as f:  # missing: what_went_wrong says neither layout
        try:
            config = json.loads(f.read().decode("utf-8-sig"))
        except ValueError as e:
            raise ValueError(f"{name} is not JSON ({e}): restore it") from None
    if not isinstance(config, dict):
        raise ValueError(f"{name} holds a JSON {type(config).__name__}, not an object: restore it")
    return config


def check_tensors(config, tensors, edits):
    """A file's tensors against its config before a model is built: no more layers than the file
    holds (a config of 10**30 layers would be built forever), floating-point and finite values, and
    finetune_senses.py's edits. load_state_dict names a missing, unexpected or misshapen tensor
    afterwards."""
    layers = 1 + max((int(m[1]) for k in tensors if (m := re.match(r"h\.(\d+)\.", k))), default=-1)
    if config.n_layer > layers:
        raise ValueError(f"its config says n_layer={config.n_layer}, "
                         f"but the file holds {layers} layers")
    for name, t in tensors.items():
        if not t.is_floating_point():  # int or bool weights would be cast to float without a word
            dtype = str(t.dtype).removeprefix("torch.")
            raise ValueError(f"its tensor {name} is {dtype}, not floating point")
        if not torch.isfinite(t).all():
            raise ValueError(f"its tensor {name} holds nan or inf (a diverged run?)")
    shape = (config.num_senses, config.n_embd)  # finetune_senses.py's edits, checked as weights are
    if not isinstance(edits, dict) or any(type(t) is not int or not 0 <= t < config.vocab_size
                                          or getattr(s, "shape", None) != shape
                                          for t, s in edits.items()):
        raise ValueError(f"its sense_edits are not {{token id: a {shape} tensor}}")


def what_went_wrong(path, e):
    """The one-line reason a checkpoint file could not be read, with what to do about it."""
    try:
        with open(path, "rb") as f:
            if f.read(24) == b"version https://git-lfs.":
                return ("it is a Git LFS pointer, not the weights: run `git lfs pull` in its "
                        "repository")
    except OSError:  # a folder or an unreadable file: the error says which
        pass
    if isinstance(e, KeyError):
        return f"{e} is missing from its config.json or checkpoint"
    if isinstance(e, (TypeError, AttributeError, IndexError, OverflowError, MemoryError)):
        return ("it is not laid out as a Backpack checkpoint of any kind this code reads "
                f"({type(e).__name__}: {e})")
    if isinstance(e, FileNotFoundError) and str(e.filename).endswith("config.json"):
        return ("it is neither train.py's ckpt.pt (no model_args) nor the released layout "
                "(no config.json beside it)")
    message = " ".join(str(e).split())  # torch's errors span several lines
    if "Unsupported global" in message:  # and torch's advice, weights_only=False, would run them
        return ("it holds Python objects that loading would run, and nothing in a checkpoint is "
                "run here")
    if (isinstance(e, (pickle.UnpicklingError, EOFError))
            or "PytorchStreamReader" in message or "mmap" in message):
        return "it is no checkpoint that torch can read (truncated? delete it and fetch it again)"
    return message


def fetch(name):
    """The local path of a published model, downloaded into the cache first if need be."""
    if name == HUB_NAME:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        url = f"{endpoint}/{name}/resolve/main/"
        folder = cache_path(name)
        download(url + "config.json", os.path.join(folder, "config.json"))
        # a model.safetensors a user put there is used
        if os.path.isfile(os.path.join(folder, "model.safetensors")):
            return os.path.join(folder, "model.safetensors")
        return download(url + "pytorch_model.bin", os.path.join(folder, "pytorch_model.bin"))
    if m := LIGHTNING_NAME.fullmatch(name):
        url = (os.environ.get("BACKPACK_STANFORD_URL") or STANFORD_URL).rstrip("/")
        return download(f"{url}/{m[1]}-flash-fp16.ckpt", cache_path(f"{m[1]}-flash-fp16.ckpt"))
    raise FileNotFoundError(f"{name} is no file or folder, nor a published model ({HUB_NAME}, "
                            "backpack-{micro,mini,small}, gpt2-{micro,mini,small}); "
                            "train one with `python train.py`")


def save_pretrained(model, path):
    """config.json and pytorch_model.bin in the released stanfordnlp/backpack-gpt2 layout (Conv1D
    weights (in, out), every tied alias present), written atomically. load() reads it back exactly,
    and so does the released model code (config.json's auto_map names its two .py files, to copy
    beside it). Edits of senses are not saved (the layout has no place for them), and dropout is
    written for the released code but not read back."""
    c = model.config
    if not str(path):  # config.json and the weights would land in the working folder
        raise ValueError("save_pretrained: the path is empty: give the folder to write")
    if not c.num_senses or not c.bias:
        raise ValueError("save_pretrained: the released layout needs senses and biases; save this "
                         "model as train.py does, torch.save({'model_args': asdict(model.config), "
                         "'model': model.state_dict()}, path)")
    state = {}
    for key, t in model.state_dict().items():
        t = t.detach().to("cpu", torch.float32)
        for name in released_names(key):  # the tied aliases share one tensor, stored once
            state[name] = t.t().contiguous() if CONV1D.search(key) else t
    auto_map = {"AutoConfig": "configuration_backpack_gpt2.BackpackGPT2Config",
                "AutoModelForCausalLM": "modeling_backpack_gpt2.BackpackGPT2LMHeadModel"}
    config = {"architectures": ["BackpackGPT2LMHeadModel"], "model_type": "gpt2",
              "auto_map": auto_map,
              **{theirs: getattr(c, ours) for ours, theirs in RELEASED_CONFIG.items()},
              "activation_function": "gelu_new", "scale_attn_by_inverse_layer_idx": True,
              "scale_attn_weights": True, "n_inner": None, "resid_pdrop": c.dropout,
              "embd_pdrop": c.dropout, "attn_pdrop": c.dropout, "bos_token_id": 50256,
              "eos_token_id": 50256, "torch_dtype": "float32"}
    names = os.path.join(path, "pytorch_model.bin"), os.path.join(path, "config.json")
    with atomic_write(*names) as (weights, cfg):
        torch.save(state, weights)
        cfg.write(json.dumps(config, indent=2).encode())


def released_names(key):
    """Our parameter name -> its names in the released file (the longest matching prefix's)."""
    hits = [(len(ours), theirs + key[len(ours):]) for theirs, ours in RELEASED_PREFIXES.items()
            if key.startswith(ours)]
    return [name for n, name in hits if n == max(hits)[0]]


# -- the authors' Lightning checkpoints ------------------------------------------------------------
# regex rewrites, applied in turn, of the authors' training keys onto ours (all nn.Linear)
LIGHTNING_RULES = [
    (r"^model\.(transformer\.)?(gpt2_model\.)?", ""), (r"^lm_head\.", "wte."),
    (r"^(content_model\.)?embeddings\.word_embeddings\.", "wte."),  # tied aliases
    (r"^(content_model\.)?embeddings\.position_embeddings\.", "wpe."),
    (r"^ln_0\.", "h.0.ln_1."),
    # their block: attention -> add -> norm1 -> MLP -> add -> norm2; norm2 is the next block's ln_1
    (r"^layers\.(\d+)\.norm1\.", r"h.\1.ln_2."),
    (r"^layers\.(\d+)\.norm2\.", lambda m: f"h.{int(m[1]) + 1}.ln_1."),
    (r"^layers\.(\d+)\.mixer\.Wqkv\.", r"h.\1.attn.c_attn."),
    (r"^layers\.(\d+)\.mixer\.out_proj\.", r"h.\1.attn.c_proj."),
    (r"^layers\.(\d+)\.mlp\.", r"h.\1.mlp."),
    (r"^content_model\.layers\.0\.norm", "sense_network.ln_"),
    (r"^content_model\.(layers\.0\.)?", "sense_network."),
    (r"\.fc1\.", ".c_fc."), (r"\.fc2\.", ".c_proj."),
    (r"^contextualization_attn\.Wqkv\.", "sense_weight_net."),
]


def read_lightning(path):
    """(BackpackConfig, {our name: tensor}) from a Lightning checkpoint of the authors' code. Keys
    outside "model." are the training task's (metrics, losses); the config comes from the tensors'
    shapes."""
    # every global the file names besides tensors and plain data becomes an Inert: nothing is run
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    with torch.serialization.safe_globals([(Inert, name) for name in names]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError("it is not a Lightning checkpoint (it has no state_dict)")
    sd = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    n_layer = len([k for k in sd if re.search(r"layers\.\d+\.mixer\.Wqkv\.weight$", k)])
    rules = LIGHTNING_RULES + [(rf"^h\.{n_layer}\.ln_1\.", "ln_f.")]  # the last norm2 is ln_f
    tensors = {}
    for key, t in sd.items():
        name = key
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        if name in tensors and not torch.equal(tensors[name], t):  # which would the model be?
            raise ValueError(f"{key} differs from the tensor it is tied to")
        tensors[name] = t
    if "wte.weight" not in tensors or "wpe.weight" not in tensors:
        raise ValueError("it has no word and position embeddings: not a Backpack's")
    if tensors["wte.weight"].dim() != 2 or 0 in tensors["wte.weight"].shape:  # d divides below
        raise ValueError(f"its word embeddings are {tuple(tensors['wte.weight'].shape)}, "
                         "not (vocabulary, width)")
    vocab_size, d = tensors["wte.weight"].shape
    senses_out = tensors.get("sense_network.final_mlp.c_proj.weight")
    # n_head shows in no shape: from the hyperparameters, else the paper's sizes (README's table)
    n_head = find_int(ckpt.get("hyper_parameters"), "n_head") or {384: 6, 640: 8, 768: 12}.get(d)
    if n_head is None:
        raise ValueError(f"it does not say its number of heads, and its width {d} is none of the "
                         "paper's (384, 640, 768)")
    config = dict(block_size=tensors["wpe.weight"].shape[0], vocab_size=vocab_size, n_layer=n_layer,
                  n_head=n_head, n_embd=d,
                  num_senses=0 if senses_out is None else senses_out.shape[0] // d,
                  sense_intermediate_scale=tensors.get("sense_network.final_mlp.c_fc.weight",
                                                       torch.empty(4 * d)).shape[0] // d)
    return BackpackConfig(**config), tensors


def find_int(obj, key, seen=None):
    """The int under key in nested dicts and Inert stand-ins (omegaconf nodes keep it in _val)."""
    seen, obj = seen or set(), getattr(obj, "state", None) if isinstance(obj, Inert) else obj
    if not isinstance(obj, dict) or id(obj) in seen:
        return None
    seen.add(id(obj))
    value = obj.get(key)
    value = value.state.get("_val") if isinstance(getattr(value, "state", None), dict) else value
    if type(value) is int:
        return value
    found = (find_int(item, key, seen) for item in obj.values())  # lazily: the first one found
    return next((v for v in found if v is not None), None)


class Inert:
    """Stands in for every class or function a checkpoint names besides tensors and plain data
    (Lightning pickles hyperparameters and callbacks so): it keeps what the file passes and calls
    nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def read_safetensors(path):
    """The tensors of a .safetensors file, without the safetensors package: an 8-byte little-endian
    header size, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian
    data, each tensor's bytes exactly where its offsets say, one after another (as the safetensors
    package requires)."""
    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
              "BOOL": torch.bool}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        if not 2 <= header_size <= size - 8:
            raise ValueError(f"its header size ({header_size:,} bytes) does not fit in the file "
                             f"({size:,} bytes): not a .safetensors file, or truncated (fetch it "
                             "again)")
        try:
            header = json.loads(f.read(header_size).decode("utf-8"))
        except ValueError:  # not UTF-8, not JSON
            raise ValueError("its header is not JSON: not a .safetensors file, or truncated "
                             "(fetch it again)") from None
        data = torch.frombuffer(bytearray(f.read()) or bytearray(1), dtype=torch.uint8)
    header.pop("__metadata__", None)
    tensors, end = {}, 0
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
        start, stop = info["data_offsets"]
        if info["dtype"] not in dtypes:
            raise ValueError(f"its tensor {name} has dtype {info['dtype']}, "
                             "which this code does not read")
        itemsize = dtypes[info["dtype"]].itemsize
        if start != end or stop - start != math.prod(info["shape"]) * itemsize:
            raise ValueError(f"its tensor {name}'s data_offsets [{start}, {stop}] do not follow "
                             "the tensor before it or do not fit its shape and dtype: the file is "
                             "corrupt (fetch it again)")
        end = stop
        if stop > size - 8 - header_size:
            raise ValueError("the file ends before its last tensor "
                             "(truncated? delete it and fetch it again)")
        tensors[name] = data[start:stop].clone().view(dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors
