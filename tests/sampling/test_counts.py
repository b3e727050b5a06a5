"""Tests for spread(): exact random splits of counts over blocks (sampling/counts.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_streaming.sampling import spread
from lit_streaming.sampling.counts import split_multiset


@settings(max_examples=200, deadline=None)
@given(
    totals=st.lists(st.integers(0, 300), min_size=1, max_size=5),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_spread_sums_are_exact(totals, data, seed):
    n = sum(totals)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=12)))
    sizes = np.diff([0, *cuts, n])
    out = spread(np.random.default_rng(seed), np.array(totals), sizes)
    assert out.shape == (sizes.size, len(totals)) and out.dtype == np.int64
    assert np.all(out >= 0)
    np.testing.assert_array_equal(out.sum(axis=1), sizes)
    np.testing.assert_array_equal(out.sum(axis=0), totals)
    np.testing.assert_array_equal(out, spread(np.random.default_rng(seed), np.array(totals), sizes))


def test_spread_is_distributed_like_one_uniform_permutation():
    """Block counts of kind 0 follow the hypergeometric law: mean t*s/N and its variance."""
    totals, sizes = np.array([30, 70]), np.array([10, 25, 5, 60])
    n, draws = 100, 4000
    rng = np.random.default_rng(0)
    got = np.array([spread(rng, totals, sizes)[:, 0] for _ in range(draws)])
    mean = totals[0] * sizes / n
    var = mean * (1 - totals[0] / n) * (n - sizes) / (n - 1)
    np.testing.assert_allclose(got.mean(axis=0), mean, atol=4 * np.sqrt(var / draws).max() + 1e-9)
    np.testing.assert_allclose(got.var(axis=0), var, rtol=0.12)
    # Compare with placing every item by one uniform permutation.
    perm = np.array(
        [
            np.bincount(np.repeat(np.arange(4), sizes)[rng.permutation(n)[:30]], minlength=4)
            for _ in range(draws)
        ]
    )
    np.testing.assert_allclose(got.mean(axis=0), perm.mean(axis=0), atol=0.25)


def test_spread_edge_cases_and_bad_sums():
    rng = np.random.default_rng(1)
    assert spread(rng, np.array([0, 0]), np.array([], dtype=np.int64)).shape == (0, 2)
    np.testing.assert_array_equal(spread(rng, np.array([4, 0, 2]), np.array([6])), [[4, 0, 2]])
    np.testing.assert_array_equal(spread(rng, np.array([5]), np.array([2, 0, 3])), [[2], [0], [3]])
    with pytest.raises(ValueError, match="sum"):
        spread(rng, np.array([3, 3]), np.array([5]))


@pytest.mark.parametrize("totals", [[2 * 10**9, 10**9 + 7], [5, 3 * 10**9], [10**12]])
def test_spread_beyond_a_billion(totals):
    """Sizes past numpy's hypergeometric limit (1e9) still give exact sums, sensible shares."""
    n = sum(totals)
    sizes = np.full(1000, n // 1000)
    sizes[-1] += n - int(sizes.sum())
    out = spread(np.random.default_rng(7), np.array(totals, dtype=np.int64), sizes)
    np.testing.assert_array_equal(out.sum(axis=1), sizes)
    np.testing.assert_array_equal(out.sum(axis=0), totals)
    assert np.all(out >= 0)
    share = out[:, 0] / sizes
    np.testing.assert_allclose(share, totals[0] / n, atol=1e-3 + 10 / np.sqrt(sizes.min()))


def test_split_multiset_rows():
    rng = np.random.default_rng(3)
    totals = np.array([[5, 5, 0], [0, 0, 0], [1, 2, 3], [10**9 + 5, 2 * 10**9, 7]])
    take = np.array([4, 0, 6, 1_500_000_000])
    out = split_multiset(rng, totals, take)
    np.testing.assert_array_equal(out.sum(axis=1), take)
    assert np.all((out >= 0) & (out <= totals))
    np.testing.assert_array_equal(out[2], [1, 2, 3])
