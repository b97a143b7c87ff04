"""Named run configurations.

``tiny`` shows the whole recipe on a laptop CPU in a few minutes with the embedded corpus. The
``h200-*`` pair is a proof of concept at 64K context on one H200: ``h200-dense`` is the dense
baseline and ``h200-lighthouse`` trains the same model on the same data stream, seed and token
budget with Lighthouse for 70% of the steps and dense attention for the last 30%.

Sizing of the H200 pair (about 51M parameters: 16 layers of d_model 512, 4 query / 2 KV heads of
128 as in the paper's head size, one 65,536-token sequence per step): at this context causal
attention is ~90% of a dense step's FLOPs (about 2.5e14 per step with the backward). With p=4, L=3,
k=2048 a Lighthouse layer attends over S = 65,536/16 + 2*4*2048 = 20,480 tokens, a tenth of the
dense attention work, and 12 of the 16 layers use it in stage 1. The dense arm's 160 steps
(10.5M tokens) take about 3.5 minutes at an assumed ~250 TFLOP/s for FlashAttention-2 in bf16;
``--max-minutes`` stops a slower arm cleanly with a checkpoint (its summary then says "time").
"""

import copy
import dataclasses

from .model import LighthouseSettings, ModelConfig
from .passkey import PasskeySettings
from .trainer import TrainConfig


@dataclasses.dataclass
class Preset:
    model: ModelConfig
    train: TrainConfig
    description: str


def _tiny() -> Preset:
    # 4 layers with one dense layer at each end, so layers 1 and 2 run Lighthouse in stage 1.
    # N = 1024 and p=2, L=3, k=64, m=16 give S = 256 + 2*2*64 = 512 selected tokens.
    model = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=384, max_seq_len=1024,
                        rope_theta=10000.0, dense_boundary=1,
                        lighthouse=LighthouseSettings(levels=3, pooling=2, topk=64, tile_budget=16))
    train = TrainConfig(lighthouse_steps=240, dense_steps=60, batch_size=4, lr=3e-3, warmup_steps=20,
                        val_tokens=32768, checkpoint_every=100, device="auto", name="tiny",
                        passkey=PasskeySettings(lengths=[256, 512, 1024], trials=4, batch_size=4))
    return Preset(model, train,
                  "CPU demo: 0.9M params, 1K context, embedded Austen corpus, 240 Lighthouse + 60 dense steps")


def _h200(lighthouse_steps: int, dense_steps: int, name: str) -> Preset:
    model = ModelConfig(d_model=512, n_layers=16, n_heads=4, n_kv_heads=2, ffn_hidden=1536, max_seq_len=65536,
                        rope_theta=500000.0, dense_boundary=2,
                        lighthouse=LighthouseSettings(levels=3, pooling=4, topk=2048, tile_budget=128))
    train = TrainConfig(lighthouse_steps=lighthouse_steps, dense_steps=dense_steps, batch_size=1, lr=2e-3,
                        warmup_steps=20, weight_decay=0.1, grad_clip=1.0, data=["data/prose.jsonl.xz"],
                        val_fraction=0.01, val_tokens=8 * 65536, eval_batch_size=1, checkpoint_every=0,
                        keep_checkpoints=1, device="cuda", bf16=True, name=name,
                        passkey=PasskeySettings(lengths=[4096, 16384, 65536], trials=4, batch_size=1))
    return Preset(model, train,
                  f"H200 proof of concept at 64K context, {lighthouse_steps} Lighthouse + {dense_steps} dense steps")


_BUILDERS = {
    "tiny": _tiny,
    "h200-dense": lambda: _h200(0, 160, "h200-dense"),
    "h200-lighthouse": lambda: _h200(112, 48, "h200-lighthouse"),
}


def preset_names() -> list:
    return list(_BUILDERS)


def get_preset(name: str) -> Preset:
    if name not in _BUILDERS:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return copy.deepcopy(_BUILDERS[name]())
