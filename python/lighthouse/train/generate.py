"""Text continuation with a trained byte model (``lighthouse-train generate RUN --prompt TEXT``).

The prompt is framed the way every training document begins (BOS, then its UTF-8 bytes) and the
model, with every layer dense (the model a run delivers, whichever stage the checkpoint is from),
extends it one token at a time until it emits EOS or has made ``max_new_tokens`` tokens. Each step
runs the whole sequence again (no key/value cache): simple, and quick enough for the short
continuations this is for. BOS, PAD and the reserved ids past PAD never appear in a document, so
they are never emitted. Sampling draws from softmax(logits / temperature) with a generator seeded
by ``seed``; temperature 0 takes the argmax.
"""

import torch

from .evaluate import autocast_for, evaluation_mode
from .model import DENSE, ByteLlama, ModelConfig
from .vocab import BOS, EOS, PAD, decode_bytes, encode_text


def next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    """The token chosen from next-token ``logits`` [vocab] (fp32, CPU); BOS and the ids from PAD on are excluded."""
    allowed = logits.clone()
    allowed[BOS] = -torch.inf
    allowed[PAD:] = -torch.inf
    if temperature == 0:
        return int(allowed.argmax())
    probs = torch.softmax(allowed / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_tokens(model: ByteLlama, prompt: str, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
                    bf16: bool = False) -> list:
    """The tokens generated after ``BOS prompt`` (EOS, when reached, is not included)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected at least 1, got {max_new_tokens}")
    if not temperature >= 0:
        raise ValueError(f"temperature: expected 0 (greedy) or more, got {temperature}")
    tokens = [BOS] + encode_text(prompt)
    room = model.config.max_seq_len - len(tokens)
    if max_new_tokens > room:
        raise ValueError(f"max_new_tokens: expected at most {room} (the model's context of {model.config.max_seq_len} "
                         f"tokens minus the prompt's {len(tokens)} with BOS), got {max_new_tokens}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    new = []
    with evaluation_mode(model, DENSE):
        for _ in range(max_new_tokens):
            with autocast_for(device, bf16):
                logits = model(torch.tensor([tokens + new], device=device))[0, -1]
            token = next_token(logits.float().cpu(), temperature, generator)
            if token == EOS:
                break
            new.append(token)
    return new


def generate(model: ByteLlama, prompt: str, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
             bf16: bool = False) -> str:
    """The continuation of ``prompt`` as text (a UTF-8 sequence cut off at the end reads as U+FFFD)."""
    return decode_bytes(generate_tokens(model, prompt, max_new_tokens, temperature, seed, bf16))


def model_from_checkpoint(state: dict, device: torch.device) -> ByteLlama:
    """The model held in a training checkpoint (see checkpoint.load_checkpoint), on ``device``."""
    model = ByteLlama(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device)
