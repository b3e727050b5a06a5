"""Tests for CombinedStreamingDataset's child choices (rank-independent by construction)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_streaming.sampling import mix_choices, mix_positions


def counts_of(choices: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(choices.astype(np.int64), minlength=k)


@settings(max_examples=600, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 200), min_size=1, max_size=6),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 3),
    iterate_over_all=st.booleans(),
    batch_size=st.integers(1, 8),
    per_stream=st.booleans(),
)
def test_mix_invariants(lengths, data, seed, epoch, iterate_over_all, batch_size, per_stream):
    k = len(lengths)
    weights = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=k, max_size=k))
    if not any(weights):
        weights[0] = 1.0
    args = (lengths, weights, seed, epoch, iterate_over_all, batch_size, per_stream)
    choices = mix_choices(*args)
    np.testing.assert_array_equal(choices, mix_choices(*args))
    unit = batch_size if per_stream else 1
    caps = np.array([(n // unit) * unit if w > 0 else 0 for n, w in zip(lengths, weights, strict=True)])
    counts = counts_of(choices, k)
    assert np.all(counts <= caps) and np.all(counts % unit == 0)
    if per_stream:
        assert np.all(choices.reshape(-1, batch_size) == choices[::batch_size, None])
    positive = np.array(weights) > 0
    if iterate_over_all:
        np.testing.assert_array_equal(counts, caps)
    elif np.any(positive & (caps == 0)):
        assert choices.size == 0
    else:
        assert np.any(positive & (counts == caps)), "must end as the first child runs out"
        other_epoch = mix_choices(lengths, weights, seed, epoch + 1, iterate_over_all, batch_size, per_stream)
        np.testing.assert_array_equal(counts, counts_of(other_epoch, k))  # same shares, same length
        share = np.array(weights) / sum(w for w in weights if w > 0)
        total_units = counts.sum() // unit
        assert np.all(np.abs(counts // unit - share * total_units) <= 1 + share * k)
    positions = mix_positions(choices)
    for c in range(k):
        np.testing.assert_array_equal(positions[choices == c], np.arange(counts[c]))


def test_proportions_converge_to_weights():
    choices = mix_choices([10**6] * 3, [1, 2, 3], 0, 0, False, 1, False)
    freq = counts_of(choices, 3) / choices.size
    np.testing.assert_allclose(freq, [1 / 6, 2 / 6, 3 / 6], atol=0.005)
    assert choices.size > 1.9 * 10**6  # child 2 runs out first, after ~2e6 draws
    batched = mix_choices([10**6] * 3, [1, 2, 3], 0, 0, False, 8, True)
    np.testing.assert_allclose(counts_of(batched, 3) / batched.size, [1 / 6, 2 / 6, 3 / 6], atol=0.01)


def test_iterate_over_all_renormalises_after_exhaustion():
    choices = mix_choices([100, 10**5], [1, 1], 4, 0, True, 1, False)
    assert choices.size == 100 + 10**5
    last_small = np.flatnonzero(choices == 0)[-1]
    assert last_small < 1000  # the small child ran out early; the rest is all child 1
    assert np.all(choices[last_small + 1 :] == 1)
    # iterate_over_all=False: equal shares until the small child is exhausted.
    assert counts_of(mix_choices([100, 10**5], [1, 1], 4, 0, False, 1, False), 2).tolist() == [100, 100]


def test_identical_across_calls_and_different_per_epoch():
    args = ([500, 700, 300], [0.2, 0.5, 0.3])
    a = mix_choices(*args, 1, 0, True, 4, False)
    np.testing.assert_array_equal(a, mix_choices(*args, 1, 0, True, 4, False))
    assert not np.array_equal(a, mix_choices(*args, 1, 1, True, 4, False))
    assert not np.array_equal(a, mix_choices(*args, 2, 0, True, 4, False))


def test_zero_weight_child_is_never_drawn_and_empty_child_stops():
    choices = mix_choices([50, 50, 50], [1, 0, 1], 0, 0, True, 1, False)
    assert counts_of(choices, 3).tolist() == [50, 0, 50]
    assert mix_choices([50, 0], [1, 1], 0, 0, False, 1, False).size == 0
    assert counts_of(mix_choices([50, 0], [1, 1], 0, 0, True, 1, False), 2).tolist() == [50, 0]
    # per_stream: a tail shorter than a batch is never yielded.
    per = mix_choices([10, 7], [1, 1], 0, 0, True, 4, True)
    assert counts_of(per, 2).tolist() == [8, 4]


def test_mix_positions_fixed_case():
    assert mix_positions(np.array([0, 1, 0, 0, 1, 2], dtype=np.int16)).tolist() == [0, 0, 1, 2, 1, 0]
    assert mix_positions(np.zeros(0, dtype=np.int16)).size == 0


@pytest.mark.parametrize(
    ("lengths", "weights", "word"),
    [
        ([10, 10], [1.0], "weights"),
        ([10, 10], [1.0, -1.0], "weights"),
        ([10, 10], [0.0, 0.0], "weights"),
        ([10, 10], [1.0, float("nan")], "weights"),
        ([], [], "child_lengths"),
        ([10, -1], [1.0, 1.0], "child_lengths"),
    ],
)
def test_bad_weights_are_named(lengths, weights, word):
    with pytest.raises(ValueError, match=word):
        mix_choices(lengths, weights, 0, 0, True, 1, False)


def test_many_children_is_vectorised():
    choices = mix_choices([20_000] * 40, np.arange(1, 41), 0, 0, True, 1, False)
    assert choices.size == 800_000
    np.testing.assert_array_equal(counts_of(choices, 40), [20_000] * 40)
