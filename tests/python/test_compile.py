"""torch.compile(fullgraph=True) of a module that uses lighthouse_attention: no graph breaks, and forward and
backward equal to eager (CPU, default inductor backend)."""

import pytest
import torch
from torch import nn

import lighthouse

CONFIG = {"levels": 3, "pooling": 2, "topk": 8, "tile_budget": 4}


class TinyAttentionBlock(nn.Module):
    def __init__(self, dim=32, heads=4, kv_heads=2, **options):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.attention = lighthouse.LighthouseAttention(**options)

    def forward(self, x):
        batch, seq_len, _ = x.shape
        q = self.q(x).view(batch, seq_len, self.heads, self.head_dim)
        k, v = self.kv(x).view(batch, seq_len, 2, self.kv_heads, self.head_dim).unbind(2)
        return self.out(self.attention(q, k, v).reshape(batch, seq_len, -1))


@pytest.mark.parametrize(
    "scorer, seq_len", [("norm", 99), ("dilated", 96), ("norm", 24)], ids=["norm", "dilated", "dense-fallback"]
)
def test_compiled_forward_and_backward_equal_eager(scorer, seq_len):
    torch.manual_seed(0)
    block = TinyAttentionBlock(scorer=scorer, **CONFIG)
    x = torch.randn(2, seq_len, 32)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)

    def run(module):
        block.zero_grad()
        xi = x.clone().requires_grad_()
        out = module(xi)
        out.square().sum().backward()
        return out.detach(), xi.grad, [p.grad.clone() for p in block.parameters()]

    eager_out, eager_dx, eager_grads = run(block)
    out, dx, grads = run(compiled)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, eager_dx, rtol=1e-5, atol=1e-6)
    for grad, eager_grad in zip(grads, eager_grads):
        torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-6)
