"""Named run configurations.

``tiny`` shows the whole recipe on a CPU in about five minutes (two cores) with the embedded corpus. The
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

The ``study-*`` presets compare selection rules and RoPE placements on one H200 with runs that can
show quality: a validation curve in dense and Lighthouse mode, the leak probe and retrieval over
distance (see evaluate.py). Every arm is the same ~15M-parameter byte model (8 layers, d_model 384,
3 heads of 128 with full MHA, ffn 1024) at 32K context, batch 2 (65,536 tokens a step), with the same
seed, so every arm starts from the same weights and sees the same batches. With p=4, L=3, k=1024 a
Lighthouse layer keeps S = 32,768/16 + 2·4·1024 = 10,240 of 32,768 tokens. Only one layer at each end
stays dense (``dense_boundary=1``): the paper keeps 4 of 30 layers dense, and with 8 layers two per
end would leave only half the layers on Lighthouse. The schedule is warmup–stable–decay with the
last 20% decaying and the switch to dense attention at the start of the decay, so the stage-2 steps
are exactly the decay and the learning rate no longer falls through the switch. Measured on an H200
(bf16): Lighthouse steps run at about 850K tokens/s and dense steps at about 475K, so the 600 steps
(39M tokens) of a Lighthouse arm train in about 55 s and the dense arm in about 85 s; one evaluation
(64 windows in both modes and the leak probe) takes about 3 s, 13 of them about 40 s.

* ``study-dense``: dense attention in every step (the baseline);
* ``study-paper``, ``study-lagged``, ``study-causal``: Lighthouse with that selection rule, RoPE on
  the pooled entries at their own positions (``rope="pooled"``), then dense resumption;
* ``study-paper-before``: the paper's selection with q/k rotated before pooling (the original model).

The ``long-*`` presets are the same model at 128K context (one 131,072-token sequence a step), where the
attention is most of a dense step: there S = 131,072/16 + 2·4·1024 = 16,384 of 131,072 tokens (12.5%).
Their step counts are placeholders: the study sets ``--steps`` from a timing of both modes so that arms
get equal GPU time or equal tokens (see lighthouse.train.study). Evaluations are kept small at this
length (16 validation windows, leak probe on 2 windows, 2 retrieval windows, 2 passkey trials).

* ``long-dense``: dense attention in every step;
* ``long-paper``, ``long-lagged``, ``long-causal``: Lighthouse with that selection rule, then dense
  resumption over the wsd decay.
"""

import copy
import dataclasses

from .leak import LeakSettings
from .model import LighthouseSettings, ModelConfig
from .passkey import PasskeySettings
from .retrieval import RetrievalSettings
from .trainer import TrainConfig


@dataclasses.dataclass
class Preset:
    model: ModelConfig
    train: TrainConfig
    description: str
    # The command line places the switch at the start of the wsd decay (unless told otherwise).
    switch_at_decay: bool = False


def _tiny() -> Preset:
    # 4 layers with one dense layer at each end, so layers 1 and 2 run Lighthouse in stage 1.
    # N = 1024 and p=2, L=3, k=64, m=16 give S = 256 + 2*2*64 = 512 selected tokens.
    # The evaluations are kept small (16 validation windows, 32 probed positions): about 2-3 s each.
    model = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=384, max_seq_len=1024,
                        rope_theta=10000.0, dense_boundary=1,
                        lighthouse=LighthouseSettings(levels=3, pooling=2, topk=64, tile_budget=16, rope="pooled"))
    train = TrainConfig(lighthouse_steps=240, dense_steps=60, batch_size=4, lr=3e-3, warmup_steps=20,
                        schedule="wsd", decay_fraction=0.2, val_windows=16, eval_every=60, checkpoint_every=100,
                        device="auto", name="tiny",
                        passkey=PasskeySettings(lengths=[256, 512, 1024], trials=4, batch_size=4),
                        retrieval=RetrievalSettings(distances=[64, 128, 256, 512, 960], windows=4))
    return Preset(model, train,
                  "CPU demo: 0.9M params, 1K context, embedded Austen corpus, 240 Lighthouse + 60 dense steps "
                  "(the dense steps are the wsd decay)", switch_at_decay=True)


def _h200(lighthouse_steps: int, dense_steps: int, name: str) -> Preset:
    model = ModelConfig(d_model=512, n_layers=16, n_heads=4, n_kv_heads=2, ffn_hidden=1536, max_seq_len=65536,
                        rope_theta=500000.0, dense_boundary=2,
                        lighthouse=LighthouseSettings(levels=3, pooling=4, topk=2048, tile_budget=128))
    train = TrainConfig(lighthouse_steps=lighthouse_steps, dense_steps=dense_steps, batch_size=1, lr=2e-3,
                        warmup_steps=20, weight_decay=0.1, grad_clip=1.0, data=["data/prose.jsonl.xz"],
                        val_fraction=0.01, val_windows=8, eval_batch_size=1, checkpoint_every=0,
                        keep_checkpoints=1, device="cuda", bf16=True, name=name,
                        passkey=PasskeySettings(lengths=[4096, 16384, 65536], trials=4, batch_size=1))
    return Preset(model, train,
                  f"H200 proof of concept at 64K context, {lighthouse_steps} Lighthouse + {dense_steps} dense steps")


def _study(name: str, lighthouse: bool, selection: str = "paper", rope: str = "pooled") -> Preset:
    model = ModelConfig(d_model=384, n_layers=8, n_heads=3, n_kv_heads=3, ffn_hidden=1024, max_seq_len=32768,
                        rope_theta=500000.0, dense_boundary=1,
                        lighthouse=LighthouseSettings(levels=3, pooling=4, topk=1024, tile_budget=128,
                                                      selection=selection, rope=rope))
    steps, decay = 600, 0.2
    dense_steps = round(decay * steps) if lighthouse else steps
    # val_fraction 0.04 holds out 54 of the prose documents (4.1M tokens with seed 0), so the 64 validation
    # windows of 32K are disjoint and spread over many documents.
    train = TrainConfig(lighthouse_steps=steps - dense_steps, dense_steps=dense_steps, batch_size=2, lr=2e-3,
                        warmup_steps=50, schedule="wsd", decay_fraction=decay, weight_decay=0.1, grad_clip=1.0,
                        data=["data/prose.jsonl.xz"], val_fraction=0.04, val_windows=64, eval_every=50,
                        eval_batch_size=4, checkpoint_every=0, keep_checkpoints=1, device="cuda", bf16=True,
                        name=name, leak=LeakSettings(windows=4, positions=8),
                        passkey=PasskeySettings(lengths=[4096, 16384, 32768], trials=4, batch_size=2))
    arm = f"{selection} selection, rope {rope}, {steps - dense_steps} Lighthouse + {dense_steps} dense steps" \
        if lighthouse else f"dense baseline, {steps} steps"
    return Preset(model, train, f"H200 study at 32K context: {arm}", switch_at_decay=lighthouse)


def _long(name: str, lighthouse: bool, selection: str = "paper") -> Preset:
    preset = _study(name, lighthouse, selection)
    model, train = preset.model, preset.train
    model.max_seq_len = 131072
    steps = 200
    train.dense_steps = round(train.decay_fraction * steps) if lighthouse else steps
    train.lighthouse_steps = steps - train.dense_steps
    train.batch_size, train.warmup_steps, train.eval_every = 1, 20, 50
    # 0.04 of the prose corpus holds out ~4.1M tokens: 16 disjoint validation windows of 128K.
    train.val_windows, train.eval_batch_size = 16, 1
    train.leak = LeakSettings(windows=2, positions=8)
    train.retrieval = RetrievalSettings(windows=2)
    train.passkey = PasskeySettings(lengths=[16384, 131072], trials=2, batch_size=1)
    arm = f"{selection} selection, rope pooled, Lighthouse then dense over the wsd decay" if lighthouse \
        else "dense baseline"
    return Preset(model, train, f"H200 study at 128K context: {arm}", switch_at_decay=lighthouse)


_BUILDERS = {
    "tiny": _tiny,
    "h200-dense": lambda: _h200(0, 160, "h200-dense"),
    "h200-lighthouse": lambda: _h200(112, 48, "h200-lighthouse"),
    "study-dense": lambda: _study("study-dense", lighthouse=False),
    "study-paper": lambda: _study("study-paper", lighthouse=True, selection="paper"),
    "study-lagged": lambda: _study("study-lagged", lighthouse=True, selection="lagged"),
    "study-causal": lambda: _study("study-causal", lighthouse=True, selection="causal"),
    "study-paper-before": lambda: _study("study-paper-before", lighthouse=True, selection="paper", rope="before"),
    "long-dense": lambda: _long("long-dense", lighthouse=False),
    "long-paper": lambda: _long("long-paper", lighthouse=True, selection="paper"),
    "long-lagged": lambda: _long("long-lagged", lighthouse=True, selection="lagged"),
    "long-causal": lambda: _long("long-causal", lighthouse=True, selection="causal"),
}


def preset_names() -> list:
    return list(_BUILDERS)


def get_preset(name: str) -> Preset:
    if name not in _BUILDERS:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return copy.deepcopy(_BUILDERS[name]())
