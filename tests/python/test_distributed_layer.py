"""Context parallelism on W = 2 and 4 CPU processes (gloo): the layer split over ranks equals the layer in one
process, bit for bit, for its output and the gradients of q, k and v.

The one exception is stated by lighthouse.distributed: with Hkv < W, a KV head's gradient is summed over its
W/Hkv copies after each copy's backward, so it is compared (a) bit for bit with that same sum computed in one
process (each copy's query heads run as their own single-process layer, with the scores of the whole group),
and (b) with the single-process layer to 1e-5 relative (largest difference over largest magnitude: the
float32 sums of a group's heads in two orders differ by 1e-7 to 3e-7 typically and by ~1e-6 where the
copies' partial gradients cancel; a wrong or missing head is off by order 1).

All cases of one W run in one spawn of W processes (module-scoped fixture); each rank compares its own shard.
"""

import functools
import inspect
import os

import pytest
import torch

from _distributed_runner import run_ranks

B, D = 2, 8
# levels 4, pooling 2: coarsest blocks of 8 tokens, so N = 100 (divisible by 2 and 4) is ragged.
CONFIG = {"levels": 4, "pooling": 2, "topk": 8, "tile_budget": 4}


def _case(name, heads, kv_heads, seq_len, dense=False, rope=None, **options):
    return {"name": name, "heads": heads, "kv_heads": kv_heads, "seq_len": seq_len, "dense": dense, "rope": rope,
            "options": options}


def _cases():
    import lighthouse

    layer_options = inspect.signature(lighthouse.lighthouse_attention).parameters
    cases = [
        _case("mha-norm-ragged", 4, 4, 100, **CONFIG),
        _case("mha-dilated", 4, 4, 96, scorer="dilated", scale=0.3, **CONFIG),
        _case("gqa-norm-ragged", 8, 4, 100, **CONFIG),
        _case("gqa-dilated-ragged", 8, 4, 100, scorer="dilated", **CONFIG),
        _case("gqa-kv2-norm", 8, 2, 100, **CONFIG),
        _case("gqa-kv2-dilated", 8, 2, 96, scorer="dilated", dilation=3, **CONFIG),
        _case("gqa-kv1-norm-ragged", 8, 1, 100, **CONFIG),
        _case("gqa-kv1-dilated-ragged", 8, 1, 100, scorer="dilated", **CONFIG),
        _case("dense-fallback", 4, 1, 48, **CONFIG),  # N = 48 < topk * pooling^(levels-1) = 64
        _case("dense", 4, 4, 100, dense=True),
        _case("dense-gqa-kv1", 8, 1, 100, dense=True, scale=0.5),
        _case("dense-rope-full", 8, 2, 100, dense=True, rope="full"),
        _case("dense-rope-shard-interleaved", 4, 1, 100, dense=True, rope="shard", rope_interleaved=True),
    ]
    if "selection" in layer_options:
        cases += [
            _case("lagged-kv2", 8, 2, 100, selection="lagged", **CONFIG),
            _case("causal-kv1-dilated", 4, 1, 100, selection="causal", scorer="dilated", **CONFIG),
        ]
    if "rope" in layer_options:
        cases += [
            _case("rope-full-kv2", 8, 2, 100, rope="full", **CONFIG),
            _case("rope-shard-interleaved-mha", 4, 4, 100, rope="shard", rope_interleaved=True, **CONFIG),
            _case("rope-shard-dilated-kv1", 4, 1, 96, rope="shard", scorer="dilated", **CONFIG),
        ]
    return cases


def _rope_tables(seq_len, interleaved):
    """Rotary cos/sin tables [N, D] float32 (frequencies 10000^(-2j/D))."""
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(0, D, 2) / D)
    angles = angles.repeat_interleave(2, dim=1) if interleaved else torch.cat((angles, angles), dim=1)
    return angles.cos().float(), angles.sin().float()


def _layer(case, tables, reduce_scores=None):
    """The case's single-process layer as a function of (q, k, v)."""
    import lighthouse
    from lighthouse.attention import dense_causal_attention
    from lighthouse.rope import apply_rope

    options = dict(case["options"])
    if not case["dense"]:
        rope = {} if tables is None else {"rope": tables}
        scores = {} if reduce_scores is None else {"reduce_scores": reduce_scores}
        return functools.partial(lighthouse.lighthouse_attention, **options, **rope, **scores)
    interleaved = options.pop("rope_interleaved", False)

    def dense(q, k, v):
        if tables is not None:
            q, k = (apply_rope(t, *tables, interleaved=interleaved) for t in (q, k))
        return dense_causal_attention(q, k, v, **options)

    return dense


def _with_gradients(layer, q, k, v, grad_out):
    """(output, grad_q, grad_k, grad_v) of layer(q, k, v) for the upstream gradient grad_out."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = layer(q, k, v)
    out.backward(grad_out)
    return out.detach(), q.grad, k.grad, v.grad


def _copy_rows(case, world, copy):
    """Query heads that copy `copy` of every KV head runs: (kv * R + copy) * H/W ... for R = W/Hkv copies."""
    copies, per_rank = world // case["kv_heads"], case["heads"] // world
    first = [(kv * copies + copy) * per_rank for kv in range(case["kv_heads"])]
    return [h for start in first for h in range(start, start + per_rank)]


def _sum_copies(grads):
    """The R copies' [B, N, Hkv, D] gradients summed as copy_heads' backward sums them."""
    return torch.stack(grads, dim=3).sum(3)


def _summed_over_copies(case, q, k, v, grad_out, tables, world):
    """(grad_k, grad_v) as context parallelism forms them when each KV head has R = W/Hkv copies (Hkv < W).

    Lighthouse: copy i of every KV head runs its query heads as a single-process layer with the scores of
    the whole group (recorded from the full layer), and the R gradients are summed. Dense: the layer rotates
    k before copying it, so the sum comes before the rotation's backward.
    """
    copies = [_copy_rows(case, world, i) for i in range(world // case["kv_heads"])]
    if not case["dense"]:
        group_scores = []

        def record(scores_qk, scores_kq):
            group_scores.append((scores_qk, scores_kq))
            return scores_qk, scores_kq

        _with_gradients(_layer(case, tables, record), q, k, v, grad_out)
        layer = _layer(case, tables, lambda scores_qk, scores_kq: group_scores[0])
        grads = [_with_gradients(layer, q[:, :, rows], k, v, grad_out[:, :, rows])[2:] for rows in copies]
        grad_k, grad_v = (_sum_copies(list(per_copy)) for per_copy in zip(*grads))
        return grad_k, grad_v
    from lighthouse.rope import apply_rope

    interleaved = case["options"].get("rope_interleaved", False)

    def rotate(t):
        return t if tables is None else apply_rope(t, *tables, interleaved=interleaved)

    k = k.detach().requires_grad_()
    k_rotated = rotate(k)
    options = {name: value for name, value in case["options"].items() if name != "rope_interleaved"}
    unrotated = _layer(dict(case, options=options), None)
    grads = [
        _with_gradients(unrotated, rotate(q[:, :, rows]), k_rotated, v, grad_out[:, :, rows])[2:] for rows in copies
    ]
    grad_k_rotated, grad_v = (_sum_copies(list(per_copy)) for per_copy in zip(*grads))
    (grad_k,) = torch.autograd.grad(k_rotated, k, grad_k_rotated)
    return grad_k, grad_v


def _compare(actual, expected):
    if torch.equal(actual, expected):
        return "equal"
    difference = (actual - expected).abs().max().item()
    return f"differs: max |difference| {difference:.3e}, finite {bool(actual.isfinite().all())}"


def _relative_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _run_case(case, rank, world, seed):
    from lighthouse.distributed import context_parallel_attention, context_parallel_dense_attention

    heads, kv_heads, seq_len = case["heads"], case["kv_heads"], case["seq_len"]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, seq_len, heads, D, generator=g)
    k, v = (torch.randn(B, seq_len, kv_heads, D, generator=g) for _ in range(2))
    grad_out = torch.randn(B, seq_len, heads, D, generator=g)
    interleaved = case["options"].get("rope_interleaved", False)
    tables = None if case["rope"] is None else _rope_tables(seq_len, interleaved)
    expected = _with_gradients(_layer(case, tables), q, k, v, grad_out)

    length = seq_len // world
    mine = slice(rank * length, (rank + 1) * length)
    shards = [t[:, mine].clone().requires_grad_() for t in (q, k, v)]
    options = dict(case["options"])
    if tables is not None:
        options["rope"] = tables if case["rope"] == "full" else tuple(t[mine].clone() for t in tables)
    layer = context_parallel_dense_attention if case["dense"] else context_parallel_attention
    out = layer(*shards, **options)
    out.backward(grad_out[:, mine])
    actual = [out.detach()] + [t.grad for t in shards]
    names = ("out", "grad_q", "grad_k", "grad_v")
    report = {name: _compare(a, e[:, mine]) for name, a, e in zip(names, actual, expected)}
    if kv_heads < world:
        summed = _summed_over_copies(case, q, k, v, grad_out, tables, world)
        for name, a, e, s in zip(names[2:], actual[2:], expected[2:], summed):
            report[name] = {"copies summed": _compare(a, s[:, mine]), "relative error": _relative_error(a, e[:, mine])}
    return report


def _run_all(rank, world, seed):
    return {case["name"]: _run_case(case, rank, world, seed + i) for i, case in enumerate(_cases())}


_SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"W{w}")
def reports(request):
    """(W, seed, per-rank reports) of all cases on W ranks."""
    return request.param, _SEED, run_ranks(request.param, _run_all, _SEED)


@pytest.mark.parametrize("case", [c["name"] for c in _cases()])
def test_context_parallel_layer_equals_the_single_process_layer(reports, case):
    world, seed, per_rank = reports
    for rank, report in enumerate(per_rank):
        result = report[case]
        where = f"W = {world}, rank {rank}, seed {seed}: {result}"
        assert result["out"] == "equal", where
        assert result["grad_q"] == "equal", where
        for name in ("grad_k", "grad_v"):
            if isinstance(result[name], str):  # Hkv % W == 0: the exact single-process gradient
                assert result[name] == "equal", where
            else:  # Hkv < W: the exact sum over copies, close to the single-process gradient
                assert result[name]["copies summed"] == "equal", where
                assert result[name]["relative error"] <= 1e-5, where
