"""Tests for CombinedStreamingDataset's child choices: MixPlan's block draws and MixSequence's keys
(rank-independent by construction; issue 10, DESIGN.md sections 5 and 6)."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from array_keys import ArrayKeys
from eager_reference import ref_child_positions, ref_mix_keys
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_streaming.sampling import MixPlan, MixSequence, mix_length
from lit_streaming.sampling import mixing as mixing_module


def counts_of(choices: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(choices.astype(np.int64), minlength=k)


def mix_choices(*args) -> np.ndarray:
    plan = MixPlan(*args)
    return plan.children(0, plan.length)


@settings(max_examples=500, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 200), min_size=1, max_size=6),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 3),
    iterate_over_all=st.booleans(),
    batch_size=st.integers(1, 8),
    per_stream=st.booleans(),
    block_units=st.sampled_from([1, 2, 3, 7, 16, 1 << 16]),
)
def test_mix_invariants(lengths, data, seed, epoch, iterate_over_all, batch_size, per_stream, block_units):
    k = len(lengths)
    weights = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=k, max_size=k))
    if not any(weights):
        weights[0] = 1.0
    args = (lengths, weights, seed, epoch, iterate_over_all, batch_size, per_stream)
    # Small blocks exercise the block boundaries, capped blocks and exhaustion inside a block.
    with mock.patch.object(mixing_module, "BLOCK_UNITS", block_units):
        plan = MixPlan(*args)
        choices = plan.children(0, plan.length)
        np.testing.assert_array_equal(choices, mix_choices(*args))
        other_epoch = mix_choices(lengths, weights, seed, epoch + 1, iterate_over_all, batch_size, per_stream)
    assert (
        plan.length == choices.size == mix_length(lengths, weights, iterate_over_all, batch_size, per_stream)
    )
    unit = batch_size if per_stream else 1
    caps = np.array([(n // unit) * unit if w > 0 else 0 for n, w in zip(lengths, weights, strict=True)])
    counts = counts_of(choices, k)
    np.testing.assert_array_equal(plan.child_totals(), counts)
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
        np.testing.assert_array_equal(counts, counts_of(other_epoch, k))  # same shares, same length
        share = np.array(weights) / sum(w for w in weights if w > 0)
        total_units = counts.sum() // unit
        assert np.all(np.abs(counts // unit - share * total_units) <= 1 + share * k)
    # Any range of positions, and each child's position at any point, agree with the full draw.
    expected = ref_child_positions(choices, k)
    for _ in range(4):
        lo = data.draw(st.integers(0, plan.length))
        hi = data.draw(st.integers(lo, plan.length))
        np.testing.assert_array_equal(plan.children(lo, hi), choices[lo:hi])
        np.testing.assert_array_equal(plan.child_position(lo), expected[lo])
    np.testing.assert_array_equal(plan.child_position(0), np.zeros(k))
    np.testing.assert_array_equal(plan.child_position(plan.length), counts)
    with pytest.raises(IndexError):
        plan.child_position(plan.length + 1)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 60), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    iterate_over_all=st.booleans(),
    batch_size=st.integers(1, 4),
    per_stream=st.booleans(),
    block_units=st.sampled_from([1, 5, 1 << 16]),
    data=st.data(),
)
def test_mix_sequence_equals_eager_reference(
    lengths, seed, iterate_over_all, batch_size, per_stream, block_units, data
):
    """Position p holds its child's next key, offset into the mix's key space; leaves are renumbered."""
    k = len(lengths)
    weights = [1.0 + c for c in range(k)]
    rng = np.random.default_rng(seed)
    child_keys = [rng.permutation(n).astype(np.int64) for n in lengths]
    key_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    leaf_offsets = list(range(0, 3 * k, 3))
    with mock.patch.object(mixing_module, "BLOCK_UNITS", block_units):
        plan = MixPlan(lengths, weights, seed, 0, iterate_over_all, batch_size, per_stream)
        children = [ArrayKeys(c, keys_per_chunk=10) for c in child_keys]  # key k lies in chunk k // 10
        seq = MixSequence(plan, children, key_offsets, leaf_offsets)
        choices = plan.children(0, plan.length)
        eager = ref_mix_keys(choices, child_keys, key_offsets)
        np.testing.assert_array_equal(seq.all_keys(), eager)
        if iterate_over_all:
            assert sorted(eager.tolist()) == sorted(
                (c + key_offsets[i])
                for i, keys in enumerate(child_keys)
                for c in keys[: (len(keys) // plan.unit) * plan.unit]
            )
        lo = data.draw(st.integers(0, seq.length))
        hi = data.draw(st.integers(lo, seq.length))
        np.testing.assert_array_equal(seq.keys(lo, hi), eager[lo:hi])
        runs = seq.chunk_runs(lo, hi)
    touched = {
        (leaf_offsets[int(c)], int(key - key_offsets[int(c)]) // 10)
        for c, key in zip(choices[lo:hi], eager[lo:hi])
    }
    assert touched == {(leaf, int(ch)) for leaf, chunks in runs for ch in chunks}


def test_mix_sequence_refuses_a_short_child():
    plan = MixPlan([10, 10], [1, 1], 0, 0, True, 1, False)
    with pytest.raises(ValueError, match="child 1"):
        MixSequence(plan, [ArrayKeys(range(10), 10), ArrayKeys(range(9), 10)], [0, 10], [0, 1])


def test_proportions_converge_to_weights():
    choices = mix_choices([10**6] * 3, [1, 2, 3], 0, 0, False, 1, False)
    freq = counts_of(choices, 3) / choices.size
    np.testing.assert_allclose(freq, [1 / 6, 2 / 6, 3 / 6], atol=0.005)
    assert choices.size > 1.9 * 10**6  # child 2 runs out first, after ~2e6 draws
    # Proportions hold locally too (each block of 65,536 positions), not only over the epoch.
    head = counts_of(choices[: 1 << 16], 3) / (1 << 16)
    np.testing.assert_allclose(head, [1 / 6, 2 / 6, 3 / 6], atol=0.01)
    batched = mix_choices([10**6] * 3, [1, 2, 3], 0, 0, False, 8, True)
    np.testing.assert_allclose(counts_of(batched, 3) / batched.size, [1 / 6, 2 / 6, 3 / 6], atol=0.01)
    over_all = mix_choices([10**6] * 3, [1, 2, 3], 0, 0, True, 1, False)
    np.testing.assert_allclose(counts_of(over_all[: 10**6], 3) / 10**6, [1 / 6, 2 / 6, 3 / 6], atol=0.01)


def test_iterate_over_all_renormalises_after_exhaustion():
    choices = mix_choices([100, 10**5], [1, 1], 4, 0, True, 1, False)
    assert choices.size == 100 + 10**5
    last_small = np.flatnonzero(choices == 0)[-1]
    assert last_small < 1000  # the small child ran out early; the rest is all child 1
    assert np.all(choices[last_small + 1 :] == 1)
    small, big = 10**5, 10**6
    choices = mix_choices([small, big], [1, 1], 4, 0, True, 1, False)
    assert choices.size == small + big
    last_small = np.flatnonzero(choices == 0)[-1]
    # Equal weights: the small child runs out after ~2e5 draws, also across blocks of 65,536; the rest is all
    # child 1.
    assert abs(last_small - 2 * small) < 5_000
    assert np.all(choices[last_small + 1 :] == 1)
    # iterate_over_all=False: equal shares until the small child is exhausted.
    assert counts_of(mix_choices([100, 10**5], [1, 1], 4, 0, False, 1, False), 2).tolist() == [100, 100]


def test_iterate_over_all_weights_order_a_small_mix():
    choices = mix_choices([100, 10_000], [100, 1], 0, 0, True, 1, False)
    # Drawn by weight among the children not yet exhausted (a mix smaller than one block used to be a uniform
    # permutation that ignored the weights): child 0 (weight 100) fills ~99% of the first
    # 100 positions and runs out within ~the first 110.
    assert counts_of(choices[:100], 2)[0] >= 90
    assert np.flatnonzero(choices == 0)[-1] < 200
    # Weights 3:1 inside the last block: 3/4 child 0 until it runs out after ~40,000 positions.
    choices = mix_choices([30_000, 30_000], [3, 1], 4, 0, True, 1, False)
    assert abs(counts_of(choices[:36_000], 2)[0] / 36_000 - 0.75) < 0.02
    assert abs(np.flatnonzero(choices == 0)[-1] - 40_000) < 1_500


def test_identical_across_calls_and_different_per_epoch():
    args = ([500, 700, 300], [0.2, 0.5, 0.3])
    a = mix_choices(*args, 1, 0, True, 4, False)
    np.testing.assert_array_equal(a, mix_choices(*args, 1, 0, True, 4, False))
    assert not np.array_equal(a, mix_choices(*args, 1, 1, True, 4, False))
    assert not np.array_equal(a, mix_choices(*args, 2, 0, True, 4, False))
    # A pickled plan (what a worker gets) carries no block and draws the same choices.
    import pickle

    plan = MixPlan(*args, 1, 0, True, 4, False)
    plan.children(0, plan.length)
    clone = pickle.loads(pickle.dumps(plan))
    assert clone.materialised_units() == 0
    np.testing.assert_array_equal(clone.children(0, clone.length), a)


def test_zero_weight_child_is_never_drawn_and_empty_child_stops():
    choices = mix_choices([50, 50, 50], [1, 0, 1], 0, 0, True, 1, False)
    assert counts_of(choices, 3).tolist() == [50, 0, 50]
    assert counts_of(mix_choices([50, 50, 50], [1, 0, 1], 0, 0, False, 1, False), 3).tolist() == [50, 0, 50]
    assert mix_choices([50, 0], [1, 1], 0, 0, False, 1, False).size == 0
    assert mix_length([50, 0], [1, 1], False, 1, False) == 0
    assert counts_of(mix_choices([50, 0], [1, 1], 0, 0, True, 1, False), 2).tolist() == [50, 0]
    # A zero-weight child may be empty without ending the mix.
    assert counts_of(mix_choices([50, 0], [1, 0], 0, 0, False, 1, False), 2).tolist() == [50, 0]
    # per_stream: a tail shorter than a batch is never yielded.
    per = mix_choices([10, 7], [1, 1], 0, 0, True, 4, True)
    assert counts_of(per, 2).tolist() == [8, 4]
    assert mix_length([10, 7], [1, 1], True, 4, True) == 12


def test_per_stream_fixed_case():
    plan = MixPlan([10, 7], [1, 1], 0, 0, True, 4, True)
    choices = plan.children(0, plan.length)
    assert sorted(choices.reshape(-1, 4)[:, 0].tolist()) == [0, 0, 1]
    # Mid-batch positions count the partial batch of the child being read.
    first = int(choices[0])
    expected = np.zeros(2, dtype=np.int64)
    expected[first] = 2
    np.testing.assert_array_equal(plan.child_position(2), expected)
    np.testing.assert_array_equal(plan.children(2, 6), choices[2:6])


@pytest.mark.parametrize(
    ("lengths", "weights", "batch_size", "word"),
    [
        ([10, 10], [1.0], 1, "weights"),
        ([10, 10], [1.0, -1.0], 1, "weights"),
        ([10, 10], [0.0, 0.0], 1, "weights"),
        ([10, 10], [1.0, float("nan")], 1, "weights"),
        ([10, 10], [1.0, float("inf")], 1, "weights"),
        ([], [], 1, "child_lengths"),
        ([10, -1], [1.0, 1.0], 1, "child_lengths"),
        ([10, 10], [1.0, 1.0], 0, "batch_size"),
        ([10, 10], [1.0, 1.0], True, "batch_size"),
    ],
)
def test_bad_weights_are_named(lengths, weights, batch_size, word):
    with pytest.raises(ValueError, match=word):
        MixPlan(lengths, weights, 0, 0, True, batch_size, False)
    with pytest.raises(ValueError, match=word):
        mix_length(lengths, weights, True, batch_size, False)


def test_many_children_is_vectorised():
    choices = mix_choices([20_000] * 40, np.arange(1, 41), 0, 0, True, 1, False)
    assert choices.size == 800_000
    np.testing.assert_array_equal(counts_of(choices, 40), [20_000] * 40)
    shares = mix_choices([20_000] * 40, np.arange(1, 41), 0, 0, False, 1, False)
    assert counts_of(shares, 40)[-1] == 20_000  # the heaviest child runs out first


def test_mix_at_scale_is_block_arithmetic():
    """A 3e9-position mix: lengths and child positions without drawing every position."""
    lengths, weights = [1_500_000_000, 1_000_000_000, 500_000_000], [0.5, 0.3, 0.2]
    plan = MixPlan(lengths, weights, 1, 0, False, 8, False)
    assert plan.length == mix_length(lengths, weights, False, 8, False)
    totals = plan.child_totals()
    assert int(totals.sum()) == plan.length and np.any(totals == lengths)
    p = plan.length // 2 + 3
    pos = plan.child_position(p)
    assert int(pos.sum()) == p
    np.testing.assert_array_equal(plan.child_position(p + 100), pos + counts_of(plan.children(p, p + 100), 3))
    assert plan.materialised_units() <= 2 * mixing_module.BLOCK_UNITS
