"""Byte-level vocabulary: the 256 byte values plus a few special tokens.

Byte ``b`` is token ``b``. Every document is framed as ``BOS bytes EOS`` so the packed training
stream carries explicit document boundaries. PAD only marks positions that the loss ignores (the
ragged tail of the validation stream). The table is rounded up to a multiple of 8 so the bf16
output projection tiles evenly; the ids past the specials are never produced.
"""

import numpy as np

BOS = 256
EOS = 257
PAD = 258
VOCAB_SIZE = 264

DIGITS = tuple(range(ord("0"), ord("9") + 1))


def encode_document(text: str) -> np.ndarray:
    """Tokens of one document, ``BOS utf8(text) EOS``, as uint16."""
    body = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    out = np.empty(body.size + 2, dtype=np.uint16)
    out[0] = BOS
    out[1:-1] = body
    out[-1] = EOS
    return out


def encode_text(text: str) -> list:
    """Tokens of a text fragment (no framing), as a list of ints."""
    return list(text.encode("utf-8"))


def decode_bytes(tokens) -> str:
    """Text of the byte tokens among ``tokens`` (specials left out); a broken UTF-8 sequence reads as U+FFFD."""
    return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


def token_name(token: int) -> str:
    """The string that stands for a token past the bytes in the exported tokenizer (hf_tokenizer.py)."""
    return {BOS: "<|bos|>", EOS: "<|eos|>", PAD: "<|pad|>"}.get(token, f"<|reserved_{token}|>")
