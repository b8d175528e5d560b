"""
Fetching and reading the published Backpack checkpoints, for Backpack.from_pretrained in backpack.py.

backpack.py alone loads train.py's ckpt.pt and the released stanfordnlp/backpack-gpt2 layout from a
local directory (a `git clone` of the model repo, or save_pretrained's output). This file adds what
needs more machinery: downloading by name (resumable, size-checked, cached), the authors' PyTorch
Lightning training checkpoints (backpack-{micro,mini,small}), and .safetensors files. Nothing in a
file is ever run: pickles load with torch.load(weights_only=True).
"""

import json
import os
import re
import sys

import torch

try:  # beside backpack.py in a package, or at the top level
    from .backpack import CONV1D, RELEASED_CONFIG, released_names, unreadable
except ImportError:
    from backpack import CONV1D, RELEASED_CONFIG, released_names, unreadable

STANFORD_URL = "https://downloads.cs.stanford.edu/nlp/data/backpacks-acl2023/main"  # the authors' checkpoints

LIGHTNING_RULES = [  # regex rewrites, applied in turn, of the authors' training keys onto ours (all nn.Linear)
    (r"^model\.(transformer\.)?(gpt2_model\.)?", ""), (r"^lm_head\.", "wte."),
    (r"^(content_model\.)?embeddings\.word_embeddings\.", "wte."),  # tied aliases
    (r"^(content_model\.)?embeddings\.position_embeddings\.", "wpe."), (r"^ln_0\.", "h.0.ln_1."),
    # their block is attention -> add -> norm1 -> MLP -> add -> norm2, so norm2 is the next block's ln_1
    (r"^layers\.(\d+)\.norm1\.", r"h.\1.ln_2."), (r"^layers\.(\d+)\.norm2\.", lambda m: f"h.{int(m[1]) + 1}.ln_1."),
    (r"^layers\.(\d+)\.mixer\.Wqkv\.", r"h.\1.attn.c_attn."),
    (r"^layers\.(\d+)\.mixer\.out_proj\.", r"h.\1.attn.c_proj."),
    (r"^layers\.(\d+)\.mlp\.", r"h.\1.mlp."), (r"^content_model\.layers\.0\.norm", "sense_network.ln_"),
    (r"^content_model\.(layers\.0\.)?", "sense_network."), (r"\.fc1\.", ".c_fc."), (r"\.fc2\.", ".c_proj."),
    (r"^contextualization_attn\.Wqkv\.", "sense_weight_net."),
]



def read(path):
    """What from_pretrained needs from a .safetensors file (its tensors) or a Lightning .ckpt."""
    return read_safetensors(path) if path.endswith(".safetensors") else read_lightning(path)


def read_lightning(path):
    """A Lightning checkpoint of the authors' code, mapped onto our names: {"lightning_config": BackpackConfig
    kwargs, "tensors": [(our name, tensor, file's name)]}. Keys outside "model." are the training task's
    (metrics, losses). The config comes from the tensors' shapes."""
    try:  # every global the file names besides tensors and plain data becomes an Inert: nothing is run
        stand_ins = [(Inert, name) for name in torch.serialization.get_unsafe_globals_in_checkpoint(path)]
        with torch.serialization.safe_globals(stand_ins):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise unreadable(path, e) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"from_pretrained: {path} is not a Lightning checkpoint (it has no state_dict)")
    sd = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    n_layer = len([k for k in sd if re.search(r"layers\.\d+\.mixer\.Wqkv\.weight$", k)])
    tensors = []
    for key, t in sd.items():
        ours = key
        for pattern, repl in LIGHTNING_RULES + [(rf"^h\.{n_layer}\.ln_1\.", "ln_f.")]:  # the last norm2: ln_f
            ours = re.sub(pattern, repl, ours)
        tensors.append((ours, t, key))
    shapes = {ours: t.shape for ours, t, _ in tensors}
    if "wte.weight" not in shapes or "wpe.weight" not in shapes:
        raise ValueError(f"from_pretrained: {path} has no word and position embeddings: not a Backpack's")
    (vocab_size, d), senses_out = shapes["wte.weight"], shapes.get("sense_network.final_mlp.c_proj.weight", [0])[0]
    # n_head shows in no shape: from the hyperparameters, else the paper's sizes (spec section 2)
    n_head = find_int(ckpt.get("hyper_parameters"), "n_head") or {384: 6, 640: 8, 768: 12}.get(d)
    if n_head is None:
        raise ValueError(f"from_pretrained: {path} does not say its number of heads, and its width {d} is none of "
                         "the paper's models (384, 640, 768)")
    config = dict(block_size=shapes["wpe.weight"][0], vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=d,
                  num_senses=senses_out // d,
                  sense_intermediate_scale=shapes.get("sense_network.final_mlp.c_fc.weight", [4 * d])[0] // d)
    return {"lightning_config": config, "tensors": tensors}


def find_int(obj, key, seen=None):
    """The int stored under key in nested dicts and Inert stand-ins (an omegaconf node keeps it in _val)."""
    seen, obj = seen or set(), getattr(obj, "state", None) if isinstance(obj, Inert) else obj
    if not isinstance(obj, dict) or id(obj) in seen:
        return None
    seen.add(id(obj))
    value = obj.get(key)
    value = value.state.get("_val") if isinstance(getattr(value, "state", None), dict) else value
    if type(value) is int:
        return value
    return next((v for v in (find_int(item, key, seen) for item in obj.values()) if v is not None), None)


class Inert:
    """Stands in for every class or function a checkpoint names besides tensors and plain data (Lightning
    pickles hyperparameters and callbacks so): it keeps what the file passes and calls nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def read_safetensors(path):
    """The tensors of a .safetensors file, without the safetensors package: an 8-byte little-endian
    header size, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian data."""
    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            data = torch.frombuffer(bytearray(f.read()) or bytearray(1), dtype=torch.uint8)
        header.pop("__metadata__", None)
        if any(info["data_offsets"][1] > len(data) for info in header.values()):
            raise ValueError("the file ends before its last tensor (truncated? delete it and fetch it again)")
        return {name: data[info["data_offsets"][0]:info["data_offsets"][1]].clone().view(dtypes[info["dtype"]])
                .reshape(info["shape"]) for name, info in header.items()}
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError, MemoryError, OverflowError) as e:
        raise ValueError(f"from_pretrained: cannot read {path} as a .safetensors file: {e!r}") from None


def fetch(name):
    """The local path of a published checkpoint, downloaded into the cache first if needed:
    stanfordnlp/backpack-gpt2 (a directory), backpack-/gpt2-{micro,mini,small} (a Lightning file)."""
    cache = os.environ.get("BACKPACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "backpack")
    if name == "stanfordnlp/backpack-gpt2":
        url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')}/{name}/resolve/main/"
        local = download(url + "config.json", os.path.join(cache, name, "config.json"))[:-len("config.json")]
        if not os.path.isfile(local + "model.safetensors"):  # where a user has put one there, it is used
            download(url + "pytorch_model.bin", local + "pytorch_model.bin")
        return local
    if m := re.fullmatch(r"((backpack|gpt2)-(micro|mini|small))(-flash-fp16\.ckpt)?", name):
        url = os.environ.get("BACKPACK_STANFORD_URL") or STANFORD_URL
        return download(f"{url.rstrip('/')}/{m[1]}-flash-fp16.ckpt", os.path.join(cache, f"{m[1]}-flash-fp16.ckpt"))
    raise FileNotFoundError(f"from_pretrained: {name} is not a file or directory, nor stanfordnlp/backpack-gpt2 or "
                            "backpack-{micro,mini,small} or gpt2-{micro,mini,small}")


def download(url, dest, attempts=5):
    """Fetch url into dest unless it is there: resumable (HTTP Range into dest.part, across calls too),
    checked against the server's and the hub's sizes, with a progress line. Returns dest."""
    if os.path.isfile(dest):
        return dest
    import requests  # needed only to download
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part, have, total, hub, error = dest + ".part", 0, None, None, None
    for _ in range(attempts):
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        try:
            with requests.get(url, headers={"Range": f"bytes={have}-"}, stream=True, timeout=60) as r:
                if r.status_code not in (200, 206, 416):
                    raise ValueError(f"download: {url} answered HTTP {r.status_code}")
                # a 200 is the whole file; a 206 elsewhere than asked, or a 416: the part does not fit, restart
                fits = r.status_code == 200 or r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
                have = have if r.status_code == 206 and fits else 0
                size = r.headers.get("Content-Range", "").rpartition("/")[2] or r.headers.get("Content-Length")
                total = int(size) if size and size.isdigit() else None
                hub = next((int(h.headers["X-Linked-Size"]) for h in (*r.history, r)  # the hub's size of the file
                            if "X-Linked-Size" in h.headers), hub)
                with open(part, "ab" if have else "wb") as f:
                    for chunk in r.iter_content(1 << 16) if fits else ():
                        f.write(chunk)
                        have += len(chunk)
                        print(f"\rdownloading {url}: {have / 1e6:.1f} of {(total or 0) / 1e6:.1f} MB", end="",
                              file=sys.stderr, flush=True)
            if fits and have == (total or have):
                break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            error = e  # a cut connection: resume from what arrived
    else:
        raise ConnectionError(f"download: cannot fetch {url} ({error}); the {have} bytes received are kept in "
                              f"{part}: run again to resume")
    print(file=sys.stderr)
    if hub is not None and have != hub:
        os.remove(part)
        raise ValueError(f"download: {url} gave {have} bytes, but the hub says {hub}; removed them, try again")
    os.replace(part, dest)
    return dest


def save_released(model, path):
    """Backpack.save_pretrained: config.json and pytorch_model.bin in the released layout, written atomically."""
    c = model.config
    if not c.num_senses or not c.bias:
        raise ValueError("save_pretrained: the released layout needs senses and biases; save this model "
                         "with torch.save(model.state_dict(), ...) instead")
    state = {}
    for key, t in model.state_dict().items():
        t = t.detach().to("cpu", torch.float32)
        for hf_key in released_names(key):  # the tied aliases share one tensor, stored once
            state[hf_key] = t.t().contiguous() if CONV1D.search(key) else t
    os.makedirs(path, exist_ok=True)
    weights = os.path.join(path, "pytorch_model.bin")
    torch.save(state, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    config = {"architectures": ["BackpackGPT2LMHeadModel"], "model_type": "gpt2",
              "auto_map": {"AutoConfig": "configuration_backpack_gpt2.BackpackGPT2Config",
                           "AutoModelForCausalLM": "modeling_backpack_gpt2.BackpackGPT2LMHeadModel"},
              **{theirs: getattr(c, ours) for ours, theirs in RELEASED_CONFIG.items()},
              "activation_function": "gelu_new", "scale_attn_by_inverse_layer_idx": True,
              "scale_attn_weights": True, "n_inner": None, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
              "attn_pdrop": c.dropout, "bos_token_id": 50256, "eos_token_id": 50256, "torch_dtype": "float32"}
    with open(os.path.join(path, "config.json.tmp"), "w") as f:
        json.dump(config, f, indent=2)
    os.replace(os.path.join(path, "config.json.tmp"), os.path.join(path, "config.json"))
