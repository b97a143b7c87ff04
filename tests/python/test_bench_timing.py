"""Timing helpers of the benchmark suite: percentiles, summaries, input rotation, measurement loop."""

import math
import time

import numpy as np
import pytest
import torch

from lighthouse.bench.timing import input_sets, measure, percentile, summarize


@pytest.mark.parametrize("count", [1, 2, 5, 10, 33])
def test_percentile_matches_numpy(count):
    values = sorted(np.random.default_rng(count).exponential(size=count).tolist())
    for fraction in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
        assert percentile(values, fraction) == pytest.approx(np.percentile(values, 100 * fraction), rel=1e-12)


def test_summarize_known_samples():
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats["median"] == 3.0
    assert (stats["min"], stats["max"]) == (1.0, 5.0)
    assert (stats["p25"], stats["p75"], stats["iqr"]) == (2.0, 4.0, 2.0)
    assert stats["repeats"] == 5
    assert stats["samples"] == [5.0, 1.0, 3.0, 2.0, 4.0]  # kept in measurement order


def test_summarize_even_count_interpolates():
    assert summarize([1.0, 2.0, 3.0, 10.0])["median"] == 2.5


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [1.0, math.inf], [-1.0]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_input_sets_rotate_only_when_a_set_fits_in_cache():
    cache = 50 * 2**20
    assert input_sets(cache, cache) == 1
    assert input_sets(10 * cache, cache) == 1
    assert input_sets(cache // 2, cache) == 4  # ceil(2 * 50 / 25) = 4
    assert input_sets(cache * 3 // 4, cache) == 3  # ceil(2 / 0.75) = 3
    assert input_sets(1, cache) == 4  # capped
    with pytest.raises(ValueError):
        input_sets(0, cache)


def test_measure_runs_warmup_then_repeats_with_prepared_arguments():
    prepared, ran = [], []

    def prepare(index):
        prepared.append(index)
        return index * 10

    samples = measure(ran.append, device=torch.device("cpu"), warmup=2, repeats=3, prepare=prepare)
    assert prepared == [0, 1, 2, 3, 4]
    assert ran == [0, 10, 20, 30, 40]
    assert len(samples) == 3 and all(s >= 0.0 for s in samples)


def test_measure_times_the_run_and_not_the_prepare_step():
    samples = measure(lambda _: time.sleep(0.02), device=torch.device("cpu"), warmup=0, repeats=3,
                      prepare=lambda index: time.sleep(0.05))
    assert all(19.0 <= s < 45.0 for s in samples), samples


def test_measure_rejects_bad_counts():
    with pytest.raises(ValueError):
        measure(lambda _: None, device=torch.device("cpu"), warmup=0, repeats=0)
