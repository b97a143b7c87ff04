"""Export the dense model as a Hugging Face Llama directory: config.json, model.safetensors and the tokenizer.

Our parameter names already are ``LlamaForCausalLM``'s, and RoPE uses the same half-split
rotation, so the weights are written as they are; ``transformers.LlamaForCausalLM.from_pretrained``
loads the folder with no custom code. Lighthouse layers have no weights of their own, so the same
export works for a checkpoint from either stage (it is then read as a dense model). The tokenizer
files (hf_tokenizer.py: token id = byte value, then BOS, EOS, PAD) let ``AutoTokenizer`` and
``pipeline("text-generation", model=folder)`` load the folder too.
"""

import json
import pathlib

import torch
from safetensors.torch import save as safetensors_bytes

from .checkpoint import atomic_write
from .hf_tokenizer import write_tokenizer
from .model import ByteLlama, ModelConfig
from .vocab import BOS, EOS, PAD

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_config(config: ModelConfig, dtype: str) -> dict:
    theta = float(config.rope_theta)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        # Older transformers read rope_theta/rope_scaling, newer ones rope_parameters.
        "rope_theta": theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        # Older transformers read torch_dtype, newer ones dtype.
        "torch_dtype": dtype,
        "dtype": dtype,
        "use_cache": True,
    }


def export_hf(model: ByteLlama, config: ModelConfig, out_dir, dtype: str = "float32") -> pathlib.Path:
    if dtype not in DTYPES:
        raise ValueError(f"export dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = pathlib.Path(out_dir)
    tensors = {name: t.detach().to("cpu", DTYPES[dtype]).contiguous() for name, t in model.state_dict().items()}
    blob = safetensors_bytes(tensors, metadata={"format": "pt"})
    atomic_write(out / "model.safetensors", lambda f: f.write(blob))
    text = json.dumps(hf_config(config, dtype), indent=2) + "\n"
    atomic_write(out / "config.json", lambda f: f.write(text.encode()))
    write_tokenizer(out, config.vocab_size, config.max_seq_len)
    return out


def export_checkpoint(state: dict, out_dir, dtype: str = "float32") -> pathlib.Path:
    """Export the model weights held in a training checkpoint (see checkpoint.load_checkpoint)."""
    config = ModelConfig.from_dict(state["model_config"])
    model = ByteLlama(config)
    model.load_state_dict(state["model"])
    return export_hf(model, config, out_dir, dtype)
