"""Bad context-parallel setups raise the same ValueError, naming the argument, on every rank (never a hang):
W = 2 CPU processes (gloo); the runner fails the test when a rank does not finish in time."""

import re

import pytest
import torch

from _distributed_runner import run_ranks

CONFIG = {"levels": 4, "pooling": 2, "topk": 8, "tile_budget": 4}
WORLD = 2


def _qkv(length, heads=4, kv_heads=2, dim=8, dtype=torch.float32):
    return torch.randn(1, length, heads, dim, dtype=dtype), *torch.randn(2, 1, length, kv_heads, dim, dtype=dtype)


def _tables(length, dim=8):
    return torch.ones(length, dim), torch.zeros(length, dim)


def _scenarios(rank):
    """{name: (argument the error must name, or None where this rank must succeed; the call)}."""
    from lighthouse.distributed import context_parallel_attention as lighthouse_cp
    from lighthouse.distributed import context_parallel_dense_attention as dense_cp
    import torch.distributed as dist

    first = rank == 0
    only_rank0 = dist.new_group([0])  # every rank must take part in creating it
    return {
        "N not divisible by W": ("q.shape[1]", lambda: lighthouse_cp(*_qkv(5 if first else 4), **CONFIG)),
        "heads not divisible by W": ("q.shape[2]", lambda: lighthouse_cp(*_qkv(50, heads=3, kv_heads=1), **CONFIG)),
        "kv heads neither a multiple nor a divisor of W": (
            "k.shape[2]", lambda: dense_cp(*_qkv(50, heads=6, kv_heads=3))
        ),
        "head_dim differs between ranks": ("q.shape[3]", lambda: dense_cp(*_qkv(50, dim=8 if first else 16))),
        "kv heads differ between ranks": (
            "k.shape[2]", lambda: lighthouse_cp(*_qkv(50, kv_heads=2 if first else 1), **CONFIG)
        ),
        "dtype differs between ranks": (
            "q.dtype", lambda: dense_cp(*_qkv(50, dtype=torch.float32 if first else torch.float64))
        ),
        "an option differs between ranks": (
            "topk", lambda: lighthouse_cp(*_qkv(50), **{**CONFIG, "topk": 8 if first else 16})
        ),
        "an option given on one rank only": (
            "scale", lambda: lighthouse_cp(*_qkv(50), **CONFIG, **({"scale": 0.5} if first else {}))
        ),
        "rope on one rank only": (
            "rope_cos", lambda: dense_cp(*_qkv(50), rope=_tables(50) if first else None)
        ),
        "rope tables neither full nor a shard": ("rope_cos.shape[-2]", lambda: dense_cp(*_qkv(50), rope=_tables(70))),
        "an invalid layer option": ("scorer", lambda: lighthouse_cp(*_qkv(50), **CONFIG, scorer="random")),
        "reduce_scores given": ("reduce_scores", lambda: lighthouse_cp(*_qkv(50), **CONFIG, reduce_scores=max)),
        "a group without this rank": (
            None if first else "group", lambda: dense_cp(*_qkv(50), group=only_rank0)
        ),
    }


def _outcomes(rank, world):
    """{scenario: (expected argument, what happened)}; ends with a valid call, which must still work."""
    from lighthouse.distributed import context_parallel_attention

    outcomes = {}
    for name, (argument, call) in _scenarios(rank).items():
        try:
            out = call()
            outcomes[name] = (argument, f"no error, output {list(out.shape)}")
        except ValueError as e:
            outcomes[name] = (argument, f"ValueError: {e}")
    out = context_parallel_attention(*_qkv(50), **CONFIG)
    outcomes["a valid call afterwards"] = (None, f"no error, output {list(out.shape)}")
    return outcomes


@pytest.fixture(scope="module")
def outcomes():
    return run_ranks(WORLD, _outcomes)


SCENARIOS = (
    "N not divisible by W", "heads not divisible by W", "kv heads neither a multiple nor a divisor of W",
    "head_dim differs between ranks", "kv heads differ between ranks", "dtype differs between ranks",
    "an option differs between ranks", "an option given on one rank only", "rope on one rank only",
    "rope tables neither full nor a shard", "an invalid layer option", "reduce_scores given",
    "a group without this rank", "a valid call afterwards",
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rank_raises_naming_the_argument(outcomes, scenario):
    for rank, per_scenario in enumerate(outcomes):
        argument, happened = per_scenario[scenario]
        if argument is None:
            assert happened.startswith("no error"), f"rank {rank}: {happened}"
        else:
            expected = rf"ValueError: lighthouse: {re.escape(argument)}: expected"
            assert re.match(expected, happened), f"rank {rank}: {happened}"


def test_without_an_initialized_process_group_the_error_names_group():
    from lighthouse.distributed import context_parallel_attention

    with pytest.raises(ValueError, match=r"^lighthouse: group: expected an initialized"):
        context_parallel_attention(*_qkv(50), **CONFIG)
