"""
A Backpack language model (Hewitt, Thickstun, Manning, Liang; ACL 2023), in one file of plain PyTorch.

Every vocabulary word x owns k non-contextual *sense vectors* C(x)_1..C(x)_k. A GPT-2 network reads
the context only to decide, for each position i, how much of each sense of each earlier word j to use:
the weights alpha[l, i, j]. The output is the weighted sum of senses, projected to the vocabulary by
the (tied) word embedding E:

    o_i       = sum_j sum_l alpha[l, i, j] * C(x_j)_l
    logits_i  = E o_i          =>   logit(i, w) = sum_j sum_l alpha[l, i, j] * (E C(x_j)_l)[w]

The last step is linear, so every prediction splits exactly into (context word, sense) contributions,
and editing a sense vector changes the model predictably. That linearity is the point of the model;
the code keeps it visible. With num_senses=0 the same file builds the matched GPT-2 Transformer
(logits = E h_i from the GPT-2 network's last hidden state), for comparisons.

References: the paper (arXiv 2305.16765), the released `stanfordnlp/backpack-gpt2` checkpoint, and
karpathy's nanoGPT, whose GPT-2 this file follows.
"""

import json
import importlib
import math
import operator
import os
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_VOCAB = 50257  # ids >= this are padding rows (50264 = 50257 rounded up to a multiple of 8)


@dataclass
class BackpackConfig:
    # defaults are the released backpack-gpt2 (the paper's Backpack-Small)
    block_size: int = 512
    vocab_size: int = 50264
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    num_senses: int = 16               # k; 0 builds the matched Transformer instead of a Backpack
    sense_intermediate_scale: int = 4  # the sense network's last MLP is d -> scale*d -> k*d
    dropout: float = 0.0               # the paper trains with 0.1; inference always runs without
    bias: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "sense_intermediate_scale"):
            if getattr(self, name) < 1:
                raise ValueError(f"BackpackConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_senses < 0:
            raise ValueError(f"BackpackConfig: num_senses must be >= 0, got {self.num_senses}")
        if self.n_embd % self.n_head:
            raise ValueError(f"BackpackConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.num_senses and self.n_embd % self.num_senses:
            raise ValueError(f"BackpackConfig: n_embd={self.n_embd} is not divisible by num_senses={self.num_senses} "
                             "(each sense gets n_embd/num_senses query and key features)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BackpackConfig: dropout must be in [0, 1), got {self.dropout}")


# ----------------------------------------------------------------------------------------------
# Building blocks


class MLP(nn.Module):
    """Linear -> GELU (tanh approximation, GPT-2's "gelu_new") -> Linear -> dropout."""

    def __init__(self, n_in, n_hidden, n_out, config):
        super().__init__()
        self.c_fc = nn.Linear(n_in, n_hidden, bias=config.bias)
        self.c_proj = nn.Linear(n_hidden, n_out, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class SelfAttention(nn.Module):
    """GPT-2 causal self-attention, with the released model's extra 1/(layer+1) factor on the logits."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        # scale_attn_by_inverse_layer_idx=True: passing the product as SDPA's scale keeps the
        # FlashAttention kernel (no materialized T x T matrix)
        self.scale = 1.0 / math.sqrt(config.n_embd // config.n_head) / (layer_idx + 1)

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = None, True
        if cache is not None:  # generation: prepend the keys and values of earlier positions
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                # one new query per row sees every key: no mask (SDPA can then pick FlashAttention)
                mask, is_causal = causal_mask(T, k.size(2), x.device) if T > 1 else None, False
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
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


class SenseNetwork(nn.Module):
    """Word embedding -> k sense vectors. Works on each token alone: no mixing across positions."""

    def __init__(self, config):
        super().__init__()
        d, eps = config.n_embd, config.layer_norm_eps
        self.dropout = nn.Dropout(config.dropout)
        self.ln_0 = nn.LayerNorm(d, eps=eps, bias=config.bias)
        self.ln_1 = nn.LayerNorm(d, eps=eps, bias=config.bias)
        self.mlp = MLP(d, 4 * d, d, config)
        self.ln_2 = nn.LayerNorm(d, eps=eps, bias=config.bias)
        self.final_mlp = MLP(d, config.sense_intermediate_scale * d, config.num_senses * d, config)

    def forward(self, e):  # e: (..., d) word embeddings -> (..., k*d); sense l is features [l*d, (l+1)*d)
        r = self.dropout(e)
        # r = e + LN0(e): the released model does this; the paper calls it an accidental quirk
        r = r + self.dropout(self.ln_0(r))
        r = r + self.mlp(self.ln_1(r))
        return self.final_mlp(self.ln_2(r))


def causal_mask(T_query, T_key, device):
    """Boolean (T_query, T_key) mask, True where allowed: the queries are the last T_query positions."""
    return torch.ones(T_query, T_key, dtype=torch.bool, device=device).tril(T_key - T_query)


# ----------------------------------------------------------------------------------------------
# The model


class Backpack(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        d = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, d)  # word embeddings, also the output projection E
        # the contextualization network: GPT-2 (with its own position embeddings) -> sense weights
        self.wpe = nn.Embedding(config.block_size, d)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps, bias=config.bias)
        if config.num_senses:
            self.sense_network = SenseNetwork(config)
            # queries are output features [0, d), keys [d, 2d); sense l uses [l*d/k, (l+1)*d/k) of each
            self.sense_weight_net = nn.Linear(d, 2 * d, bias=config.bias)
        # persistent edits of sense vectors: {token id: (k, d) tensor used in place of that word's senses}
        self.sense_edits = {}

        self.apply(self._init_weights)
        # residual-branch output projections (GPT-2's and the sense network's) start smaller: GPT-2 init
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_num_params(self):
        """All parameters; the tied word embedding / output projection counted once, wpe included."""
        return sum(p.numel() for p in self.parameters())

    # -- the three parts of the forward pass ---------------------------------------------------

    def senses(self, idx, dedup=True):
        """Sense vectors of every token: (B, T) ids -> (B, k, T, d). Depends on each id alone, so the sense
        network runs once per distinct id and the result is gathered: real text has far fewer distinct ids
        than tokens. The same numbers as dedup=False, the plain per-token path, except that in training
        the copies of an id share one dropout mask.

        Persistent edits in self.sense_edits replace the senses of their words wherever they occur.
        """
        if not self.config.num_senses:
            raise ValueError("Backpack: this model has no senses (num_senses=0: the matched Transformer)")
        self._check_idx(idx, max_len=None)
        B, T = idx.size()
        k, d = self.config.num_senses, self.config.n_embd
        ids, where = torch.unique(idx, return_inverse=True) if dedup else (idx.flatten(), None)
        senses = self.sense_network(self.wte(ids)).view(-1, k, d)  # (distinct ids, k, d)
        if self.sense_edits:  # look up only the ids present: topic control edits thousands of words
            rows = [(row, self.sense_edits[t]) for row, t in enumerate(ids.tolist()) if t in self.sense_edits]
            if rows:
                senses = senses.index_put((torch.tensor([row for row, _ in rows], device=idx.device),),
                                          torch.stack([s for _, s in rows]).to(senses))
        if where is not None:
            senses = senses.index_select(0, where.flatten())  # backward: a deterministic index_add on CPU
        return senses.view(B, T, k, d).transpose(1, 2)

    def contextualize(self, idx, cache=None):
        """The GPT-2 network: (B, T) ids -> (B, T, d) final hidden states (after ln_f)."""
        self._check_idx(idx, max_len=None if cache is not None else self.config.block_size)
        start = cache["length"] if cache is not None else 0
        pos = torch.arange(start, start + idx.size(1), device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.h):
            x = block(x, cache["layers"][i] if cache is not None else None)
        return self.ln_f(x)

    def sense_weights(self, idx, cache=None):
        """The contextualization weights alpha: (B, T) ids -> (B, k, T, T).

        alpha[b, l, i, j] is how much of sense l of token j goes into the prediction at position i:
        one softmax over j <= i per sense (so each row sums to 1), from a single-head attention
        score per sense with query/key width d/k and no value projection.
        """
        if not self.config.num_senses:
            raise ValueError("Backpack: this model has no senses (num_senses=0: the matched Transformer)")
        hidden = self.contextualize(idx, cache)
        B, T, d = hidden.size()
        k = self.config.num_senses
        q, key = self.sense_weight_net(hidden).split(d, dim=2)
        q, key = (t.view(B, T, k, d // k).transpose(1, 2) for t in (q, key))  # (B, k, T, d/k)
        if cache is not None:  # generation: the keys of earlier positions are cached
            if "sense_keys" in cache:
                key = torch.cat([cache["sense_keys"], key], dim=2)
            cache["sense_keys"] = key
        scores = (q @ key.transpose(-2, -1)) / math.sqrt(d // k)  # (B, k, T, T_key)
        if T > 1:  # one query per row (a cached step) sees every key: no mask
            scores = scores.masked_fill(~causal_mask(T, key.size(2), idx.device), float("-inf"))
        return F.softmax(scores.float(), dim=-1).to(scores.dtype)

    def forward(self, idx, targets=None, senses=None, sense_weights=None):
        """(B, T) token ids -> logits (B, T, vocab_size), and the mean cross-entropy if targets are given
        (targets of -1 are ignored).

        To run the model with edited senses or sense weights (the paper's interventions), compute them,
        change them and pass them in; this is exactly the model's own computation otherwise:

            senses, alpha = model.senses(idx), model.sense_weights(idx)
            alpha[:, 10, :, j] *= 0.0          # switch off sense 10 of the word at position j
            logits, _ = model(idx, senses=senses, sense_weights=alpha)

        For an edit of a word that should hold everywhere (forward, generate), see edit_senses.
        """
        if not self.config.num_senses:  # the matched Transformer
            logits = F.linear(self.contextualize(idx), self.wte.weight)
        else:
            if sense_weights is None:  # first: it checks the length of idx
                sense_weights = self.sense_weights(idx)
            if senses is None:
                senses = self.senses(idx)
            logits = F.linear(weighted_sum(sense_weights, senses), self.wte.weight)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1).long(),
                                   ignore_index=-1)
        return logits, loss

    def _check_idx(self, idx, max_len):
        # clear errors for bad input instead of an index error (or a CUDA assert) deep inside torch
        if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.long, torch.int):
            got = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise TypeError(f"Backpack: token ids must be a torch.long (or int32) tensor, got {got}")
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"Backpack: token ids must have shape (batch, time) with time >= 1, got {tuple(idx.shape)}")
        if max_len is not None and idx.size(1) > max_len:
            raise ValueError(f"Backpack: sequence of length {idx.size(1)} is longer than block_size={max_len}; "
                             "crop it to the last block_size tokens")
        if not torch.compiler.is_compiling():
            low, high = torch.stack(torch.aminmax(idx)).tolist()  # one device sync
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(f"Backpack: token ids must be in [0, {self.config.vocab_size}), got values in [{low}, {high}]")

    # -- interventions ---------------------------------------------------------------------------

    @torch.no_grad()
    def edit_senses(self, token_id, edit):
        """Persistently replace the senses of one word by edit(its (k, d) senses); returns the new senses.

        The edit applies wherever the word occurs, in forward and in generate (with the cache). Edits
        compose; `model.sense_edits.clear()` undoes all of them. Example, scale sense 10 of ' nurse':

            nurse = enc.encode(" nurse")[0]
            def turn_down(s):
                s[10] *= 0.2
                return s
            model.edit_senses(nurse, turn_down)
        """
        token_id = operator.index(token_id)  # a 0-d tensor becomes the int the edits are keyed by
        if not 0 <= token_id < self.config.vocab_size:
            raise ValueError(f"edit_senses: token id {token_id} is outside [0, {self.config.vocab_size})")
        training = self.training  # the senses without dropout, whatever mode the model is in
        try:
            current = self.eval().senses(torch.tensor([[token_id]], device=self.wte.weight.device))[0, :, 0]
        finally:
            self.train(training)
        new = edit(current.clone())
        if new.shape != current.shape:
            raise ValueError(f"edit_senses: the edit returned shape {tuple(new.shape)}, expected {tuple(current.shape)}")
        self.sense_edits[token_id] = new.detach()
        return new

    def scale_sense(self, token_id, factors):
        """Multiply senses of one word, persistently: factors {sense index: factor}. {10: 0.0} removes
        sense 10 (the paper's gender-bias fix for professions); the same as multiplying alpha[:, l, :, j]
        at every position j holding the word."""
        if bad := [l for l in factors if not 0 <= l < self.config.num_senses]:
            raise ValueError(f"scale_sense: sense {bad[0]} is out of range: this model has "
                             f"{self.config.num_senses} senses, numbered from 0")
        def scale(s):
            for l, factor in factors.items():
                s[l] *= factor
            return s
        return self.edit_senses(token_id, scale)

    def edit_knowledge(self, token_id, old_id, new_id):
        """The paper's knowledge edit (e.g. MacBook: Apple -> HP), persistently: in every sense of the word,
        the part that predicts old_id is moved onto new_id. With e_r, e_a the output embeddings of
        old_id and new_id: c = C(x)_l.e_r / |e_r|^2, C'(x)_l = C(x)_l - c e_r + c e_a |e_r|^2 / |e_a|^2."""
        if not (0 <= old_id < self.config.vocab_size and 0 <= new_id < self.config.vocab_size):
            raise ValueError(f"edit_knowledge: token ids must be in [0, {self.config.vocab_size})")
        e_r, e_a = self.wte.weight[old_id].detach(), self.wte.weight[new_id].detach()
        r2, a2 = e_r @ e_r, e_a @ e_a
        def swap(s):  # s: (k, d)
            c = (s @ e_r / r2)[:, None]
            return s - c * e_r + c * e_a * (r2 / a2)
        return self.edit_senses(token_id, swap)

    # -- generation --------------------------------------------------------------------------------

    def new_cache(self):
        """An empty generation cache: per layer the GPT-2 keys/values, the sense-weight keys, the senses."""
        return {"length": 0, "layers": [{} for _ in self.h]}

    def forward_cached(self, idx, cache):
        """Logits for the new tokens idx (B, T_new), given the cache of everything before them.

        Costs O(T) per new token instead of a full re-run. The cache is updated in place.
        """
        if cache["length"] + idx.size(1) > self.config.block_size:
            raise ValueError(f"forward_cached: the cache holds {cache['length']} positions; {idx.size(1)} more "
                             f"would exceed block_size={self.config.block_size}")
        if not self.config.num_senses:
            logits = F.linear(self.contextualize(idx, cache), self.wte.weight)
        else:
            # a step of one token per row has nothing worth de-duplicating: skip torch.unique's GPU sync
            senses = self.senses(idx, dedup=idx.size(1) > 1)
            if "senses" in cache:
                senses = torch.cat([cache["senses"], senses], dim=2)
            cache["senses"] = senses
            logits = F.linear(weighted_sum(self.sense_weights(idx, cache), senses), self.wte.weight)
        cache["length"] += idx.size(1)
        return logits

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Continue idx (B, T) by max_new_tokens tokens; temperature=0 picks the most likely token.

        Uses the cache. Past block_size the model sees the last block_size tokens, exactly like an
        uncached run (which then costs a full run of the window per token).
        """
        block_size = self.config.block_size
        if idx.size(1) == 0:
            raise ValueError("generate: the prompt is empty; give at least one token (e.g. <|endoftext|>, 50256)")
        cache = self.new_cache()
        logits = self.forward_cached(idx[:, -block_size:], cache)
        for step in range(max_new_tokens):
            logits = logits[:, -1, :].float()
            if GPT2_VOCAB <= self.config.vocab_size < GPT2_VOCAB + 64:  # GPT-2's vocabulary, padded up
                logits[:, GPT2_VOCAB:] = float("-inf")  # never sample the padding ids
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:  # None or 0: all tokens
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = float("-inf")
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
            if step == max_new_tokens - 1:
                break
            if cache["length"] < block_size:
                logits = self.forward_cached(idx_next, cache)
            else:  # the window slides: every position shifts, so the window is re-run from scratch
                cache = self.new_cache()
                logits = self.forward_cached(idx[:, -block_size:], cache)
        return idx

    # -- training helpers --------------------------------------------------------------------------

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on Linear weights only (not biases, LayerNorms or embeddings)."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
                  {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=(device_type == "cuda"))

    def flops_per_token(self, T=None):
        """Training FLOPs (forward + backward = 3x forward) per token at sequence length T."""
        cfg = self.config
        T = T or cfg.block_size
        d, k = cfg.n_embd, cfg.num_senses
        # every matmul weight: 2 FLOPs per multiply-add forward, so 6 per weight for fwd+bwd; the
        # output projection E (vocab_size x d) is a matmul too, wpe and the embedding lookups are not
        matmul_params = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        flops = 6 * (matmul_params + cfg.vocab_size * d)
        flops += 6 * cfg.n_layer * 2 * T * d  # GPT-2 attention: q.k and attention-weighted v, T keys each
        if k:
            flops += 6 * T * d       # sense-weight scores: k heads of width d/k
            flops += 6 * k * T * d   # the weighted sum: each of the k senses is a d-wide value
        return flops

    def estimate_mfu(self, fwdbwd_per_iter, dt):
        """Model FLOPs utilization of one iteration of fwdbwd_per_iter sequences of block_size tokens
        taking dt seconds, against the bf16 dense peak of the GPU in use. None if that peak is unknown
        (CPU, or a GPU not in the table below)."""
        peak, T = gpu_peak_flops(), self.config.block_size
        return None if peak is None else self.flops_per_token(T) * T * fwdbwd_per_iter / dt / peak

    # -- loading and saving ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path):
        """A trained Backpack, in eval mode, float32, on CPU. name_or_path is one of:

        - a directory with config.json + pytorch_model.bin (the released stanfordnlp/backpack-gpt2 layout,
          as `git clone` of the model repo or save_pretrained gives it) or with train.py's ckpt.pt; or
          the path of such a file. This file alone reads these.
        - "stanfordnlp/backpack-gpt2" (downloaded once from the Hugging Face hub into a cache),
          "backpack-{micro,mini,small}" / "gpt2-{micro,mini,small}" (the paper's Lightning training
          checkpoints), a Lightning .ckpt or a .safetensors file: these need pretrained.py beside this file.
        Nothing in a file is ever run: pickles load with weights_only=True.
        """
        path = str(name_or_path)
        if os.path.isdir(path):
            files = [f for f in ("pytorch_model.bin", "model.safetensors", "ckpt.pt") if os.path.isfile(os.path.join(path, f))]
            if not files:
                raise FileNotFoundError(f"from_pretrained: {path}/ has no ckpt.pt, pytorch_model.bin or model.safetensors; "
                                        "train one with `python train.py` or pass stanfordnlp/backpack-gpt2")
            path = os.path.join(path, files[0])
        elif not os.path.isfile(path):  # a published name: fetched into the cache, read from there afterwards
            return cls.from_pretrained(_pretrained().fetch(path))
        if path.endswith((".safetensors", ".ckpt")):
            sd = _pretrained().read(path)
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:
                raise unreadable(path, e) from None
        keys, name = (sd.keys() if isinstance(sd, dict) else ()), str
        if "model_args" in keys and "model" in keys:  # train.py's ckpt.pt, in our own names
            args = sd["model_args"]
            tensors = [(k.removeprefix("_orig_mod."), v, k) for k, v in sd["model"].items()]
        elif "lightning_config" in keys:  # the authors' training checkpoint, already mapped by pretrained.py
            args, tensors = sd["lightning_config"], sd["tensors"]
        elif any(k.startswith(("backpack.", "lm_head.")) for k in keys):
            (args, tensors), name = released_state(sd, path), lambda k: released_names(k)[0]
        else:
            raise ValueError(f"from_pretrained: {path} is not train.py's ckpt.pt, the released "
                             "stanfordnlp/backpack-gpt2 layout or a Lightning .ckpt of a Backpack")
        try:
            config = BackpackConfig(**args)
        except TypeError as e:  # a setting this BackpackConfig does not have
            raise ValueError(f"from_pretrained: {path} holds a model setting this code does not know: {e}") from None
        state, names = {}, {}  # our name -> tensor, -> the file's name
        for key, t, theirs in tensors:
            if key in state and not torch.equal(state[key], t):
                raise ValueError(f"from_pretrained: {theirs} in {path} differs from the tensor it is tied to")
            state[key], names[key] = t, names.get(key, theirs)
        with torch.device("meta"):  # no memory and no init: every tensor comes from the file
            model = cls(config)
        expected = model.state_dict()
        if extra := sorted(set(state) ^ set(expected)):
            what = f"unexpected key {names[extra[0]]}" if extra[0] in state else f"missing key {name(extra[0])}"
            raise ValueError(f"from_pretrained: {what} in {path}")
        for key, t in state.items():
            if t.shape != expected[key].shape:
                raise ValueError(f"from_pretrained: {names[key]} in {path} has shape {tuple(t.shape)}, expected "
                                 f"{tuple(expected[key].shape)} from its config")
        model.load_state_dict({k: t.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
                               for k, t in state.items()}, assign=True)
        return model.eval()

    def save_pretrained(self, path):
        """Write config.json and pytorch_model.bin in the released stanfordnlp/backpack-gpt2 layout
        (Conv1D weights as (in, out), every tied alias present). from_pretrained reads it back exactly;
        the released model code reads it with its two .py files copied beside (config.json's auto_map).
        Needs pretrained.py beside this file."""
        _pretrained().save_released(self, path)


def weighted_sum(sense_weights, senses):
    """o[b, i] = sum_l sum_j alpha[b, l, i, j] * senses[b, l, j]: (B, k, T, T') x (B, k, T', d) -> (B, T, d).

    Summed over the senses, NOT averaged: the released model was trained this way.
    """
    return (sense_weights @ senses).sum(dim=1)


def gpu_peak_flops():
    """bf16 dense peak FLOP/s of the current CUDA device, or None when unknown (or on CPU)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((peak for key, peak in (("A100", 312e12), ("H100", 989e12), ("H200", 989e12)) if key in name), None)


# ----------------------------------------------------------------------------------------------
# The released Hugging Face layout: key names and config fields (pretrained.py reads the authors' Lightning files)

RELEASED_PREFIXES = [  # (key prefix in the released file, ours); several released names are tied aliases
    ("backpack.gpt2_model.wte.", "wte."), ("backpack.word_embeddings.", "wte."), ("lm_head.", "wte."),
    ("backpack.gpt2_model.wpe.", "wpe."), ("backpack.position_embeddings.", "wpe."), ("backpack.gpt2_model.", ""),
    ("backpack.sense_network.ln.", "sense_network.ln_0."), ("backpack.sense_network.block.", "sense_network."),
    ("backpack.sense_network.final_mlp.", "sense_network.final_mlp."),
    ("backpack.sense_weight_net.c_attn.", "sense_weight_net."),  # an nn.Linear there too: no transpose
]
CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")  # ours whose released tensor is GPT-2's Conv1D: (in, out)
RELEASED_CONFIG = {"block_size": "n_positions", "layer_norm_eps": "layer_norm_epsilon", **{f: f for f in (
    "vocab_size", "n_layer", "n_head", "n_embd", "num_senses", "sense_intermediate_scale")}}  # ours: config.json's


def unreadable(path, e):
    """The one-line error for a checkpoint file torch.load cannot read."""
    with open(path, "rb") as f:
        lfs = f.read(24) == b"version https://git-lfs."
    return ValueError(f"from_pretrained: cannot read {path}: " + ("it is a Git LFS pointer: run `git lfs pull`"
                      if lfs else f"{str(e).splitlines()[0]} (truncated? delete it and fetch it again)"))


def _pretrained():
    try:  # the repo's pretrained.py (downloads, Lightning and safetensors files), beside this file
        module = importlib.import_module(".pretrained", __package__) if __package__ else importlib.import_module("pretrained")
        module.fetch
        return module
    except (ImportError, AttributeError):
        raise ImportError("from_pretrained: downloading by name and reading .ckpt/.safetensors files need "
                          "pretrained.py from the Backpack repo beside backpack.py; or pass a local directory") from None


def released_names(key):
    """Our parameter name -> its names in the released file (those of the longest matching prefix)."""
    hits = [(len(ours), theirs + key[len(ours):]) for theirs, ours in RELEASED_PREFIXES if key.startswith(ours)]
    return [name for n, name in hits if n == max(hits)[0]]


def released_state(sd, path):
    """(config args, [(our name, tensor, file's name)]) from the released layout, with config.json beside it."""
    config_path = os.path.join(os.path.dirname(path), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"from_pretrained: {path} needs its model's config.json beside it")
    with open(config_path) as f:
        cfg = json.load(f)
    missing = [field for field in RELEASED_CONFIG.values() if field not in cfg]
    if missing or cfg.get("scale_attn_by_inverse_layer_idx") is not True or cfg.get(
            "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"from_pretrained: {config_path} is not a Backpack's: " + (f"it has no {', '.join(missing)}"
                         if missing else "this model needs scale_attn_by_inverse_layer_idx=true and gelu_new"))
    tensors = []
    for key, t in sd.items():
        ours = next((o + key[len(h):] for h, o in RELEASED_PREFIXES if key.startswith(h)), key)
        if not re.search(r"\.attn\.(masked_)?bias$", key):  # skip GPT-2's causal-mask buffers
            tensors.append((ours, t.t() if CONV1D.search(ours) and t.dim() == 2 else t, key))
    return {ours: cfg[theirs] for ours, theirs in RELEASED_CONFIG.items()}, tensors
