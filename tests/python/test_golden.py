"""The golden vectors (made by the paper authors' kernels) through the Python API, on the CPU."""

import torch

import lighthouse
from lighthouse import ops
from _reference import max_relative_error

TOLERANCE = 1e-5


def _config(case):
    return {"levels": case["levels"], "pooling": case["pooling_factor"], "topk": case["topk"]}


def _layer_options(case):
    options = {**_config(case), "scorer": case["scorer"], "fallback": "error"}
    if case["dilation"] is not None:
        options["dilation"] = case["dilation"]
    return options


def test_selection_of_given_scores_is_exact(golden):
    case, data = golden
    config = _config(case)
    for scores, expected in (("scores", "indices"), ("sel_scores", "sel_indices")):
        indices, slots = ops.select(data[f"{scores}_qk"], data[f"{scores}_kq"], case["N"], **config)
        assert torch.equal(indices, data[expected])
        assert indices.shape[-1] == case["S"] and slots.shape[-1] == case["pyramid_len"]
        kept = torch.arange(case["S"], dtype=torch.int32).expand_as(indices)
        assert torch.equal(slots.gather(2, indices.long()), kept)
        assert int((slots >= 0).sum()) == slots.shape[0] * slots.shape[1] * case["S"]


def test_scores_and_their_selection(golden):
    """The case's scorer (norm, or dilated through base scores) reproduces the file's scores and indices."""
    case, data = golden
    config = _config(case)
    if case["scorer"] == "dilated":
        base_qk, base_kq = lighthouse.attention.dilated_base_scores(
            data["q"], data["k"], data["v"], dilation=case["dilation"]
        )
        scores_qk, scores_kq = ops.pool_score(data["q"], data["k"], base_qk=base_qk, base_kq=base_kq, **config)
    else:
        scores_qk, scores_kq = ops.pool_score(data["q"], data["k"], **config)
    assert max_relative_error(scores_qk, data["scores_qk"]) < TOLERANCE
    assert max_relative_error(scores_kq, data["scores_kq"]) < TOLERANCE
    indices, _ = ops.select(scores_qk, scores_kq, case["N"], **config)
    assert torch.equal(indices, data["indices"])


def test_gather_matches_the_pyramid(golden):
    case, data = golden
    q_sel, k_sel, v_sel = ops.gather(data["q"], data["k"], data["v"], data["indices"], **_config(case))
    index = data["indices"].long()[..., None].expand(*data["indices"].shape, case["D"])
    for name, selected in (("q", q_sel), ("k", k_sel), ("v", v_sel)):
        expected = data[f"{name}_pyramid"].gather(2, index)
        assert max_relative_error(selected, expected) < TOLERANCE, name


def test_layer_output_and_gradients(golden):
    case, data = golden
    q, k, v = (data[name].clone().requires_grad_() for name in ("q", "k", "v"))
    out = lighthouse.lighthouse_attention(q, k, v, **_layer_options(case))
    assert max_relative_error(out, data["out"].transpose(1, 2)) < TOLERANCE
    out.backward(data["grad_out"].transpose(1, 2))
    for name, t in (("q", q), ("k", k), ("v", v)):
        assert max_relative_error(t.grad, data[f"grad_{name}"]) < TOLERANCE, name
