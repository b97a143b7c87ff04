"""Same-run comparison of ways to compute one decoder layer of the h200-lighthouse model (64K tokens).

Each variant is one compiled (fullgraph) DecoderLayer, forward and backward under bf16 autocast, in dense and in
Lighthouse mode. The variants differ in how q/k/v and the MLP's gate/up are projected and in how dense attention
treats grouped KV heads:

* separate+repeat: one Linear per projection, k and v repeated per query head before SDPA (the model before)
* separate+gqa: the same with SDPA's enable_gqa
* qkv+gqa: q, k and v as one GEMM over concatenated weights (model.project_qkv), enable_gqa (the model now)
* qkv+catmlp+gqa: also gate and up as one GEMM, split into two halves
* qkv+intmlp+gqa: also gate and up as one GEMM over interleaved rows (gate_0, up_0, gate_1, ...)

Per mode, every variant is compiled and warmed up, then rounds alternate the variants (each round: reps steps
timed one by one with CUDA events); the result is each variant's median step. Then 3 steps of each variant run
under torch.profiler, and their device time is summed per kernel family (lighthouse.train.kernels) and per kernel.

    python bench/layer_variants.py OUT.json            # on a CUDA GPU, with the op library built
    python bench/layer_variants.py --check             # CPU, fp64, eager: every variant computes the same layer
"""

import argparse
import json
import statistics
import types

import torch
import torch.nn.functional as F

from lighthouse.train import model as M
from lighthouse.train.kernels import family, kernel_times
from lighthouse.train.presets import get_preset

SEQ_LEN = 65536
ROUNDS, REPS, PROFILED = 5, 10, 3


def qkv_separate(x, attention):
    b, n, _ = x.shape
    c = attention.config
    return (attention.q_proj(x).view(b, n, c.n_heads, c.head_dim),
            attention.k_proj(x).view(b, n, c.n_kv_heads, c.head_dim),
            attention.v_proj(x).view(b, n, c.n_kv_heads, c.head_dim))


def dense_repeat(q, k, v):
    groups = q.shape[2] // k.shape[2]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def mlp_separate(mlp, x):
    return mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))


def mlp_cat(mlp, x):
    gate, up = M.fused_linear(x, (mlp.gate_proj, mlp.up_proj))
    return mlp.down_proj(F.silu(gate) * up)


def mlp_interleaved(mlp, x):
    weight = torch.stack((mlp.gate_proj.weight, mlp.up_proj.weight), dim=1).flatten(0, 1)
    gate, up = F.linear(x, weight).unflatten(-1, (-1, 2)).unbind(-1)
    return mlp.down_proj(F.silu(gate) * up)


# name: (q/k/v projection, MLP, dense attention)
VARIANTS = {
    "separate+repeat": (qkv_separate, mlp_separate, dense_repeat),
    "separate+gqa": (qkv_separate, mlp_separate, M.dense_attention),
    "qkv+gqa": (M.project_qkv, mlp_separate, M.dense_attention),
    "qkv+catmlp+gqa": (M.project_qkv, mlp_cat, M.dense_attention),
    "qkv+intmlp+gqa": (M.project_qkv, mlp_interleaved, M.dense_attention),
}


def attention_forward(qkv, dense):
    """Attention.forward (without context parallelism) with the variant's projection and dense attention."""
    def forward(self, x, cos, sin):
        b, n, _ = x.shape
        c = self.config
        q, k, v = qkv(x, self)
        if self.mode == M.LIGHTHOUSE:
            out = M.sparse_attention(q, k, v, c.lighthouse, cos, sin)
        else:
            out = dense(M.apply_rope(q, cos, sin), M.apply_rope(k, cos, sin), v)
        return self.o_proj(out.reshape(b, n, c.n_heads * c.head_dim))
    return forward


def layer(name, mode, config, device):
    """A DecoderLayer with the variant's forwards, same weights for every variant (seed 0)."""
    qkv, mlp, dense = VARIANTS[name]
    torch.manual_seed(0)
    built = M.DecoderLayer(config).to(device)
    built.self_attn.mode = mode
    built.self_attn.forward = types.MethodType(attention_forward(qkv, dense), built.self_attn)
    built.mlp.forward = types.MethodType(mlp, built.mlp)
    return built


def check(config) -> None:
    """fp64 on the CPU, eager: the largest difference of every variant's output from separate+repeat."""
    x = torch.randn(1, 256, config.d_model, dtype=torch.float64)
    cos, sin = (t.double() for t in M.rope_tables(config, 256, "cpu"))
    outputs = {name: layer(name, M.DENSE, config, "cpu").double()(x, cos, sin) for name in VARIANTS}
    for name, out in outputs.items():
        print(f"{name:18s} max |difference| {(out - outputs['separate+repeat']).abs().max().item():.3g}")


def step(fn, x, cos, sin, grad):
    with torch.autocast("cuda", torch.bfloat16):
        out = fn(x, cos, sin)
    out.backward(grad)


def measure(config, mode) -> dict:
    cos, sin = M.rope_tables(config, SEQ_LEN, "cuda")
    generator = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1, SEQ_LEN, config.d_model, device="cuda", generator=generator, requires_grad=True)
    grad = torch.randn(1, SEQ_LEN, config.d_model, device="cuda", generator=generator)
    compiled = {}
    for name in VARIANTS:
        compiled[name] = torch.compile(layer(name, mode, config, "cuda"), fullgraph=True)
        for _ in range(3):
            step(compiled[name], x, cos, sin, grad)
    torch.cuda.synchronize()
    times = {name: [] for name in VARIANTS}
    for _ in range(ROUNDS):
        for name, fn in compiled.items():
            events = [torch.cuda.Event(enable_timing=True) for _ in range(REPS + 1)]
            events[0].record()
            for i in range(REPS):
                step(fn, x, cos, sin, grad)
                events[i + 1].record()
            torch.cuda.synchronize()
            times[name] += [events[i].elapsed_time(events[i + 1]) for i in range(REPS)]
    result = {}
    for name, fn in compiled.items():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(PROFILED):
                step(fn, x, cos, sin, grad)
            torch.cuda.synchronize()
        kernels = {}
        for kernel, us in kernel_times(prof):
            entry = kernels.setdefault(kernel, [0.0, 0])
            entry[0] += us / 1000.0 / PROFILED
            entry[1] += 1
        families = {}
        for kernel, (ms, _) in kernels.items():
            families[family(kernel)] = families.get(family(kernel), 0.0) + ms
        result[name] = {
            "median_ms": statistics.median(times[name]), "min_ms": min(times[name]), "steps": len(times[name]),
            "families_ms": families,
            "kernels": sorted(([k, ms, calls / PROFILED] for k, (ms, calls) in kernels.items()), key=lambda r: -r[1]),
        }
        print(f"{mode:10s} {name:18s} median {result[name]['median_ms']:.3f} ms, device time by family: "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(families.items(), key=lambda item: -item[1])), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="JSON file of the results (CUDA)")
    parser.add_argument("--check", action="store_true", help="only compare the variants' outputs on the CPU")
    parser.add_argument("--commit", default="unknown", help="the commit measured, recorded in the JSON")
    args = parser.parse_args()
    config = get_preset("h200-lighthouse").model
    if args.check:
        check(config)
        return
    if args.out is None:
        parser.error("the output file is required unless --check")
    # Every variant compiles the same forward code once per mode: more than dynamo's default recompile limit.
    torch._dynamo.config.recompile_limit = 64
    results = {"commit": args.commit, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "seq_len": SEQ_LEN, "rounds": ROUNDS, "reps": REPS, "profiled_steps": PROFILED,
               "modes": {mode: measure(config, mode) for mode in (M.DENSE, M.LIGHTHOUSE)}}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
