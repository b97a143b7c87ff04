"""Rotary positions of the kept entries (rope=(cos, sin)) on the CPU: the layer against a plain PyTorch
reference, gather / gather_backward against the definition bit for bit, the level-L fusion, opcheck,
fp64 gradcheck and gradgradcheck, torch.compile, the dense fallback and the dilated scorer, per-pair tables
([..., D/2]) against per-element ones, bad tables; plus a `gpu` test of the CUDA kernels against the CPU bits."""

import re

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import lighthouse
from lighthouse import ops

# Ragged N (99), GQA 2:1, three levels of pooling 2 (blocks of 1, 2, 4).
CONFIG = {"levels": 3, "pooling": 2, "topk": 8, "tile_budget": 4}
B, N, H, HKV, D = 2, 99, 4, 2, 8
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CONVENTIONS = {"rotate_half": False, "interleaved": True}


def make_qkv(dtype=torch.float32, seed=0, seq_len=N, head_dim=D, batch=B):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seq_len, H, head_dim, generator=g).to(dtype)
    k = torch.randn(batch, seq_len, HKV, head_dim, generator=g).to(dtype)
    v = torch.randn(batch, seq_len, HKV, head_dim, generator=g).to(dtype)
    return q, k, v


def model_tables(seq_len=N, head_dim=D, batch=None, theta=10000.0):
    """Llama-style tables: angle n * theta^(-2j/D), repeated over both halves; one batch row per shift."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    shifts = torch.zeros(1) if batch is None else torch.arange(batch, dtype=torch.float64) * 7
    angles = (torch.arange(seq_len, dtype=torch.float64)[None, :, None] + shifts[:, None, None]) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos().float(), angles.sin().float()
    return (cos[0], sin[0]) if batch is None else (cos, sin)


def random_tables(seq_len=N, head_dim=D, batch=None, seed=9):
    """Any values: the kernels must not assume cos^2 + sin^2 = 1 or any symmetry of the model's tables."""
    g = torch.Generator().manual_seed(seed)
    shape = (seq_len, head_dim) if batch is None else (batch, seq_len, head_dim)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def select_for(q, k, config=CONFIG):
    scores_qk, scores_kq = ops.pool_score(q, k, **config)
    return ops.select(scores_qk, scores_kq, q.shape[1], **config)


def swap(x, interleaved):
    """Each element's pair partner: x[j + D/2] for x[j] and back (rotate-half), or x[2j+1] for x[2j] and back."""
    if interleaved:
        return torch.stack((x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)


def first_sign(head_dim, interleaved, dtype):
    """+1 for the first element of each pair, -1 for the second."""
    first = torch.arange(head_dim) % 2 == 0 if interleaved else torch.arange(head_dim) < head_dim // 2
    return torch.where(first, 1.0, -1.0).to(dtype)


def partner(x, interleaved):
    """The value each element is paired with, negated for the first element of its pair (rotate_half)."""
    return -first_sign(x.shape[-1], interleaved, x.dtype) * swap(x, interleaved)


def entry_tables(cos, sin, indices, seq_len, config=CONFIG):
    """Rows of the tables at each kept entry's last covered position: [B, Hkv, S, D] each."""
    level, local = ref.level_and_local(indices, seq_len, config["levels"], config["pooling"])
    position = (local + 1) * config["pooling"] ** level - 1
    if cos.dim() == 2:
        return cos[position], sin[position]
    rows = torch.arange(cos.shape[0])[:, None, None]
    return cos[rows, position], sin[rows, position]


def rotate_selected(x_sel, cos, sin, interleaved):
    """x_sel [B, h, S, D] (float) rotated with per-entry tables [B, Hkv, S, D] (query heads share their KV head's)."""
    cos, sin = (ref.per_query_head(t, x_sel.shape[1]).to(x_sel.dtype) for t in (cos, sin))
    return x_sel * cos + partner(x_sel, interleaved) * sin


# The layer against a plain reference: pool raw q, k, v, rotate each kept q and k entry at its position, SDPA,
# scatter (float64 throughout).


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("batched_tables", [False, True], ids=["[N,D]", "[B,N,D]"])
def test_layer_matches_a_plain_reference(convention, batched_tables):
    interleaved = CONVENTIONS[convention]
    q, k, v = make_qkv()
    cos, sin = model_tables(batch=B if batched_tables else None)
    out = lighthouse.lighthouse_attention(q, k, v, **CONFIG, rope=(cos, sin), rope_interleaved=interleaved)
    indices, slots = select_for(q, k)
    q_sel, k_sel, v_sel = ref.gather(q, k, v, indices, CONFIG["levels"], CONFIG["pooling"])
    cos_e, sin_e = entry_tables(cos.double(), sin.double(), indices, N)
    q_sel, k_sel = (rotate_selected(x, cos_e, sin_e, interleaved) for x in (q_sel, k_sel))
    o_sel = F.scaled_dot_product_attention(q_sel, k_sel, v_sel, is_causal=True, enable_gqa=True)
    expected = ref.scatter(o_sel, indices, N, CONFIG["levels"], CONFIG["pooling"])
    assert ref.max_relative_error(out, expected) < 1e-5
    unrotated = lighthouse.lighthouse_attention(q, k, v, **CONFIG)
    assert ref.max_relative_error(unrotated, expected) > 1e-2, "the rotation must change the result"


# gather and gather_backward against the definition, bit for bit: the pooled mean (gather without tables)
# rounded to the dtype, then each element a*cos - partner*sin or a*cos + partner*sin in float32.


def rotate_like_the_kernels(x_sel, cos_e, sin_e, interleaved):
    compute = torch.float64 if x_sel.dtype == torch.float64 else torch.float32
    return rotate_selected(x_sel.to(compute), cos_e, sin_e, interleaved).to(x_sel.dtype)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,))
def test_gather_rotates_the_rounded_mean_at_the_last_position(dtype, convention):
    interleaved = CONVENTIONS[convention]
    q, k, v = make_qkv(dtype, seed=1)
    indices, _ = select_for(q, k)
    cos, sin = random_tables(batch=B)
    plain = ops.gather(q, k, v, indices, **CONFIG)
    rotated = ops.gather(q, k, v, indices, **CONFIG, rope=(cos, sin), rope_interleaved=interleaved)
    cos_e, sin_e = entry_tables(cos, sin, indices, N)
    assert torch.equal(rotated[0], rotate_like_the_kernels(plain[0], cos_e, sin_e, interleaved))
    assert torch.equal(rotated[1], rotate_like_the_kernels(plain[1], cos_e, sin_e, interleaved))
    assert torch.equal(rotated[2], plain[2]), "v is never rotated"
    pooled = ops.pool_score_pooled(q, k, v, **CONFIG)[2:]
    fused = ops.gather(q, k, v, indices, **CONFIG, pooled=pooled, rope=(cos, sin), rope_interleaved=interleaved)
    for a, b in zip(fused, rotated):
        assert torch.equal(a, b), "the level-L fusion gives the same bits"


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_gather_backward_rotates_back_then_spreads(dtype, convention):
    """The q and k gradients are rotated back with the transpose (sin at the partner's index), then spread as
    without tables; exact where the rotated-back gradient is representable (float32 and float64)."""
    interleaved = CONVENTIONS[convention]
    q, k, v = make_qkv(dtype, seed=2)
    indices, slots = select_for(q, k)
    cos, sin = random_tables()
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(t.shape, generator=g, dtype=dtype) for t in ops.gather(q, k, v, indices, **CONFIG)]
    cos_e, sin_e = entry_tables(cos, sin, indices, N)

    def rotate_back(grad):  # u = g*cos + g'*sin' (first element) or g*cos - g'*sin' (second); ' = partner
        x = grad.to(torch.float64 if dtype == torch.float64 else torch.float32)
        c, s = (ref.per_query_head(t, x.shape[1]).to(x.dtype) for t in (cos_e, sin_e))
        return x * c + first_sign(D, interleaved, x.dtype) * (swap(x, interleaved) * swap(s, interleaved))

    rotated_back = [rotate_back(grads[0]), rotate_back(grads[1]), grads[2]]
    expected = ops.gather_backward(*rotated_back, slots, N, **CONFIG)
    actual = ops.gather_backward(*grads, slots, N, **CONFIG, rope=(cos, sin), rope_interleaved=interleaved)
    for name, a, b in zip(("grad_q", "grad_k", "grad_v"), actual, expected):
        assert torch.equal(a, b), name


def test_identity_tables_give_the_bits_of_no_tables():
    """cos = 1, sin = 0 rotates nothing, in every dtype: the rounding step adds nothing either."""
    for dtype in DTYPES:
        q, k, v = make_qkv(dtype, seed=4)
        indices, slots = select_for(q, k)
        identity = (torch.ones(N, D), torch.zeros(N, D))
        for a, b in zip(ops.gather(q, k, v, indices, **CONFIG, rope=identity), ops.gather(q, k, v, indices, **CONFIG)):
            assert torch.equal(a, b), dtype
        grads = [t.detach().clone() for t in ops.gather(q, k, v, indices, **CONFIG)]
        with_identity = ops.gather_backward(*grads, slots, N, **CONFIG, rope=identity)
        for a, b in zip(with_identity, ops.gather_backward(*grads, slots, N, **CONFIG)):
            assert torch.equal(a, b), dtype


def pair_tables(seq_len=N, head_dim=D, batch=None, seed=9):
    """Random per-element tables whose two elements of each pair are equal, for either convention: (table,
    per-pair table) for cos and sin, both conventions sharing one draw."""
    g = torch.Generator().manual_seed(seed)
    shape = (seq_len, head_dim // 2) if batch is None else (batch, seq_len, head_dim // 2)
    pairs = (torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    half_form = tuple(torch.cat((t, t), dim=-1) for t in pairs)
    interleaved_form = tuple(t.repeat_interleave(2, dim=-1) for t in pairs)
    return pairs, {False: half_form, True: interleaved_form}


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("batched_tables", [False, True], ids=["[N,D/2]", "[B,N,D/2]"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_pair_tables_give_the_bits_of_per_element_tables(dtype, batched_tables, convention):
    """Tables of one value per rotation pair [..., D/2] are the per-element tables with that value at both elements
    of each pair: gather, gather_backward and the layer (forward and backward) give the same bits."""
    interleaved = CONVENTIONS[convention]
    q, k, v = make_qkv(dtype, seed=5)
    indices, slots = select_for(q, k)
    pairs, full = pair_tables(batch=B if batched_tables else None)
    full = full[interleaved]
    kwargs = {**CONFIG, "rope_interleaved": interleaved}
    pooled = ops.pool_score_pooled(q, k, v, **CONFIG)[2:]
    for given in (None, pooled):
        for a, b in zip(ops.gather(q, k, v, indices, **kwargs, rope=pairs, pooled=given),
                        ops.gather(q, k, v, indices, **kwargs, rope=full, pooled=given)):
            assert torch.equal(a, b)
    grads = [t.detach().clone() for t in ops.gather(q, k, v, indices, **kwargs, rope=full)]
    for a, b in zip(ops.gather_backward(*grads, slots, N, **kwargs, rope=pairs),
                    ops.gather_backward(*grads, slots, N, **kwargs, rope=full)):
        assert torch.equal(a, b)

    def layer(rope, seq_len):
        xs = [t[:, :seq_len].clone().requires_grad_() for t in (q, k, v)]
        rope = tuple(t[..., :seq_len, :].contiguous() for t in rope)
        out = lighthouse.lighthouse_attention(*xs, **CONFIG, rope=rope, rope_interleaved=interleaved)
        out.float().square().sum().backward()
        return out, *(x.grad for x in xs)

    for seq_len in (N, 24):  # the kernels, and the dense fallback's rotation of every position
        for a, b in zip(layer(pairs, seq_len), layer(full, seq_len)):
            assert torch.equal(a, b), seq_len


def test_rotary_tables_per_pair_are_the_first_half():
    cos, sin = lighthouse.rope.rotary_tables(16, 8, theta=500.0)
    pair_cos, pair_sin = lighthouse.rope.rotary_tables(16, 8, theta=500.0, per_pair=True)
    assert pair_cos.shape == (16, 4)
    assert torch.equal(pair_cos, cos[:, :4]) and torch.equal(pair_sin, sin[:, :4])
    assert torch.equal(cos[:, 4:], cos[:, :4]) and torch.equal(sin[:, 4:], sin[:, :4])


# PyTorch integration: opcheck, gradients, torch.compile.


def _opcheck_cases():
    q, k, v = make_qkv()
    indices, slots = select_for(q, k)
    pooled = ops.pool_score_pooled(q, k, v, **CONFIG)[2:]
    cos, sin = model_tables()
    cos_b, sin_b = random_tables(batch=B)
    pairs, pairs_b = pair_tables()[0], pair_tables(batch=B)[0]
    grad = lambda t: t.detach().clone().requires_grad_()  # noqa: E731
    sel = [grad(t) for t in ops.gather(q, k, v, indices, **CONFIG)]
    op = torch.ops.lighthouse
    return [
        (op.gather.default, (grad(q), grad(k), grad(v), indices, None, None, None, cos, sin), CONFIG),
        (op.gather.default, (grad(q), grad(k), grad(v), indices, *pooled, cos_b, sin_b),
         {**CONFIG, "rope_interleaved": True}),
        (op.gather_backward.default, (*sel, slots, N, cos, sin), CONFIG),
        (op.gather_backward.default, (*sel, slots, N, cos_b, sin_b), {**CONFIG, "rope_interleaved": True}),
        (op.gather.default, (grad(q), grad(k), grad(v), indices, *pooled, *pairs_b), CONFIG),
        (op.gather_backward.default, (*sel, slots, N, *pairs), {**CONFIG, "rope_interleaved": True}),
    ]


@pytest.mark.parametrize("case", range(6))
def test_opcheck(case):
    op, args, kwargs = _opcheck_cases()[case]
    torch.library.opcheck(op, args, kwargs)


GRAD_CONFIG = {"levels": 2, "pooling": 2, "topk": 4, "tile_budget": 2}
GRAD_N = 21


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_gradcheck_and_gradgradcheck_through_gather_in_fp64(convention):
    """Random (non-rotation) tables per batch row: gather and gather_backward must be exact adjoints."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, GRAD_N, 2, 4, generator=g, dtype=torch.float64).requires_grad_()
    k, v = (torch.randn(2, GRAD_N, 1, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    indices, _ = select_for(q.detach(), k.detach(), GRAD_CONFIG)
    rope = random_tables(GRAD_N, 4, batch=2)
    interleaved = CONVENTIONS[convention]

    def gather(q, k, v):
        return ops.gather(q, k, v, indices, **GRAD_CONFIG, rope=rope, rope_interleaved=interleaved)

    torch.autograd.gradcheck(gather, (q, k, v))
    torch.autograd.gradgradcheck(gather, (q, k, v))


def test_gradcheck_the_layer_in_fp64():
    g = torch.Generator().manual_seed(8)
    q = torch.randn(1, GRAD_N, 2, 4, generator=g, dtype=torch.float64).requires_grad_()
    k, v = (torch.randn(1, GRAD_N, 1, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    rope = model_tables(GRAD_N, 4)

    def layer(q, k, v):
        return lighthouse.lighthouse_attention(q, k, v, **GRAD_CONFIG, rope=rope)

    torch.autograd.gradcheck(layer, (q, k, v))


class RopeBlock(torch.nn.Module):
    def __init__(self, dim=32, heads=4, kv_heads=2, **options):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = torch.nn.Linear(dim, dim, bias=False)
        self.kv = torch.nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.attention = lighthouse.LighthouseAttention(**options)

    def forward(self, x, cos, sin):
        batch, seq_len, _ = x.shape
        q = self.q(x).view(batch, seq_len, self.heads, self.head_dim)
        k, v = self.kv(x).view(batch, seq_len, 2, self.kv_heads, self.head_dim).unbind(2)
        return self.attention(q, k, v, rope=(cos, sin)).reshape(batch, seq_len, -1)


@pytest.mark.parametrize(
    "scorer, seq_len, interleaved",
    [("norm", 99, False), ("norm", 99, True), ("dilated", 96, False), ("norm", 24, False)],
    ids=["norm", "interleaved", "dilated", "dense-fallback"],
)
def test_compiled_forward_and_backward_equal_eager(scorer, seq_len, interleaved):
    torch.manual_seed(0)
    block = RopeBlock(scorer=scorer, rope_interleaved=interleaved, **CONFIG)
    x = torch.randn(2, seq_len, 32)
    cos, sin = model_tables(seq_len, 8)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)

    def run(module):
        block.zero_grad()
        xi = x.clone().requires_grad_()
        out = module(xi, cos, sin)
        out.square().sum().backward()
        return out.detach(), xi.grad, [p.grad.clone() for p in block.parameters()]

    eager = run(block)
    result = run(compiled)
    assert torch.isfinite(result[0]).all()
    for a, b in zip((result[0], result[1], *result[2]), (eager[0], eager[1], *eager[2])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# The paths that do not gather rotate every position with the same arithmetic.


def hf_rotation(x, cos, sin):
    """transformers' Llama rotation of x [B, N, h, D] (tables [N, D])."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def test_dense_fallback_rotates_every_position():
    q, k, v = make_qkv(seq_len=24)
    cos, sin = model_tables(24)
    out = lighthouse.lighthouse_attention(q, k, v, **CONFIG, rope=(cos, sin))
    expected = lighthouse.attention.dense_causal_attention(hf_rotation(q, cos, sin), hf_rotation(k, cos, sin), v)
    assert torch.equal(out, expected)
    module = lighthouse.LighthouseAttention(**CONFIG, mode="dense")
    q, k, v = make_qkv()
    cos, sin = model_tables()
    expected = lighthouse.attention.dense_causal_attention(hf_rotation(q, cos, sin), hf_rotation(k, cos, sin), v)
    assert torch.equal(module(q, k, v, rope=(cos, sin)), expected)


def test_dilated_scorer_scores_rotated_q_and_k():
    q, k, v = make_qkv(seq_len=96)
    cos, sin = model_tables(96)
    q_rot, k_rot = hf_rotation(q, cos, sin), hf_rotation(k, cos, sin)
    base = lighthouse.attention.dilated_base_scores(q_rot, k_rot, v, dilation=4)
    scores = ops.pool_score(q, k, **CONFIG, base_qk=base[0], base_kq=base[1])
    indices, slots = ops.select(*scores, 96, **CONFIG)
    q_sel, k_sel, v_sel = ops.gather(q, k, v, indices, **CONFIG, rope=(cos, sin))
    o_sel = F.scaled_dot_product_attention(q_sel, k_sel, v_sel, is_causal=True, enable_gqa=True)
    expected = ops.scatter(o_sel, slots, 96, **CONFIG)
    out = lighthouse.lighthouse_attention(q, k, v, **CONFIG, scorer="dilated", rope=(cos, sin))
    assert torch.equal(out, expected)


# Bad tables: ValueError naming the table.


def _bad_calls():
    q, k, v = make_qkv()
    indices, slots = select_for(q, k)
    sel = ops.gather(q, k, v, indices, **CONFIG)
    cos, sin = model_tables()
    op = torch.ops.lighthouse
    odd = make_qkv(head_dim=7)

    def gather_op(rope_cos, rope_sin):
        return op.gather(q, k, v, indices, None, None, None, rope_cos, rope_sin, **CONFIG)

    return {
        "only cos": (lambda: gather_op(cos, None), "rope_cos, rope_sin"),
        "only sin (backward)": (lambda: op.gather_backward(*sel, slots, N, None, sin, **CONFIG), "rope_cos, rope_sin"),
        "float64 table": (lambda: gather_op(cos.double(), sin), "rope_cos.dtype"),
        "4-d table": (lambda: gather_op(cos, sin[None, None]), "rope_sin"),
        "short table": (lambda: gather_op(cos[:-1], sin), "rope_cos.shape[0]"),
        "head_dim of table": (lambda: op.gather_backward(*sel, slots, N, cos, sin[:, :3].contiguous(), **CONFIG),
                              "rope_sin.shape[1]"),
        "per-pair sin, per-element cos": (lambda: gather_op(cos, sin[:, :4].contiguous()), "rope_sin"),
        "wrapper: per-pair sin, per-element cos": (
            lambda: ops.gather(q, k, v, indices, **CONFIG, rope=(cos, sin[:, :4])), "rope_sin.shape"),
        "batch of table": (lambda: gather_op(cos.expand(3, N, D), sin.expand(3, N, D)), "rope_cos.shape[0]"),
        "strided table": (lambda: gather_op(cos, sin.t().contiguous().t()), "rope_sin.stride()"),
        "table device": (lambda: gather_op(cos.to("meta"), sin), "rope_cos.device"),
        "odd head_dim": (lambda: op.gather(*odd, select_for(*odd[:2])[0], None, None, None, torch.ones(N, 7),
                                           torch.zeros(N, 7), **CONFIG), "head_dim"),
        "wrapper: not a pair": (lambda: ops.gather(q, k, v, indices, **CONFIG, rope=cos), "rope"),
        "wrapper: table shape": (lambda: ops.gather(q, k, v, indices, **CONFIG, rope=(cos, sin[:50])),
                                 "rope_sin.shape"),
        "layer: table shape": (lambda: lighthouse.lighthouse_attention(q, k, v, **CONFIG, rope=(cos[:, :6], sin)),
                               "rope_cos.shape"),
        "tables with grad": (lambda: ops.gather(q.requires_grad_(), k, v, indices, **CONFIG,
                                                rope=(cos.requires_grad_(), sin)), "rope_cos"),
    }


@pytest.mark.parametrize("name", sorted(_bad_calls()))
def test_invalid_tables_are_a_clear_value_error(name):
    call, argument = _bad_calls()[name]
    with pytest.raises(ValueError, match=r"^lighthouse: " + re.escape(argument) + ": expected"):
        call()


# CUDA: the same bits as the CPU (skipped without a CUDA device).


# gather_backward rotates inside its tiled kernel's loop (1000 positions, 506 kept entries) or, from 4 positions
# per kept entry, in a first pass into workspace from PyTorch's allocator (4000 positions, 762 kept entries).
ROUTES = {"in_loop": (1000, 2), "first_pass": (4000, 4)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("head_dim", [64, 6], ids=["vector", "scalar"])
@pytest.mark.parametrize("route", ROUTES)
def test_cuda_rope_ops_equal_the_cpu_bits(dtype, convention, head_dim, route):
    interleaved = CONVENTIONS[convention]
    seq_len, pooling = ROUTES[route]
    config = {"levels": 3, "pooling": pooling, "topk": 64, "tile_budget": 32}
    q, k, v = make_qkv(dtype, seed=11, seq_len=seq_len, head_dim=head_dim)
    indices, slots = select_for(q, k, config)
    pooled = ops.pool_score_pooled(q, k, v, **config)[2:]
    cuda = lambda ts: [t.cuda() for t in ts]  # noqa: E731
    per_pair_tables = (pair_tables(seq_len, head_dim)[0], pair_tables(seq_len, head_dim, batch=B)[0])
    for rope in (random_tables(seq_len, head_dim), random_tables(seq_len, head_dim, batch=B), *per_pair_tables):
        kwargs = {**config, "rope_interleaved": interleaved}
        expected = ops.gather(q, k, v, indices, **kwargs, rope=rope)
        for given in (None, pooled):
            actual = ops.gather(*cuda((q, k, v, indices)), **kwargs, rope=cuda(rope),
                                pooled=None if given is None else cuda(given))
            for name, a, b in zip(("q_sel", "k_sel", "v_sel"), actual, expected):
                assert torch.equal(a.cpu(), b), name
        g = torch.Generator().manual_seed(12)
        grads = [torch.randn(t.shape, generator=g).to(dtype) for t in expected]
        expected = ops.gather_backward(*grads, slots, seq_len, **kwargs, rope=rope)
        actual = ops.gather_backward(*cuda(grads), slots.cuda(), seq_len, **kwargs, rope=cuda(rope))
        for name, a, b in zip(("grad_q", "grad_k", "grad_v"), actual, expected):
            assert torch.equal(a.cpu(), b), name
