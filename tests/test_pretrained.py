"""Tests of loading and saving (backpack.py's from_pretrained, pretrained.py): the released Hugging
Face layout, the authors' Lightning checkpoints, train.py's ckpt.pt, safe unpickling, and downloads
from a local HTTP server.

CPU, tiny configs, random weights written by the tests; no network beyond 127.0.0.1. transformers
is a test-only dependency (requirements-dev.txt): it supplies the reference GPT-2 and Conv1D.
"""

import argparse
import dataclasses
import http.server
import json
import os
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backpack import Backpack, BackpackConfig
from pretrained import load, read_safetensors, save_pretrained


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(block_size=16, vocab_size=64, n_layer=3, n_head=4, n_embd=32, num_senses=4)
    args.update(kw)
    model = Backpack(BackpackConfig(**args)).eval()
    # every tensor distinct (LayerNorms too), so a swapped pair cannot go unnoticed
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype == torch.float32, key
        assert torch.equal(sa[key], sb[key]), key
    assert a.config == b.config


def one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and excinfo.value.__cause__ is None
    for word in words:
        assert word in message, (word, message)


CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


# ----------------------------------------------------------------------------------------------
# 1. The contextualization network is transformers' GPT-2 with scale_attn_by_inverse_layer_idx=True


def reference_gpt2(model, scale_attn_by_inverse_layer_idx):
    transformers = pytest.importorskip("transformers")
    c = model.config
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=c.layer_norm_eps,
        scale_attn_by_inverse_layer_idx=scale_attn_by_inverse_layer_idx,
        bos_token_id=None, eos_token_id=None)
    gpt2 = transformers.GPT2Model._from_config(config, attn_implementation="eager").eval()
    # the mapping by hand: the same module names; GPT-2's Conv1D stores its weight as (in, out)
    state = {k: v.t() if k.endswith(CONV1D) else v for k, v in model.state_dict().items()
             if k.split(".")[0] in ("wte", "wpe", "h", "ln_f")}
    missing, unexpected = gpt2.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith((".attn.bias", ".attn.masked_bias")) for k in missing)
    return gpt2


def test_contextualization_is_transformers_gpt2_with_inverse_layer_scaling():
    model = tiny(n_layer=4)
    # sharp attention and a strong attention branch: the 1/(layer+1) factor must show
    with torch.no_grad():
        for block in model.h:
            block.attn.c_attn.weight.mul_(10)
            block.attn.c_proj.weight.mul_(10)
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.contextualize(idx)
        reference = reference_gpt2(model, True)(idx).last_hidden_state
        without_factor = reference_gpt2(model, False)(idx).last_hidden_state
    assert (ours - reference).abs().max() < 1e-5
    assert (ours - without_factor).abs().max() > 1e-1  # 10^4 times the tolerance


# ----------------------------------------------------------------------------------------------
# 2. The released layout (spec section 4): a stand-in for the released model code, its keys by hand


def released_model(config):
    """The released BackpackGPT2LMHeadModel as spec section 4 describes it, built on transformers'
    GPT2Model and Conv1D: its module names are the released file's key names."""
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    class MLP(nn.Module):  # Conv1D: weights stored (in, out)
        def __init__(self, d_in, d_hidden, d_out):
            super().__init__()
            self.c_fc, self.c_proj = Conv1D(d_hidden, d_in), Conv1D(d_out, d_hidden)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Released(nn.Module):
        def __init__(self, c):
            super().__init__()
            d, k = c.n_embd, c.num_senses
            self.backpack = nn.Module()
            self.backpack.gpt2_model = reference_gpt2(Backpack(c), True)
            self.backpack.word_embeddings = self.backpack.gpt2_model.wte  # tied aliases
            self.backpack.position_embeddings = self.backpack.gpt2_model.wpe
            net = self.backpack.sense_network = nn.Module()
            net.ln, net.block = nn.LayerNorm(d), nn.Module()
            net.block.ln_1 = nn.LayerNorm(d)
            net.block.mlp = MLP(d, 4 * d, d)
            net.block.ln_2 = nn.LayerNorm(d)
            net.final_mlp = MLP(d, c.sense_intermediate_scale * d, k * d)
            self.backpack.sense_weight_net = nn.Module()
            self.backpack.sense_weight_net.c_attn = nn.Linear(d, 2 * d)  # an nn.Linear: (out, in)
            self.lm_head = nn.Linear(d, c.vocab_size, bias=False)
            self.lm_head.weight = self.backpack.gpt2_model.wte.weight
            self.k, self.backpack_config = k, c

        def forward(self, idx):
            B, T = idx.shape
            net, e = self.backpack.sense_network, self.backpack.word_embeddings(idx)
            r = e + net.ln(e)
            r = r + net.block.mlp(net.block.ln_1(r))
            senses = net.final_mlp(net.block.ln_2(r)).view(B, T, self.k, -1).transpose(1, 2)
            hidden = self.backpack.gpt2_model(idx).last_hidden_state
            qk = self.backpack.sense_weight_net.c_attn(hidden)
            q, key = qk.view(B, T, 2, self.k, -1).unbind(2)
            scores = torch.einsum("bthd,bshd->bhts", q, key) / q.size(-1) ** 0.5
            scores = scores + torch.triu(torch.full((T, T), -1e4), 1)
            return self.lm_head((scores.softmax(-1) @ senses).sum(1))

    model = Released(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def released_to_ours(n_layer):
    """The key mapping of spec section 4, by hand: released name -> (our name, transposed?)."""
    G, S = "backpack.gpt2_model.", "backpack.sense_network."
    mapping = {G + "wte.weight": "wte.weight", "backpack.word_embeddings.weight": "wte.weight",
               "lm_head.weight": "wte.weight", G + "wpe.weight": "wpe.weight",
               "backpack.position_embeddings.weight": "wpe.weight",
               "backpack.sense_weight_net.c_attn.weight": "sense_weight_net.weight",
               "backpack.sense_weight_net.c_attn.bias": "sense_weight_net.bias"}
    for s in ("weight", "bias"):
        mapping[G + f"ln_f.{s}"] = f"ln_f.{s}"
        for i in range(n_layer):
            for part in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                mapping[G + f"h.{i}.{part}.{s}"] = f"h.{i}.{part}.{s}"
        mapping[S + f"ln.{s}"] = f"sense_network.ln_0.{s}"
        for theirs, ours in (("block.ln_1", "ln_1"), ("block.ln_2", "ln_2"),
                             ("block.mlp.c_fc", "mlp.c_fc"), ("block.mlp.c_proj", "mlp.c_proj"),
                             ("final_mlp.c_fc", "final_mlp.c_fc"),
                             ("final_mlp.c_proj", "final_mlp.c_proj")):
            mapping[S + f"{theirs}.{s}"] = f"sense_network.{ours}.{s}"
    return {k: (v, v.endswith(CONV1D)) for k, v in mapping.items()}


def released_config_json(c, **changes):
    cfg = dict(n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_positions=c.block_size,
               vocab_size=c.vocab_size, num_senses=c.num_senses,
               sense_intermediate_scale=c.sense_intermediate_scale, layer_norm_epsilon=1e-5,
               scale_attn_by_inverse_layer_idx=True, activation_function="gelu_new",
               model_type="gpt2")
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if v is not None}


def write_released(path, model, state=None, **config_changes):
    c = model.backpack_config
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(released_config_json(c, **config_changes)))
    if state is None:  # the released file also holds GPT-2's causal-mask buffers
        state = dict(model.state_dict())
        for i in range(c.n_layer):
            causal = torch.ones(1, 1, 16, 16, dtype=torch.bool).tril()
            state[f"backpack.gpt2_model.h.{i}.attn.bias"] = causal
            state[f"backpack.gpt2_model.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, path / "pytorch_model.bin")
    return path


@pytest.fixture(scope="module")
def released():
    config = tiny().config
    return released_model(config), config


def test_released_layout_loads_tensor_by_tensor(tmp_path, released):
    reference, config = released
    state = reference.state_dict()
    mapping = released_to_ours(config.n_layer)
    buffers = {k for k in state if k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert set(state) - set(mapping) <= buffers
    assert set(mapping) <= set(state)  # the stand-in has every key of the table, tied aliases too
    model = Backpack.from_pretrained(write_released(tmp_path / "repo", reference))
    assert model.config == config and not model.training
    ours = model.state_dict()
    by_hand = {}
    for theirs, (key, transposed) in mapping.items():
        by_hand[key] = state[theirs].t() if transposed else state[theirs]
        assert torch.equal(ours[key], by_hand[key]), (theirs, key)
    assert set(by_hand) == set(ours)
    assert ours["sense_weight_net.weight"].shape == (2 * config.n_embd, config.n_embd)
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(idx)
        torch.testing.assert_close(logits, reference(idx), atol=1e-5, rtol=1e-5)
        hand = Backpack(config).eval()
        hand.load_state_dict(by_hand)
        assert torch.equal(logits, hand(idx)[0])


def test_released_layout_with_one_alias_in_safetensors_fp16(tmp_path, released):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    reference, config = released
    state = {k: v.half().contiguous() for k, v in reference.state_dict().items()
             if k not in ("lm_head.weight", "backpack.word_embeddings.weight",
                          "backpack.position_embeddings.weight")}
    (tmp_path / "config.json").write_text(json.dumps(released_config_json(config)))
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    model = load(tmp_path)
    for theirs, (key, transposed) in released_to_ours(config.n_layer).items():
        if theirs in state:
            t = state[theirs].float()
            assert torch.equal(model.state_dict()[key], t.t() if transposed else t), key


def test_save_pretrained_then_from_pretrained_is_exact(tmp_path):
    model = tiny(seed=3)
    save_pretrained(model, tmp_path / "saved")
    loaded = Backpack.from_pretrained(tmp_path / "saved")  # backpack.py alone reads it
    assert_same_model(model, load(tmp_path / "saved"))
    assert_same_model(model, loaded)
    idx = torch.randint(0, 64, (2, 16))
    assert torch.equal(model(idx)[0], loaded(idx)[0])
    # the layout the released code reads: its key names, strict; the same logits
    reference = released_model(model.config)
    weights = tmp_path / "saved" / "pytorch_model.bin"
    reference.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(reference(idx), model(idx)[0], atol=1e-5, rtol=1e-5)
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    expected = released_config_json(model.config)
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["architectures"] == ["BackpackGPT2LMHeadModel"]
    transformers = pytest.importorskip("transformers")
    gpt2_config = transformers.GPT2Config.from_dict(cfg)  # what the released config class builds on
    got = (gpt2_config.n_embd, gpt2_config.num_senses, gpt2_config.scale_attn_by_inverse_layer_idx)
    assert got == (32, 4, True)
    # the tied aliases are one tensor in the file, as in the released one
    raw = torch.load(weights, weights_only=True)
    tied = ("lm_head.weight", "backpack.word_embeddings.weight", "backpack.gpt2_model.wte.weight")
    pointers = {raw[k].untyped_storage().data_ptr() for k in tied}
    assert len(pointers) == 1


def test_save_pretrained_refuses_what_the_layout_cannot_hold(tmp_path):
    with pytest.raises(ValueError) as e:
        save_pretrained(tiny(num_senses=0), tmp_path)
    one_line_error(e, "save_pretrained")
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------
# 3. train.py's ckpt.pt


def test_train_py_checkpoint_directory_and_file(tmp_path):
    model = tiny(seed=4, dropout=0.1)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    model(torch.randint(0, 64, (1, 8)), torch.randint(0, 64, (1, 8)))[1].backward()
    optimizer.step()
    # as saved from a compiled model
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    torch.save({"model": state, "model_args": dataclasses.asdict(model.config),
                "optimizer": optimizer.state_dict(), "iter_num": 7,
                "best_val_loss": torch.tensor(3.2), "config": {"batch_size": 8}},
               tmp_path / "ckpt.pt")
    for where in (tmp_path, tmp_path / "ckpt.pt", str(tmp_path)):
        for loaded in (Backpack.from_pretrained(where), load(where)):
            assert_same_model(model, loaded)
            assert not loaded.training and loaded.config.dropout == 0.1


# ----------------------------------------------------------------------------------------------
# 4. The authors' Lightning checkpoints (spec section 4, second table), with unsafe pickled objects

TRIPPED = []


def trip(*args):
    TRIPPED.append(args)


class Tripwire:
    """Unpickling this calls trip(): if it ever runs, loading executed code named by the file."""

    def __reduce__(self):
        return (trip, ("code from the checkpoint ran",))


class ValueNode:
    """Pickles like an omegaconf value node (a class instance whose value is in _val)."""

    def __init__(self, value):
        self._val = value


def lightning_to_ours(n_layer, senses=True):
    """The key mapping of spec section 4 (second table), by hand: Lightning name -> our name."""
    T = "model.transformer."
    G, C = T + "gpt2_model.", T + "content_model."
    mapping = {"model.lm_head.weight": "wte.weight"}
    # the embeddings are shared, so stored under each owner
    for prefix in (G, T, C) if senses else (T,):
        mapping[prefix + "embeddings.word_embeddings.weight"] = "wte.weight"
        mapping[prefix + "embeddings.position_embeddings.weight"] = "wpe.weight"
    G = G if senses else T
    for s in ("weight", "bias"):
        mapping[G + f"ln_0.{s}"] = f"h.0.ln_1.{s}"
        for i in range(n_layer):
            mapping[G + f"layers.{i}.mixer.Wqkv.{s}"] = f"h.{i}.attn.c_attn.{s}"
            mapping[G + f"layers.{i}.mixer.out_proj.{s}"] = f"h.{i}.attn.c_proj.{s}"
            mapping[G + f"layers.{i}.mlp.fc1.{s}"] = f"h.{i}.mlp.c_fc.{s}"
            mapping[G + f"layers.{i}.mlp.fc2.{s}"] = f"h.{i}.mlp.c_proj.{s}"
            mapping[G + f"layers.{i}.norm1.{s}"] = f"h.{i}.ln_2.{s}"
            mapping[G + f"layers.{i}.norm2.{s}"] = (f"h.{i + 1}.ln_1.{s}" if i + 1 < n_layer
                                                    else f"ln_f.{s}")
        if senses:
            for theirs, ours in (("ln_0", "ln_0"), ("layers.0.norm1", "ln_1"),
                                 ("layers.0.norm2", "ln_2"), ("layers.0.mlp.fc1", "mlp.c_fc"),
                                 ("layers.0.mlp.fc2", "mlp.c_proj"),
                                 ("final_mlp.fc1", "final_mlp.c_fc"),
                                 ("final_mlp.fc2", "final_mlp.c_proj")):
                mapping[C + f"{theirs}.{s}"] = f"sense_network.{ours}.{s}"
            mapping[T + f"contextualization_attn.Wqkv.{s}"] = f"sense_weight_net.{s}"
    return mapping


def write_lightning(path, model, hyper_parameters=None, **extra):
    senses = bool(model.config.num_senses)
    ours = model.state_dict()
    state = {k: ours[v].half() for k, v in lightning_to_ours(model.config.n_layer, senses).items()}
    state["val_metrics.ppl.count"] = torch.ones(())  # the training task's, not the model's: ignored
    torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.8.6",
                "state_dict": state, "hyper_parameters": hyper_parameters,
                "callbacks": {"ModelCheckpoint": Tripwire()},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}},
                                      "param_groups": []}],
                "loops": {"fit_loop": {"state_dict": {}}}, "hparams_type": argparse.Namespace,
                **extra}, path)
    return path


def omegaconf_like():
    # objects all the way, a value in a node, and a cycle (omegaconf nodes point to their parent)
    cfg = argparse.Namespace(model={"config": {"n_embd": ValueNode(128), "n_head": ValueNode(4)}})
    cfg.model["_parent"] = cfg
    return {"cfg": cfg}


@pytest.mark.parametrize("hyper_parameters,n_embd,n_head", [
    (None, 640, 8),  # no n_head in the file: the paper's mini (not 640/64 = 10)
    ({"model": {"config": {"n_head": 4}}}, 128, 4),  # plain data
    (omegaconf_like(), 128, 4),
])
def test_lightning_checkpoint_loads_without_running_its_code(tmp_path, hyper_parameters, n_embd,
                                                             n_head):
    model = tiny(seed=5, n_embd=n_embd, n_head=n_head, n_layer=2)
    path = write_lightning(tmp_path / "backpack-micro-flash-fp16.ckpt", model, hyper_parameters)
    TRIPPED.clear()
    loaded = load(path)
    assert TRIPPED == []
    assert loaded.config == model.config
    ours = model.state_dict()
    for theirs, key in lightning_to_ours(2).items():
        assert loaded.state_dict()[key].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[key], ours[key].half().float()), (theirs, key)
    rounded = tiny(seed=5, n_embd=n_embd, n_head=n_head, n_layer=2)
    rounded.load_state_dict({k: v.half().float() for k, v in ours.items()})
    idx = torch.randint(0, 64, (2, 16))
    assert torch.equal(loaded(idx)[0], rounded(idx)[0])
    torch.load(path, weights_only=False)  # the control: an unsafe load does run the file's code
    assert TRIPPED


def test_lightning_checkpoint_with_tied_copies_that_differ_is_refused(tmp_path):
    model = tiny(seed=5, n_embd=128, n_head=2, n_layer=2)
    path = write_lightning(tmp_path / "tied.ckpt", model, {"n_head": 2})
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["model.lm_head.weight"] = ckpt["state_dict"]["model.lm_head.weight"] + 1
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as e:
        load(path)
    one_line_error(e, "tied.ckpt", "differs from the tensor it is tied to")


@pytest.mark.parametrize("shape", [(64, 0), (64,)])
def test_lightning_checkpoint_with_odd_word_embeddings_is_refused(tmp_path, shape):
    path = write_lightning(tmp_path / "odd.ckpt", tiny(n_embd=128, n_head=2, n_layer=2),
                           {"n_head": 2})
    ckpt = torch.load(path, weights_only=False)
    for key in ckpt["state_dict"]:  # every tied copy
        if key.endswith(("word_embeddings.weight", "lm_head.weight")):
            ckpt["state_dict"][key] = torch.zeros(shape, dtype=torch.half)
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as e:
        load(path)
    one_line_error(e, "odd.ckpt", f"its word embeddings are {shape}, not (vocabulary, width)")


def test_lightning_checkpoint_without_its_number_of_heads_is_refused(tmp_path):
    path = write_lightning(tmp_path / "odd.ckpt", tiny(n_embd=128, n_head=2, n_layer=2))
    with pytest.raises(ValueError) as e:
        load(path)
    one_line_error(e, "odd.ckpt", "number of heads", "128")


def test_lightning_checkpoint_of_the_matched_transformer(tmp_path):
    model = tiny(seed=6, n_embd=128, n_head=2, n_layer=2, num_senses=0)
    loaded = load(write_lightning(tmp_path / "gpt2-micro.ckpt", model, {"n_head": 2}))
    assert_same_model(loaded, load(write_lightning(tmp_path / "again.ckpt", loaded, {"n_head": 2})))
    assert loaded.config.num_senses == 0


class Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_names_os_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write_lightning(tmp_path / "evil.ckpt", tiny(n_embd=128, n_head=2),
                           callbacks={"x": Shell(marker)})
    with pytest.raises(ValueError) as e:
        load(path)
    one_line_error(e, "cannot read", str(path))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# 5. Clear errors


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path, released):
    reference, config = released
    state = dict(reference.state_dict())
    del state["backpack.sense_network.block.ln_2.bias"]
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "a", reference, state))
    one_line_error(e, "Missing key(s)", "sense_network.ln_2.bias", "pytorch_model.bin")

    state = dict(reference.state_dict(), **{"backpack.gpt2_model.h.7.ln_1.weight": torch.ones(32)})
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "b", reference, state))
    one_line_error(e, "Unexpected key(s)", "h.7.ln_1.weight")

    state = dict(reference.state_dict(), **{"backpack.extra.weight": torch.ones(2)})
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "c", reference, state))
    one_line_error(e, "Unexpected key(s)", "backpack.extra.weight")

    with pytest.raises(ValueError) as e:  # the config says 64 rows, the tensors have 16 positions
        load(write_released(tmp_path / "d", reference, n_positions=64))
    one_line_error(e, "size mismatch for wpe.weight", "[16, 32]", "[64, 32]")

    state = dict(reference.state_dict())
    state["lm_head.weight"] = state["lm_head.weight"] + 1  # tied aliases that disagree
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "e", reference, state))
    one_line_error(e, "lm_head.weight differs from the tensor it is tied to")

    ours = tiny()
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    state["h.0.ln_1.weight"] = torch.ones(7)
    torch.save({"model": state, "model_args": dataclasses.asdict(ours.config)},
               tmp_path / "ckpt.pt")
    with pytest.raises(ValueError) as e:
        load(tmp_path / "ckpt.pt")
    one_line_error(e, "size mismatch for h.0.ln_1.weight", "ckpt.pt", "[7]")


def test_wrong_configs_are_refused(tmp_path, released):
    reference, _ = released
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "a", reference, scale_attn_by_inverse_layer_idx=False))
    one_line_error(e, "scale_attn_by_inverse_layer_idx")
    # this code computes the tanh GELU: another would be silently wrong
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "relu", reference, activation_function="relu"))
    one_line_error(e, "gelu_new")
    with pytest.raises(ValueError) as e:
        load(write_released(tmp_path / "b", reference, num_senses=None))
    one_line_error(e, "num_senses", "config.json")
    (tmp_path / "c").mkdir()
    torch.save(reference.state_dict(), tmp_path / "c" / "pytorch_model.bin")
    with pytest.raises(ValueError) as e:
        load(tmp_path / "c")
    one_line_error(e, "no config.json beside it")


def test_wrong_layouts_and_damaged_files(tmp_path, released):
    reference, _ = released
    with pytest.raises(FileNotFoundError) as e:
        load(tmp_path)
    one_line_error(e, "has no ckpt.pt", "python train.py", "stanfordnlp/backpack-gpt2")
    with pytest.raises(FileNotFoundError) as e:
        load(tmp_path / "out-nothing")
    one_line_error(e, "out-nothing", "python train.py")

    # plain GPT-2 names
    torch.save(reference.backpack.gpt2_model.state_dict(), tmp_path / "gpt2.pt")
    with pytest.raises(ValueError) as e:
        load(tmp_path / "gpt2.pt")
    one_line_error(e, "gpt2.pt", "neither train.py's ckpt.pt")

    repo = write_released(tmp_path / "repo", reference)
    weights = (repo / "pytorch_model.bin").read_bytes()
    (repo / "pytorch_model.bin").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError) as e:
        load(repo)
    one_line_error(e, "cannot read", "pytorch_model.bin", "truncated")

    lfs_pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n"
    (repo / "pytorch_model.bin").write_bytes(lfs_pointer)
    with pytest.raises(ValueError) as e:
        load(repo)
    one_line_error(e, "git lfs pull")

    path = write_lightning(tmp_path / "l.ckpt", tiny(n_embd=128, n_head=2))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError) as e:
        load(path)
    one_line_error(e, "cannot read", "l.ckpt")

    safetensors_torch = pytest.importorskip("safetensors.torch")
    os.remove(repo / "pytorch_model.bin")
    state = {k: v.contiguous() for k, v in reference.state_dict().items()
             if k != "lm_head.weight" and "word_embeddings" not in k and "position_" not in k}
    safetensors_torch.save_file(state, repo / "model.safetensors")
    data = (repo / "model.safetensors").read_bytes()
    (repo / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError) as e:
        load(repo)
    one_line_error(e, "cannot read", "model.safetensors")


# ----------------------------------------------------------------------------------------------
# 6. The downloader, against a local HTTP server


class Server:
    """Serves files from memory on 127.0.0.1 with HTTP Range; can cut a response short once, or
    announce a hub size (X-Linked-Size) of its own. Stops itself after max_requests; the fixture
    stops it too."""

    def __init__(self, files, cut=(), linked_size=None, max_requests=50):
        self.files, self.cut = files, set(cut)
        self.linked_size, self.requests = linked_size or {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if len(server.requests) > max_requests:
                    threading.Thread(target=server.httpd.shutdown).start()
                data = server.files.get(self.path)
                if data is None:
                    return self.send_error(404)
                start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
                if start >= len(data):
                    return self.send_error(416)
                self.send_response(206 if self.headers.get("Range") else 200)
                if self.headers.get("Range"):
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                if self.path in server.linked_size:
                    self.send_header("X-Linked-Size", str(server.linked_size[self.path]))
                self.end_headers()
                body = data[start:]
                if self.path in server.cut:  # the connection breaks off halfway, once
                    server.cut.discard(self.path)
                    body = body[: len(body) // 2]
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def serve(tmp_path, monkeypatch):
    servers = []
    monkeypatch.setattr("files.RETRY_SLEEP", 0.0)
    # a cut connection keeps what arrived: files here are small
    monkeypatch.setattr("files.DOWNLOAD_CHUNK", 1024)
    monkeypatch.setenv("BACKPACK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    def start(files, **kw):
        servers.append(Server(files, **kw))
        monkeypatch.setenv("HF_ENDPOINT", servers[-1].url)
        stanford_url = servers[-1].url + "/nlp/data/backpacks-acl2023/main/"
        monkeypatch.setenv("BACKPACK_STANFORD_URL", stanford_url)
        return servers[-1]

    yield start
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()


HUB = "/stanfordnlp/backpack-gpt2/resolve/main/"


def hub_files(tmp_path, model):
    save_pretrained(model, tmp_path / "upload")
    names = ("config.json", "pytorch_model.bin")
    return {HUB + name: (tmp_path / "upload" / name).read_bytes() for name in names}


def test_download_resumes_a_cut_connection_then_uses_the_cache(tmp_path, serve, capsys):
    model = tiny(seed=7)
    files = hub_files(tmp_path, model)
    size = len(files[HUB + "pytorch_model.bin"])
    server = serve(files, cut={HUB + "pytorch_model.bin"},
                   linked_size={HUB + "pytorch_model.bin": size})
    assert_same_model(model, load("stanfordnlp/backpack-gpt2"))
    weights = [r for p, r in server.requests if p.endswith(".bin")]
    assert len(weights) == 2 and weights[0] is None
    assert 0 < int(weights[1][6:-1]) <= size // 2  # the second request resumed from what arrived
    assert "pytorch_model.bin:" in capsys.readouterr().err  # a progress line
    cached = tmp_path / "cache" / "stanfordnlp" / "backpack-gpt2"
    assert sorted(os.listdir(cached)) == ["config.json", "pytorch_model.bin"]
    n = len(server.requests)
    assert_same_model(model, load("stanfordnlp/backpack-gpt2"))
    assert len(server.requests) == n  # no network the second time


def test_download_resumes_a_part_left_by_an_earlier_run(tmp_path, serve):
    model = tiny(seed=8)
    files = hub_files(tmp_path, model)
    cached = tmp_path / "cache" / "stanfordnlp" / "backpack-gpt2"
    cached.mkdir(parents=True)
    (cached / "pytorch_model.bin.part").write_bytes(files[HUB + "pytorch_model.bin"][:1000])
    server = serve(files)
    assert_same_model(model, load("stanfordnlp/backpack-gpt2"))
    assert (HUB + "pytorch_model.bin", "bytes=1000-") in server.requests


def test_download_catches_a_wrong_size(tmp_path, serve):
    files = hub_files(tmp_path, tiny())
    size = len(files[HUB + "pytorch_model.bin"])
    serve(files, linked_size={HUB + "pytorch_model.bin": size + 1})
    with pytest.raises(ValueError) as e:
        load("stanfordnlp/backpack-gpt2")
    one_line_error(e, f"gave {size} bytes", str(size + 1))
    cached = tmp_path / "cache" / "stanfordnlp" / "backpack-gpt2"
    assert not (cached / "pytorch_model.bin").exists()
    assert not (cached / "pytorch_model.bin.part").exists()


def test_download_of_a_lightning_checkpoint_by_name_and_http_errors(tmp_path, serve):
    model = tiny(seed=9, n_embd=128, n_head=2, n_layer=2)
    path = write_lightning(tmp_path / "x.ckpt", model, {"n_head": 2})
    url_path = "/nlp/data/backpacks-acl2023/main/backpack-mini-flash-fp16.ckpt"
    server = serve({url_path: path.read_bytes()})
    loaded = load("backpack-mini")
    assert (tmp_path / "cache" / "backpack-mini-flash-fp16.ckpt").is_file()
    assert loaded.config == model.config
    with pytest.raises(ValueError) as e:
        load("backpack-small")
    one_line_error(e, "HTTP 404", "backpack-small-flash-fp16.ckpt")
    assert len(server.requests) == 2
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(ConnectionError) as e:
        load("backpack-micro")
    one_line_error(e, "cannot reach 127.0.0.1", str(tmp_path / "cache"), "run again")
    assert ".part" not in str(e.value)
    assert not (tmp_path / "cache" / "backpack-micro-flash-fp16.ckpt.part").exists()


def test_offline_hub_download_is_one_plain_line_and_leaves_no_folder(tmp_path, serve):
    server = serve({})
    server.httpd.shutdown()  # nothing listens there any more: as on a machine with no network
    server.httpd.server_close()
    with pytest.raises(ConnectionError) as e:
        load("stanfordnlp/backpack-gpt2")
    one_line_error(e, "cannot reach 127.0.0.1", "no network connection", str(tmp_path / "cache"),
                   "run again later")
    assert len(str(e.value)) < 250 and not (tmp_path / "cache").exists()


def test_a_safetensors_file_whose_tensors_share_bytes_is_refused(tmp_path):
    import struct
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<2f", 1, 2)
    (tmp_path / "x.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + data)
    with pytest.raises(ValueError, match="its tensor b's data_offsets \\[0, 8\\] do not follow "
                                         "the tensor before it"):
        read_safetensors(tmp_path / "x.safetensors")
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "y.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + data)
    assert read_safetensors(tmp_path / "y.safetensors")["a"].tolist() == [1.0, 2.0]
