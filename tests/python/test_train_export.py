"""The exported Hugging Face folder: a tokenizer with token id = byte value, pipeline generation, equal logits."""

import json

import pytest
import torch
import transformers
from tokenizers import pre_tokenizers

from lighthouse.train.export import export_hf
from lighthouse.train.generate import generate_tokens
from lighthouse.train.hf_tokenizer import byte_characters
from lighthouse.train.model import ByteLlama, ModelConfig
from lighthouse.train.vocab import BOS, EOS, PAD, VOCAB_SIZE

# Every byte that can occur in UTF-8 (all but C0, C1 and F5..FF) occurs in these: the ASCII range
# with its controls, 2-byte characters over every lead byte C2..DF and continuation byte 80..BF,
# 3-byte ones over the leads E0..EF and 4-byte ones over F0..F4.
ALL_UTF8_BYTES = ("".join(map(chr, range(128))) + "".join(map(chr, range(0x80, 0x800)))
                  + "".join(chr(lead << 12 | 0x800) for lead in range(16) if lead != 0xD)
                  + "\ud7ff" + "".join(chr(plane << 16 | 0x1234) for plane in range(1, 17)))
TEXTS = ["Hello, world!", "Élise a reçu ½ crème brûlée à Zürich", "emoji 😀🚀👩‍🔬 and 漢字 and עברית",
         " . , ' n't  leading and trailing spaces \n\t\r ", "literal <|bos|><|eos|><|pad|> and <s></s>", "",
         ALL_UTF8_BYTES]


def test_byte_characters_are_the_byte_level_table():
    chars = byte_characters()
    assert len(set(chars)) == 256 and set(chars) == set(pre_tokenizers.ByteLevel.alphabet())
    # Each ASCII byte alone goes through the pre-tokenizer as that byte's character.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    assert [byte_level.pre_tokenize_str(chr(b))[0][0] for b in range(128)] == chars[:128]


def random_model(config: ModelConfig, seed: int = 0) -> ByteLlama:
    """Weights larger and less uniform than the init, so that attention, RoPE and the norms all matter."""
    torch.manual_seed(seed)
    model = ByteLlama(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 1.0) + (1.0 if p.ndim == 1 else 0.0))
    return model


def micro_config(max_seq_len: int = 128) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=max_seq_len,
                       rope_theta=10000.0, dense_boundary=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    config = micro_config()
    model = random_model(config)
    export_hf(model, config, folder)
    return model, folder


def test_auto_tokenizer_ids_are_the_utf8_bytes(exported):
    _, folder = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, PAD)
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.model_max_length == 128
    for text in TEXTS:
        body = list(text.encode("utf-8"))
        assert tokenizer(text, add_special_tokens=False).input_ids == body, text[:40]
        ids = tokenizer(text).input_ids
        assert ids == [BOS] + body, text[:40]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.decode(body) == text
    assert sorted(set(list(ALL_UTF8_BYTES.encode()))) == [*range(0xC0), *range(0xC2, 0xF5)]
    # A pair reads as two documents of the training stream.
    assert tokenizer("ab", "c").input_ids == [BOS, 97, 98, EOS, BOS, 99]
    # Ids that a model can emit past the bytes decode to nothing when special tokens are skipped.
    assert tokenizer.decode([BOS, 104, 105, EOS, PAD, VOCAB_SIZE - 1], skip_special_tokens=True) == "hi"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_exported_logits_on_tokenized_text_equal_ours(exported):
    model, folder = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    text = "Zürich 😀, " * 6
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == [BOS] + list(text.encode())
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    assert ours.abs().max() > 1.0
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_pipeline_generates_what_our_greedy_decoding_does(exported):
    model, folder = exported
    prompt = "Once upon a time, in Zürich"
    # Our generation never emits BOS, PAD or the reserved ids; transformers is told the same.
    never = [BOS, *range(PAD, VOCAB_SIZE)]
    ours = generate_tokens(model, prompt, 24, temperature=0.0)
    assert len(ours) == 24
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = hf.generate(ids, max_new_tokens=24, do_sample=False, suppress_tokens=never)
    assert out[0, ids.shape[1]:].tolist() == ours

    generator = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    result = generator(prompt, max_new_tokens=24, do_sample=False, suppress_tokens=never)
    assert result[0]["generated_text"] == prompt + bytes(ours).decode("utf-8", errors="replace")
