"""Backpack language models (Hewitt, Thickstun, Manning, Liang; ACL 2023): one file, plain PyTorch.

Every word x owns k non-contextual *sense vectors* C(x)_1..C(x)_k. A GPT-2 network reads the context
only to decide how much of each sense of each earlier word j to use at position i: the sense weights
alpha[l, i, j]. The prediction is the senses' weighted sum, projected by the tied word embedding E:

    o_i = sum_{j,l} alpha[l, i, j] C(x_j)_l   logit(i, w) = sum_{j,l} alpha[l, i, j] (E C(x_j)_l)[w]

The last step is linear, so each prediction splits exactly into (context word, sense) contributions,
and editing a sense changes the model predictably. In the paper's order:
    BackpackConfig              sizes; num_senses=0: the matched GPT-2 Transformer (logits = E h_i)
    MLP, SelfAttention, Block   the GPT-2 network on F.scaled_dot_product_attention (FlashAttention)
    SenseNetwork                a word's embedding -> its k sense vectors, with no context
    Backpack.senses             C(x_j)_l at every position                          (B, k, T, d)
    Backpack.contextualize      the GPT-2 network's hidden states                   (B, T, d)
    Backpack.sense_weights      alpha, one causal softmax per sense                 (B, k, T, T)
    Backpack.weighted_sum       o = sum over senses of alpha_l @ senses_l           (B, T, d)
    Backpack.forward            logits = E o, and the loss
    Backpack.generate           sampling, with a cache of keys, values and senses (forward_cached)
    Backpack.edit_senses        interventions; interventions.py and finetune_senses.py build on it
    configure_optimizers, flops_per_token, estimate_mfu: for training scripts
    Backpack.from_pretrained    train.py's ckpt.pt, or the released stanfordnlp/backpack-gpt2 layout
References: arXiv 2305.16765, the released stanfordnlp/backpack-gpt2, and karpathy's nanoGPT.
"""

import json
import math
import operator
import os
import re
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_VOCAB = 50257  # ids >= this are padding rows (50264 = 50257 rounded up to a multiple of 8)


@dataclass
class BackpackConfig:  # the defaults are the released backpack-gpt2 (the paper's Backpack-Small)
    block_size: int = 512
    vocab_size: int = 50264
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    num_senses: int = 16  # k; 0 builds the matched Transformer instead of a Backpack
    sense_intermediate_scale: int = 4  # the sense network's last MLP is d -> scale*d -> k*d
    dropout: float = 0.0  # the paper trains with 0.1
    bias: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self):  # n_layer=-1 would build no layers at all, dropout=1 zero everything
        c = self  # n_embd=64.0 would fail deep in torch: each field of its type (or int for float)
        sizes = (c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd,
                 c.sense_intermediate_scale)
        if not all(type(getattr(c, f.name)) in (f.type, int) for f in fields(c)) or min(sizes) < 1 \
                or c.num_senses < 0 or not 0 <= c.dropout < 1 or not c.layer_norm_eps > 0:
            raise ValueError("BackpackConfig: want int sizes >= 1 (num_senses >= 0), "
                             f"dropout in [0, 1): {c}")
        if c.n_embd % c.n_head or (c.num_senses and c.n_embd % c.num_senses):  # head, sense widths
            raise ValueError(f"BackpackConfig: n_embd={c.n_embd} must be divisible by "
                             f"n_head={c.n_head} and by num_senses={c.num_senses}")


# -- the GPT-2 network -----------------------------------------------------------------------------
class MLP(nn.Module):
    """Linear -> GELU (the tanh approximation, GPT-2's "gelu_new") -> Linear -> dropout."""

    def __init__(self, n_in, n_hidden, n_out, config):
        super().__init__()
        self.c_fc = nn.Linear(n_in, n_hidden, bias=config.bias)
        self.c_proj = nn.Linear(n_hidden, n_out, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class SelfAttention(nn.Module):
    """GPT-2's causal self-attention, with the released model's extra 1/(layer+1) on its logits."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # scale_attn_by_inverse_layer_idx: folded into SDPA's scale, so FlashAttention still runs
        self.scale = 1.0 / math.sqrt(config.n_embd // config.n_head) / (layer_idx + 1)

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))  # B,h,T,hs
        mask, is_causal = None, True
        if cache is not None:  # generation: prepend the keys and values of the earlier positions
            if "k" in cache:  # one new query a row sees every key: no mask, so FlashAttention
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                mask, is_causal = causal_mask(T, k.size(2), x.device) if T > 1 else None, False
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal, scale=self.scale,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    """A pre-LayerNorm GPT-2 block."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = SelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config.n_embd, 4 * config.n_embd, config.n_embd, config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


def causal_mask(T_query, T_key, device):
    """(T_query, T_key) booleans, True where allowed: the queries are the last T_query keys."""
    return torch.ones(T_query, T_key, dtype=torch.bool, device=device).tril(T_key - T_query)


# -- the sense network -----------------------------------------------------------------------------
class SenseNetwork(nn.Module):
    """A word's embedding -> its k sense vectors, each token alone: nothing mixes positions."""

    def __init__(self, config):
        super().__init__()
        d, eps = config.n_embd, config.layer_norm_eps
        self.dropout = nn.Dropout(config.dropout)
        self.ln_0 = nn.LayerNorm(d, eps=eps, bias=config.bias)
        self.ln_1 = nn.LayerNorm(d, eps=eps, bias=config.bias)
        self.mlp = MLP(d, 4 * d, d, config)
        self.ln_2 = nn.LayerNorm(d, eps=eps, bias=config.bias)
        self.final_mlp = MLP(d, config.sense_intermediate_scale * d, config.num_senses * d, config)

    def forward(self, e):  # (..., d) embeddings -> (..., k*d); sense l is features [l*d, (l+1)*d)
        r = self.dropout(e)
        r = r + self.dropout(self.ln_0(r))  # e + LN0(e), as released; the paper calls it a quirk
        r = r + self.mlp(self.ln_1(r))
        return self.final_mlp(self.ln_2(r))


# -- the model -------------------------------------------------------------------------------------
class Backpack(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config, d = config, config.n_embd
        self.wte = nn.Embedding(config.vocab_size, d)  # E: word embeddings and output projection
        self.wpe = nn.Embedding(config.block_size, d)  # the GPT-2 network, with its own positions
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=config.bias)
        if config.num_senses:
            self.sense_network = SenseNetwork(config)
            # queries are features [0, d), keys [d, 2d); sense l uses [l*d/k, (l+1)*d/k) of each
            self.sense_weight_net = nn.Linear(d, 2 * d, bias=config.bias)
        self.sense_edits = {}  # persistent edit_senses: {token id: the (k, d) senses used instead}
        for m in self.modules():  # GPT-2's init: weights N(0, 0.02), biases 0, LayerNorm (1, 0) ...
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():  # ... and the residual projections start smaller
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def senses(self, idx, dedup=True):
        """The senses C(x_j)_l at every position: (B, T) ids -> (B, k, T, d). They depend on the id
        alone, so the network runs once per distinct id (a 32 x 512 English batch has ~4 tokens per
        id): as dedup=False, but copies share a dropout mask. Edits replace their words' senses."""
        k, d = self.config.num_senses, self.config.n_embd
        assert k, "this model has no senses (num_senses=0: the matched Transformer)"
        self._check(idx)
        ids, where = torch.unique(idx, return_inverse=True) if dedup else (idx.flatten(), None)
        senses = self.sense_network(self.wte(ids)).view(-1, k, d)  # (distinct ids, k, d)
        if self.sense_edits:  # look up only the ids present: topic control edits thousands of words
            rows = [(row, self.sense_edits[t]) for row, t in enumerate(ids.tolist())
                    if t in self.sense_edits]
            if rows:
                edited = torch.tensor([row for row, _ in rows], device=idx.device)
                senses = senses.index_put((edited,), torch.stack([s for _, s in rows]).to(senses))
        if where is not None:
            senses = senses.index_select(0, where.flatten())  # its backward is deterministic on CPU
        return senses.view(*idx.shape, k, d).transpose(1, 2)

    def contextualize(self, idx, cache=None):
        """The GPT-2 network: (B, T) ids -> (B, T, d) hidden states, after the final LayerNorm."""
        self._check(idx, max_len=None if cache is not None else self.config.block_size)
        start = cache["length"] if cache is not None else 0
        pos = torch.arange(start, start + idx.size(1), device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.h):
            x = block(x, cache["layers"][i] if cache is not None else None)
        return self.ln_f(x)

    def sense_weights(self, idx, cache=None):
        """The sense weights alpha: (B, T) ids -> (B, k, T, T). alpha[b, l, i, j] is how much of
        sense l of word j goes into the prediction at position i: per sense, a one-head attention
        score (query/key width d/k, no value projection) softmaxed over j <= i (rows sum to 1)."""
        k = self.config.num_senses
        assert k, "this model has no senses (num_senses=0: the matched Transformer)"
        hidden = self.contextualize(idx, cache)
        B, T, d = hidden.size()
        q, key = self.sense_weight_net(hidden).split(d, dim=2)
        q, key = (t.view(B, T, k, d // k).transpose(1, 2) for t in (q, key))  # (B, k, T, d/k)
        if cache is not None:  # generation: the keys of the earlier positions are cached
            if "sense_keys" in cache:
                key = torch.cat([cache["sense_keys"], key], dim=2)
            cache["sense_keys"] = key
        scores = (q @ key.transpose(-2, -1)) / math.sqrt(d // k)  # (B, k, T, T_key)
        if T > 1:  # one query per row (a cached step) sees every key: no mask
            scores = scores.masked_fill(~causal_mask(T, key.size(2), idx.device), float("-inf"))
        return F.softmax(scores.float(), dim=-1).to(scores.dtype)

    @staticmethod
    def weighted_sum(sense_weights, senses):
        """o[b, i] = sum_l sum_j alpha[b, l, i, j] senses[b, l, j]: (B, k, T, T'), (B, k, T', d)
        -> (B, T, d). Summed over the senses, not averaged: the released model was trained so."""
        return (sense_weights @ senses).sum(dim=1)

    def forward(self, idx, targets=None, senses=None, sense_weights=None):
        """(B, T) ids -> logits (B, T, vocab_size), and the mean cross-entropy if targets are given
        (-1 ignored). The paper's interventions: compute senses or sense_weights, change them, pass
        them in (alpha[:, 10, :, j] = 0 turns off sense 10 of the word at j); or edit_senses."""
        if not self.config.num_senses:  # the matched Transformer
            logits = F.linear(self.contextualize(idx), self.wte.weight)
        else:  # sense_weights first: it checks the length of idx
            sense_weights = self.sense_weights(idx) if sense_weights is None else sense_weights
            senses = self.senses(idx) if senses is None else senses
            logits = F.linear(self.weighted_sum(sense_weights, senses), self.wte.weight)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)),
                                       targets.reshape(-1).long(), ignore_index=-1)

    def _check(self, idx, max_len=None):  # what would fail deep in torch, or as a CUDA assert
        if idx.dim() != 2 or 0 in idx.shape or (max_len and idx.size(1) > max_len):
            raise ValueError("token ids must have shape (batch, time), 1 <= time <= "
                             f"block_size={max_len}, not {tuple(idx.shape)} (crop a longer "
                             "sequence to its last block_size tokens)")
        if not torch.compiler.is_compiling():
            low, high = torch.stack(torch.aminmax(idx)).tolist()  # one device sync
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), "
                                 f"got [{low}, {high}]")

    # -- generation --------------------------------------------------------------------------------
    def new_cache(self):
        """An empty generation cache: GPT-2 keys/values per layer, sense-weight keys, senses."""
        return {"length": 0, "layers": [{} for _ in self.h]}

    def forward_cached(self, idx, cache):
        """Logits of the new tokens idx (B, T_new), given the cache of everything before them, which
        is updated in place. A new token costs O(T), not a run over the whole context."""
        if cache["length"] + idx.size(1) > self.config.block_size:
            raise ValueError(f"the cache holds {cache['length']} positions; {idx.size(1)} more "
                             f"would exceed block_size={self.config.block_size}")
        if not self.config.num_senses:
            out = self.contextualize(idx, cache)
        else:
            senses = self.senses(idx, dedup=idx.size(1) > 1)  # one token: skip unique's GPU sync
            if "senses" in cache:
                senses = torch.cat([cache["senses"], senses], dim=2)
            cache["senses"] = senses
            out = self.weighted_sum(self.sense_weights(idx, cache), senses)
        cache["length"] += idx.size(1)
        return F.linear(out, self.wte.weight)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None):
        """Continue idx (B, T) by max_new_tokens tokens. temperature=0 takes the most likely token;
        top_k and top_p (the nucleus) sample among the most likely only. Past block_size the model
        sees the last block_size tokens, exactly like an uncached run."""
        self._check(idx)  # a 1-D prompt would fail below; temperature < 0 picks the least likely
        if not 0 <= temperature < float("inf") or (top_k or 0) < 0 or max_new_tokens < 0 \
                or top_p is not None and (isinstance(top_p, bool) or not 0 < top_p <= 1):
            raise ValueError("generate: temperature, top_k, max_new_tokens must be >= 0, "
                             "top_p in (0, 1]")
        block_size, cache = self.config.block_size, None
        for _ in range(max_new_tokens):
            if cache is None or cache["length"] == block_size:
                cache = self.new_cache()  # the window slid: every position moved, so start afresh
            logits = self.forward_cached(idx[:, -1 if cache["length"] else -block_size:], cache)
            logits = logits[:, -1, :].double()  # float64: a temperature of 1e-300 is no float32
            if GPT2_VOCAB <= self.config.vocab_size < GPT2_VOCAB + 64:  # GPT-2's vocab, padded up
                logits[:, GPT2_VOCAB:] = float("-inf")  # never sample the padding ids
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:  # minus the max first: no overflow
                logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
                if top_k:  # None or 0: every token
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = float("-inf")
                if top_p and top_p < 1:  # the nucleus: the fewest likeliest tokens making up top_p
                    p, order = F.softmax(logits, dim=-1).sort(dim=-1, descending=True)
                    beyond = p.cumsum(dim=-1) - p >= top_p  # the tokens after the nucleus is full
                    logits[torch.zeros_like(beyond).scatter(-1, order, beyond)] = float("-inf")
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    # -- interventions -----------------------------------------------------------------------------
    @torch.no_grad()
    def edit_senses(self, token_id, edit):
        """Replace a word's senses by edit(its (k, d) senses), or n words' by edit(their (n, k, d)),
        wherever they occur, until `model.sense_edits.clear()`; edits compose. Returns the new
        senses. So edit_senses(nurse_id, lambda s: s * 0.5) halves the senses of ' nurse'."""
        several = isinstance(token_id, (list, tuple))
        ids = [operator.index(t) for t in (token_id if several else [token_id])]  # tensor(5): 5
        training, idx = self.training, torch.tensor([ids], device=self.wte.weight.device)
        try:  # the senses without dropout, whatever mode the model is in
            current = self.eval().senses(idx)[0].transpose(0, 1)  # (n, k, d)
        finally:
            self.train(training)
        current = current if several else current[0]
        new = edit(current.clone())
        if getattr(new, "shape", None) != current.shape:  # (d,) would broadcast over all k senses
            raise ValueError(f"edit_senses: the edit must return a {tuple(current.shape)} tensor")
        self.sense_edits.update(zip(ids, new.detach().reshape(len(ids), *current.shape[-2:])))
        return new

    # -- for training scripts ----------------------------------------------------------------------
    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on Linear weights only (not biases, LayerNorms or embeddings)."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        params = list(self.parameters())
        groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
                  {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == "cuda")

    def flops_per_token(self, T=None):
        """Training FLOPs (forward + backward = 3 x forward) per token at sequence length T."""
        cfg = self.config
        T, d, k = T or cfg.block_size, cfg.n_embd, cfg.num_senses
        # 2 FLOPs per multiply-add forward, 6 with the backward, per matmul weight: the Linears, E
        matmul_weights = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        flops = 6 * (matmul_weights + cfg.vocab_size * d)
        flops += 6 * cfg.n_layer * 2 * T * d  # GPT-2 attention: q.k and the weighted v, over T keys
        if k:
            flops += 6 * T * d  # the sense-weight scores: k heads of width d/k
            flops += 6 * k * T * d  # the weighted sum: each of the k senses is a d-wide value
        return flops

    def estimate_mfu(self, sequences, dt):
        """Model FLOPs utilization of an iteration of that many sequences of block_size tokens in dt
        seconds, against the GPU's dense bf16 peak; None where that is unknown (CPU, other GPUs)."""
        gpu = torch.cuda.get_device_name(self.wte.weight.device) if self.wte.weight.is_cuda else ""
        peak = 312e12 if "A100" in gpu else 989e12 if ("H100" in gpu or "H200" in gpu) else None
        flops = self.flops_per_token() * self.config.block_size * sequences  # the iteration's
        return None if peak is None else flops / dt / peak

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path):
        """A trained model (eval mode, float32, CPU) from a folder or file: train.py's ckpt.pt (with
        finetune_senses.py's sense_edits) or the released layout (config.json, pytorch_model.bin).
        No code is run (weights_only). pretrained.load adds downloads, Lightning, .safetensors."""
        path = str(path)
        if os.path.isdir(path):  # a train.py run, or the released layout
            run = os.path.isfile(os.path.join(path, "ckpt.pt"))
            path = os.path.join(path, "ckpt.pt" if run else "pytorch_model.bin")
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if "model_args" in state:  # train.py's ckpt; a compiled model's keys start with _orig_mod.
            tensors = {k.removeprefix("_orig_mod."): t for k, t in state["model"].items()}
            model = cls.from_tensors(BackpackConfig(**state["model_args"]), tensors)
            model.sense_edits.update(state.get("sense_edits", {}))
            return model
        with open(os.path.join(os.path.dirname(path), "config.json")) as f:
            return cls.from_tensors(*released_to_ours(state, json.load(f)))

    @classmethod
    def from_tensors(cls, config, tensors):
        """A model of exactly these tensors: a missing, unexpected or misshapen one is an error."""
        with torch.device("meta"):  # no memory and no init: every tensor comes from the file
            model = cls(config)
        model.load_state_dict({k: t.to(torch.float32, memory_format=torch.contiguous_format,
                                       copy=True) for k, t in tensors.items()}, assign=True)
        return model.eval()


# The released layout's key prefixes -> ours. wte and wpe are stored under several tied names.
# GPT-2's Conv1D layers store their weights as (in, out); ours are nn.Linear's (out, in).
RELEASED_PREFIXES = {
    "backpack.gpt2_model.wte.": "wte.", "backpack.word_embeddings.": "wte.", "lm_head.": "wte.",
    "backpack.gpt2_model.wpe.": "wpe.", "backpack.position_embeddings.": "wpe.",
    "backpack.gpt2_model.": "", "backpack.sense_network.ln.": "sense_network.ln_0.",
    "backpack.sense_network.block.": "sense_network.",
    "backpack.sense_network.final_mlp.": "sense_network.final_mlp.",
    "backpack.sense_weight_net.c_attn.": "sense_weight_net.",  # nn.Linear there too: not transposed
}
CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")  # our names of weights stored transposed
RELEASED_CONFIG = dict(block_size="n_positions", layer_norm_eps="layer_norm_epsilon",  # ours=theirs
                       vocab_size="vocab_size", n_layer="n_layer", n_head="n_head", n_embd="n_embd",
                       num_senses="num_senses", sense_intermediate_scale="sense_intermediate_scale")


def released_to_ours(state, config_json):
    """(BackpackConfig, {our name: tensor}) from the released layout's tensors and config.json."""
    tanh = config_json.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh")
    if config_json.get("scale_attn_by_inverse_layer_idx") is not True or not tanh:
        raise ValueError("config.json: a Backpack needs scale_attn_by_inverse_layer_idx=true "
                         "and gelu_new")
    config = BackpackConfig(**{ours: config_json[key] for ours, key in RELEASED_CONFIG.items()})
    tensors = {}
    for key, t in state.items():  # renamed by the longest matching prefix
        if re.search(r"\.attn\.(masked_)?bias$", key):  # GPT-2's causal-mask buffers
            continue
        prefix = max((p for p in RELEASED_PREFIXES if key.startswith(p)), key=len, default="")
        name = RELEASED_PREFIXES.get(prefix, "") + key[len(prefix):]
        t = t.t() if CONV1D.search(name) else t
        if name in tensors and not torch.equal(tensors[name], t):  # which one would the model be?
            raise ValueError(f"{key} differs from the tensor it is tied to")
        tensors[name] = t
    return config, tensors
