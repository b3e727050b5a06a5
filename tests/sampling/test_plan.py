"""Property tests for the per-rank sampling plan (DESIGN.md sections 5 and 6)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_streaming.sampling import (
    DEFAULT_SHUFFLE_WINDOW,
    batch_diversity,
    chunk_of,
    chunk_offsets,
    epoch_order,
    ideal_diversity,
    num_batches,
    partition,
    rank_length,
    rank_sequence,
    rank_sequence_length,
    subsample_count,
    subsample_ids,
    window_shuffle,
    worker_ids,
)

chunkings = st.lists(st.integers(0, 30), min_size=0, max_size=20)
seeds = st.integers(0, 2**32 - 1)


def reassemble(rank_seq: np.ndarray, start: int, batch_size: int, num_workers: int) -> np.ndarray:
    """What the main process sees: the workers' batches taken round-robin, as torch does."""
    w = max(num_workers, 1)
    per_worker = [worker_ids(rank_seq, start, batch_size, num_workers, j) for j in range(w)]
    batches = [[s[i : i + batch_size] for i in range(0, s.size, batch_size)] for s in per_worker]
    out = [batches[b % w][b // w] for b in range(num_batches(rank_seq.size, start, batch_size))]
    assert sum(len(b) for b in batches) == len(out)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def plan(chunk_sizes, **kw) -> list[np.ndarray]:
    """Every rank's sequence for world size kw['world_size'], checked against the cheap length."""
    seqs = [rank_sequence(chunk_sizes, rank=r, **kw) for r in range(kw["world_size"])]
    length = rank_sequence_length(chunk_sizes, **kw)
    assert all(s.size == length and s.dtype == np.int64 for s in seqs)
    return seqs


def check_union(yielded: np.ndarray, n: int, drop_last: bool, max_pads: int, max_dropped: int) -> None:
    counts = Counter(yielded.tolist())
    assert set(counts) <= set(range(n))
    if drop_last:
        assert all(c == 1 for c in counts.values()), "duplicates with drop_last=True"
        assert n - len(counts) < max_dropped
    else:
        assert len(counts) == n, "a sample was lost with drop_last=False"
        assert yielded.size - n < max_pads


@settings(max_examples=1000, deadline=None)
@given(
    chunk_sizes=chunkings,
    world_size=st.integers(1, 4),
    num_workers=st.integers(0, 3),
    batch_size=st.integers(1, 8),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=seeds,
    epoch=st.integers(0, 5),
    shuffle_window=st.integers(1, 20),
)
def test_exactly_once_over_ranks_and_workers(
    chunk_sizes, world_size, num_workers, batch_size, drop_last, shuffle, seed, epoch, shuffle_window
):
    kw = dict(
        seed=seed,
        epoch=epoch,
        shuffle=shuffle,
        drop_last=drop_last,
        world_size=world_size,
        batch_size=batch_size,
        shuffle_window=shuffle_window,
    )
    seqs = plan(chunk_sizes, **kw)
    n = sum(chunk_sizes)
    seen = [reassemble(s, 0, batch_size, num_workers) for s in seqs]
    for s, r in zip(seqs, seen, strict=True):
        np.testing.assert_array_equal(s, r)
    assert len({num_batches(s.size, 0, batch_size) for s in seqs}) == 1
    if drop_last:
        assert all(s.size % batch_size == 0 for s in seqs)
    yielded = np.concatenate(seen)
    assert yielded.size == world_size * seqs[0].size
    check_union(yielded, n, drop_last, max_pads=world_size, max_dropped=world_size * batch_size)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(0, 100),
    data=st.data(),
    batch_size=st.integers(1, 8),
    num_workers=st.integers(0, 4),
)
def test_round_robin_reassembly_from_any_start(length, data, batch_size, num_workers):
    seq = np.random.default_rng(length).permutation(length).astype(np.int64)
    start = data.draw(st.integers(0, length))
    np.testing.assert_array_equal(reassemble(seq, start, batch_size, num_workers), seq[start:])


def test_determinism_and_epochs_differ():
    sizes = [20] * 50
    kw = dict(seed=3, shuffle=True, drop_last=False, world_size=2, rank=1, batch_size=4)
    a = rank_sequence(sizes, epoch=0, **kw)
    np.testing.assert_array_equal(a, rank_sequence(sizes, epoch=0, **kw))
    assert not np.array_equal(a, rank_sequence(sizes, epoch=1, **kw))
    assert not np.array_equal(a, rank_sequence(sizes, epoch=0, **{**kw, "seed": 4}))
    plain = rank_sequence(sizes, epoch=0, **{**kw, "shuffle": False})
    np.testing.assert_array_equal(plain, np.arange(500, 1000))


def test_partition_fixed_cases():
    seq = np.arange(10)
    assert rank_length(10, 3, 2, False) == 4 and rank_length(10, 3, 2, True) == 2
    assert [partition(seq, 3, r, 2, False).tolist() for r in range(3)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 0, 1],
    ]
    assert [partition(seq, 3, r, 2, True).tolist() for r in range(3)] == [[0, 1], [3, 4], [6, 7]]
    assert partition(np.arange(0), 2, 1, 3, False).size == 0


def test_epoch_order_keeps_chunks_together():
    sizes = [3, 0, 4, 2, 5]
    offsets = chunk_offsets(sizes)
    ids = subsample_ids(sizes, 1.0, 0)
    order = epoch_order(sizes, ids, seed=9, epoch=2, shuffle=True)

    def runs(seq):
        chunks = chunk_of(seq, offsets)
        return chunks[np.r_[True, chunks[1:] != chunks[:-1]]].tolist()

    assert sorted(runs(order)) == [0, 2, 3, 4]  # one run per non-empty chunk
    assert sorted(order.tolist()) == list(range(14))
    # Unsorted input (repeats, reversed) takes the argsort path: same chunk order, id order kept.
    rep = np.repeat(ids, 2)[::-1].copy()
    out = epoch_order(sizes, rep, seed=9, epoch=2, shuffle=True)
    assert runs(out) == runs(order)
    for k in (0, 2, 3, 4):
        in_chunk = out[chunk_of(out, offsets) == k]
        np.testing.assert_array_equal(in_chunk, rep[chunk_of(rep, offsets) == k])


@settings(max_examples=100, deadline=None)
@given(chunk_sizes=chunkings, window=st.integers(1, 6), seed=seeds)
def test_window_shuffle_stays_within_windows(chunk_sizes, window, seed):
    offsets = chunk_offsets(chunk_sizes)
    seq = epoch_order(chunk_sizes, np.arange(offsets[-1]), seed, 0, True)
    chunks = chunk_of(seq, offsets)
    out = window_shuffle(seq, chunks, window, seed, 0, 0)
    run = np.cumsum(np.r_[False, chunks[1:] != chunks[:-1]])[: chunks.size]
    win = run // window
    for w in np.unique(win):
        assert sorted(out[win == w].tolist()) == sorted(seq[win == w].tolist())


@pytest.mark.parametrize("frac", [0.3, 1.0, 2.0, 2.5])
def test_subsample_multiset(frac):
    sizes = [7, 0, 13, 20]
    ids = subsample_ids(sizes, frac, seed=5)
    assert ids.size == subsample_count(40, frac) == int(np.floor(frac)) * 40 + round((frac % 1) * 40)
    assert np.all(np.diff(ids) >= 0)
    counts = np.bincount(ids, minlength=40)
    assert counts.min() >= int(np.floor(frac)) and counts.max() <= int(np.floor(frac)) + 1
    np.testing.assert_array_equal(ids, subsample_ids(sizes, frac, seed=5))
    kw = dict(seed=5, epoch=1, shuffle=True, drop_last=False, world_size=3, batch_size=2, subsample=frac)
    got = np.concatenate(plan(sizes, **kw))
    assert Counter(got.tolist()) >= Counter(ids.tolist()) and got.size - ids.size < 3


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_subsample_must_be_positive(bad):
    with pytest.raises(ValueError, match="subsample"):
        subsample_ids([3, 4], bad, 0)


def run_chain(sizes, segments, final_world, **kw):
    """Consumed samples of each earlier segment + everything the final world size yields."""
    consumed, chain = [], []
    for w, c in segments:
        seqs = plan(sizes, world_size=w, resume_chain=tuple(chain), **kw)
        consumed += [s[:c] for s in seqs]
        chain.append((w, c))
    final = plan(sizes, world_size=final_world, resume_chain=tuple(chain), **kw)
    return np.concatenate(consumed + final)


@settings(max_examples=600, deadline=None)
@given(
    chunk_sizes=chunkings,
    worlds=st.sampled_from([(2, 1), (1, 2), (3, 2), (2, 3, 1), (4, 1, 3)]),
    batch_size=st.integers(1, 8),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=seeds,
    data=st.data(),
)
def test_elastic_resume_chain_is_exactly_once(
    chunk_sizes, worlds, batch_size, drop_last, shuffle, seed, data
):
    kw = dict(seed=seed, epoch=1, shuffle=shuffle, drop_last=drop_last, batch_size=batch_size)
    segments = []
    for w in worlds[:-1]:
        m = rank_sequence_length(chunk_sizes, world_size=w, resume_chain=tuple(segments), **kw)
        segments.append((w, data.draw(st.integers(0, m))))
    yielded = run_chain(chunk_sizes, segments, worlds[-1], **kw)
    n = sum(chunk_sizes)
    check_union(yielded, n, drop_last, max_pads=sum(worlds), max_dropped=sum(worlds) * batch_size)


def test_elastic_chain_rejects_overconsumption():
    kw = dict(seed=0, epoch=0, shuffle=True, drop_last=False, world_size=1, rank=0, batch_size=2)
    with pytest.raises(ValueError, match="resume_chain"):
        rank_sequence([10, 10], resume_chain=[(2, 11)], **kw)
    with pytest.raises(ValueError, match="resume_chain"):
        rank_sequence_length([10, 10], resume_chain=[(2, 11)], **kw)


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"world_size": 0}, "world_size"),
        ({"rank": 2}, "rank"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"seed": -1, "shuffle": False}, "seed"),
        ({"epoch": 1.5}, "epoch"),
        ({"shuffle_window": 0}, "window_chunks"),
    ],
)
def test_bad_arguments_are_named(kw, word):
    base = dict(seed=0, epoch=0, shuffle=True, drop_last=False, world_size=2, rank=0, batch_size=2)
    with pytest.raises(ValueError, match=word):
        rank_sequence([5, 5], **{**base, **kw})


def diversity(window: int) -> float:
    sizes = [100] * 64
    offsets = chunk_offsets(sizes)
    scores = []
    for epoch in range(3):
        seq = rank_sequence(
            sizes,
            seed=11,
            epoch=epoch,
            shuffle=True,
            drop_last=False,
            world_size=1,
            rank=0,
            batch_size=32,
            shuffle_window=window,
        )
        scores.append(batch_diversity(seq, chunk_of(seq, offsets), 32))
    return float(np.mean(scores))


def test_batch_diversity_against_ideal():
    ideal = ideal_diversity(64, 32)
    default, full = diversity(DEFAULT_SHUFFLE_WINDOW), diversity(64)
    print(
        f"\ndistinct chunks per batch (64 chunks x 100, B=32): ideal {ideal:.2f}, "
        f"window {DEFAULT_SHUFFLE_WINDOW}: {default:.2f} ({default / ideal:.0%}), "
        f"window 64: {full:.2f} ({full / ideal:.0%})"
    )
    assert default >= 0.5 * ideal
    assert full >= 0.9 * ideal
    unshuffled = np.arange(6400)
    assert batch_diversity(unshuffled, chunk_of(unshuffled, chunk_offsets([100] * 64)), 32) < 1.5
