"""torch.compile(fullgraph=True) of the context-parallel layers on W = 2 CPU processes (gloo): no graph break
(the exchanges, the score all-reduce of copied KV heads and the all-gather of rope shards are functional
collectives), and forward and backward equal to eager, bit for bit.

The backend is aot_eager: it captures the same forward and backward graphs as inductor (dynamo + AOT
autograd) without inductor's C++ code generation, which takes minutes on two cores. The same check with the
default inductor backend also gives identical bits (docs/context-parallel.md).
"""

import inspect

import torch

from _distributed_runner import run_ranks

CONFIG = {"levels": 4, "pooling": 2, "topk": 8, "tile_budget": 4}
N, WORLD = 100, 2


def _rope_tables(dim):
    angles = torch.arange(N, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(0, dim, 2) / dim)
    angles = torch.cat((angles, angles), dim=1)
    return angles.cos().float(), angles.sin().float()


def _compiled_equals_eager(rank, world):
    import lighthouse
    from lighthouse.distributed import context_parallel_attention, context_parallel_dense_attention

    with_rope = "rope" in inspect.signature(lighthouse.lighthouse_attention).parameters
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, N, 4, 8, generator=g)
    k, v = (torch.randn(2, N, 1, 8, generator=g) for _ in range(2))  # Hkv = 1 < W: KV heads copied
    grad_out = torch.randn(2, N, 4, 8, generator=g)
    length = N // world
    mine = slice(rank * length, (rank + 1) * length)
    cos, sin = (t[mine].contiguous() for t in _rope_tables(8))  # this rank's shard of the tables

    def layers(q, k, v, cos, sin):
        rope = {"rope": (cos, sin)} if with_rope else {}
        sparse = context_parallel_attention(q, k, v, scorer="dilated", **rope, **CONFIG)
        dense = context_parallel_dense_attention(q, k, v, rope=(cos, sin))
        return sparse, dense

    def run(function):
        shards = [t[:, mine].clone().requires_grad_() for t in (q, k, v)]
        sparse, dense = function(*shards, cos, sin)
        ((sparse + dense) * grad_out[:, mine]).sum().backward()
        return [sparse.detach(), dense.detach()] + [t.grad for t in shards]

    eager = run(layers)
    torch._dynamo.reset()
    compiled = run(torch.compile(layers, fullgraph=True, backend="aot_eager"))
    return [torch.equal(a, b) for a, b in zip(eager, compiled)]


def test_compiled_context_parallel_layers_equal_eager():
    for rank, equal in enumerate(run_ranks(WORLD, _compiled_equals_eager)):
        assert equal == [True] * 5, f"rank {rank}: [sparse out, dense out, grad q, grad k, grad v] equal: {equal}"
