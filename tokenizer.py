"""
The GPT-2 tokenizer, built offline from the rank file shipped in assets/.

tiktoken.get_encoding("gpt2") would download its files on first use; we build the same Encoding
from assets/gpt2.tiktoken instead, so nothing here ever touches the network.
"""
import base64
import functools
import hashlib
import os

import tiktoken

EOT = 50256          # <|endoftext|>: separates documents in the .bin files
GPT2_VOCAB = 50257   # 50,000 merges + 256 bytes + <|endoftext|>

RANKS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gpt2.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# the r50k/gpt2 split pattern, copied from tiktoken_ext/openai_public.py (tiktoken 0.14)
R50K_PAT_STR = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++"""
                r"""|\s++$|\s+(?!\S)|\s""")


def load_ranks(path=RANKS_PATH, expected_sha256=RANKS_SHA256):
    """{token bytes: rank} from a .tiktoken file (lines of `base64 rank`), checked by its sha256."""
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise ValueError(f"{path} is corrupt (sha256 {digest}, expected {expected_sha256}); "
                         "restore it from git")
    lines = (line.split() for line in data.splitlines() if line)
    return {base64.b64decode(token): int(rank) for token, rank in lines}


@functools.lru_cache(maxsize=None)
def get_tokenizer():
    enc = tiktoken.Encoding(name="gpt2", pat_str=R50K_PAT_STR, mergeable_ranks=load_ranks(),
                            special_tokens={"<|endoftext|>": EOT})
    assert enc.n_vocab == GPT2_VOCAB
    return enc


# -- words as a user types them -> token ids
def word_ids(enc, word):
    """The GPT-2 tokens of a word as it appears inside text: with one leading space."""
    if not word.strip():
        raise ValueError("the word is empty")
    # "<|endoftext|>" in a word is just text
    return enc.encode(" " + word.strip(), disallowed_special=())


def single_token(enc, text, what):
    """The id of text, which must be one token (taken verbatim: ' she' is the word inside text)."""
    ids = enc.encode(text, allowed_special={"<|endoftext|>"})
    if len(ids) != 1:
        hint = f" (a word inside text has a leading space: ' {text}')"
        raise ValueError(f"{what} {text!r} must be one token, but it is {len(ids)}: "
                         f"{pieces(enc, ids)}" + ("" if text.startswith(" ") else hint))
    return ids[0]


def pieces(enc, ids):
    """The tokens of ids, for a message: ' New' + ' York'."""
    return " + ".join(repr(enc.decode([i])) for i in ids)


def show(enc, token_id):
    """A token for a table: its text without the leading space, control characters escaped."""
    raw = enc.decode_single_token_bytes(token_id)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a piece of a multi-byte character: show its bytes
        text = repr(raw)[2:-1]
    shown = text[1:] if text.startswith(" ") and len(text) > 1 else text
    return repr(shown)[1:-1] if not shown.strip() or not shown.isprintable() else shown
