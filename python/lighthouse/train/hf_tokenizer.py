"""Hugging Face tokenizer files for the byte vocabulary of vocab.py: token id = byte value.

``tokenizer.json`` describes a pipeline of the ``tokenizers`` library that ``AutoTokenizer`` loads
with no custom code: the ByteLevel pre-tokenizer writes every UTF-8 byte of the text as one
printable character (its fixed byte-to-character table), and a BPE model without merges maps the
character of byte ``b`` to id ``b``. So the ids of any text are exactly its UTF-8 bytes, whatever
the script; the ByteLevel decoder maps ids back to bytes and decodes them as UTF-8. The ids past the
bytes are special tokens (BOS, EOS, PAD, then reserved ids up to the model's vocabulary size).

Encoding with special tokens puts BOS first, as every training document starts (``BOS bytes EOS``);
a pair of texts reads as two documents of the training stream. ``split_special_tokens`` makes a
text that happens to contain ``<|bos|>`` encode as its bytes, and the tokenizer never tidies spaces
on decoding, so encode and decode are exact inverses for every text.
"""

import json
import pathlib

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from .checkpoint import atomic_write
from .vocab import BOS, EOS, PAD, token_name


def byte_characters() -> list:
    """The character the ByteLevel pre-tokenizer writes for each byte value 0..255.

    Bytes that are printable, non-space Latin-1 characters stand for themselves; the other 68
    (controls, space, DEL, no-break space, soft hyphen) take U+0100, U+0101, ... in byte order.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    chars, substitute = [], 0x100
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(substitute))
            substitute += 1
    return chars


def byte_tokenizer(vocab_size: int):
    """A ``tokenizers.Tokenizer`` whose ids are the UTF-8 bytes of the text, with the specials past 255."""
    if vocab_size <= PAD:
        raise ValueError(f"vocab_size: expected more than {PAD} (256 bytes, BOS, EOS, PAD), got {vocab_size}")
    vocab = {char: byte for byte, char in enumerate(byte_characters())}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # Without the regex the pre-tokenizer only maps bytes to characters and never splits words.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(token_name(i), special=True, normalized=False)
                                  for i in range(BOS, vocab_size)])
    bos, eos = token_name(BOS), token_name(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {eos} {bos}:1 $B:1", special_tokens=[(bos, BOS), (eos, EOS)])
    return tokenizer


def tokenizer_config(max_seq_len: int) -> dict:
    return {
        # The class name every transformers version maps to its tokenizer.json-backed tokenizer.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_name(BOS),
        "eos_token": token_name(EOS),
        "pad_token": token_name(PAD),
        "model_max_length": max_seq_len,
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
    }


def write_tokenizer(out_dir, vocab_size: int, max_seq_len: int) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``out_dir``."""
    out = pathlib.Path(out_dir)
    text = byte_tokenizer(vocab_size).to_str(pretty=True) + "\n"
    atomic_write(out / "tokenizer.json", lambda f: f.write(text.encode()))
    config = json.dumps(tokenizer_config(max_seq_len), indent=2) + "\n"
    atomic_write(out / "tokenizer_config.json", lambda f: f.write(config.encode()))
