"""Property tests for the lazy per-rank sampling plan (DESIGN.md sections 5 and 6, issue 10)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from array_keys import ArrayKeys
from eager_reference import (
    ref_chunk_ids,
    ref_rank_length,
    ref_rank_plan,
    ref_resumed,
    ref_window_chunks,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_streaming.sampling import (
    DEFAULT_SHUFFLE_WINDOW,
    batch_diversity,
    chunk_of,
    chunk_offsets,
    dataset_geometry,
    dataset_plan,
    ideal_diversity,
    num_batches,
    partition,
    rank_intervals,
    rank_length,
    resumed_length,
    resumed_plan,
    subsample_count,
    subsample_counts,
    worker_batches,
)
from lit_streaming.sampling.ids import chunk_ids, chunk_order
from lit_streaming.sampling.sequence import Concat, Cycle, KeySequence, Slice

chunkings = st.lists(st.integers(0, 30), min_size=0, max_size=20)
seeds = st.integers(0, 2**32 - 1)
subsamples = st.sampled_from([0.25, 0.5, 1.0, 1.0, 1.5, 2.0, 3.3])


def reassemble(seq: KeySequence, start: int, batch_size: int, num_workers: int) -> np.ndarray:
    """What the main process sees: each worker reads its own batches, torch takes them round-robin."""
    w = max(num_workers, 1)
    per_worker = [
        [seq.keys(lo, hi) for lo, hi in worker_batches(seq.length, start, batch_size, num_workers, j)]
        for j in range(w)
    ]
    total = num_batches(seq.length, start, batch_size)
    assert sum(len(b) for b in per_worker) == total
    for batches in per_worker:
        assert all(b.size == batch_size for b in batches[:-1] if batches)
    out = [per_worker[b % w][b // w] for b in range(total)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def plans(geometry, **kw) -> list[KeySequence]:
    """Every rank's plan for world size kw['world_size'], checked against the cheap length."""
    seqs = [dataset_plan(geometry, rank=r, **kw) for r in range(kw["world_size"])]
    length = rank_length(geometry.total, kw["world_size"], kw["batch_size"], kw["drop_last"])
    assert all(s.length == length for s in seqs)
    return seqs


def check_union(
    yielded: np.ndarray, epoch: Counter, drop_last: bool, max_pads: int, max_dropped: int
) -> None:
    """``epoch``: each id's multiplicity in the epoch (1 for every id without subsampling)."""
    counts = Counter(yielded.tolist())
    n = sum(epoch.values())
    if drop_last:
        assert counts <= epoch, "duplicates (beyond the epoch's own) with drop_last=True"
        assert n - yielded.size < max_dropped
    else:
        assert counts >= epoch, "a sample was lost with drop_last=False"
        assert yielded.size - n < max_pads


@settings(max_examples=800, deadline=None)
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
    geometry = dataset_geometry(chunk_sizes, 1.0, seed)
    kw = dict(
        epoch=epoch,
        shuffle=shuffle,
        drop_last=drop_last,
        world_size=world_size,
        batch_size=batch_size,
        shuffle_window=shuffle_window,
    )
    seqs = plans(geometry, **kw)
    n = sum(chunk_sizes)
    seen = [reassemble(s, 0, batch_size, num_workers) for s in seqs]
    for s, r in zip(seqs, seen, strict=True):
        keys = s.all_keys()
        assert keys.dtype == np.int64
        np.testing.assert_array_equal(keys, r)
    assert len({num_batches(s.length, 0, batch_size) for s in seqs}) == 1
    if drop_last:
        assert all(s.length % batch_size == 0 for s in seqs)
    yielded = np.concatenate(seen)
    assert yielded.size == world_size * seqs[0].length
    assert set(yielded.tolist()) <= set(range(n))
    check_union(
        yielded, Counter(range(n)), drop_last, max_pads=world_size, max_dropped=world_size * batch_size
    )


@settings(max_examples=500, deadline=None)
@given(
    chunk_sizes=chunkings,
    subsample=subsamples,
    world_size=st.integers(1, 4),
    batch_size=st.integers(1, 6),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=seeds,
    epoch=st.integers(0, 4),
    shuffle_window=st.integers(1, 5),
    data=st.data(),
)
def test_lazy_plan_equals_eager_reference(
    chunk_sizes, subsample, world_size, batch_size, drop_last, shuffle, seed, epoch, shuffle_window, data
):
    geometry = dataset_geometry(chunk_sizes, subsample, seed)
    counts = subsample_counts(chunk_sizes, subsample, seed)
    np.testing.assert_array_equal(geometry.counts, counts)
    kw = dict(
        seed=seed,
        epoch=epoch,
        shuffle=shuffle,
        drop_last=drop_last,
        world_size=world_size,
        batch_size=batch_size,
        shuffle_window=shuffle_window,
    )
    rank = data.draw(st.integers(0, world_size - 1))
    lazy = dataset_plan(geometry, rank=rank, **{k: v for k, v in kw.items() if k != "seed"})
    eager, windows = ref_rank_plan(chunk_sizes, counts, rank=rank, **kw)
    assert lazy.length == eager.size == ref_rank_length(int(counts.sum()), world_size, batch_size, drop_last)
    np.testing.assert_array_equal(lazy.all_keys(), eager)
    # Any sub-range, read in any order (later windows first, then earlier ones: the window cache).
    for _ in range(3):
        lo = data.draw(st.integers(0, lazy.length))
        hi = data.draw(st.integers(lo, lazy.length))
        np.testing.assert_array_equal(lazy.keys(lo, hi), eager[lo:hi])
    np.testing.assert_array_equal(lazy.keys(lazy.length, lazy.length), eager[:0])
    # The pickled plan (what a worker gets) has no windows in it and yields the same keys.
    import pickle

    clone = pickle.loads(pickle.dumps(lazy))
    assert clone.materialised_ids() == 0
    np.testing.assert_array_equal(clone.all_keys(), eager)
    # chunk_runs over the whole share: every window's chunks in piece order.
    expected = [c for w in ref_window_chunks(chunk_sizes, counts, rank=rank, **kw) for c in w]
    runs = lazy.chunk_runs(0, lazy.length)
    got = [int(c) for leaf, chunks in runs for c in chunks]
    assert all(leaf == 0 for leaf, _ in runs) and got == expected
    if lazy.length:
        assert lazy.num_windows == int(windows.max()) + 1


def keys_chunks(geometry, keys: np.ndarray) -> set[int]:
    return set(chunk_of(keys, geometry.offsets).tolist())


@settings(max_examples=150, deadline=None)
@given(
    chunk_sizes=chunkings,
    world_size=st.integers(1, 3),
    batch_size=st.integers(1, 4),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=seeds,
    shuffle_window=st.integers(1, 4),
    data=st.data(),
)
def test_chunk_runs_cover_what_reading_touches(
    chunk_sizes, world_size, batch_size, drop_last, shuffle, seed, shuffle_window, data
):
    """A prefetch hint from any position (a resume mid-window) names every chunk the read needs."""
    geometry = dataset_geometry(chunk_sizes, 1.0, seed)
    seq = dataset_plan(
        geometry,
        epoch=1,
        shuffle=shuffle,
        drop_last=drop_last,
        world_size=world_size,
        rank=data.draw(st.integers(0, world_size - 1)),
        batch_size=batch_size,
        shuffle_window=shuffle_window,
    )
    lo = data.draw(st.integers(0, seq.length))
    hi = data.draw(st.integers(lo, seq.length))
    hinted = {int(c) for _, chunks in seq.chunk_runs(lo, hi) for c in chunks}
    assert keys_chunks(geometry, seq.keys(lo, hi)) <= hinted
    if lo == hi:
        assert hinted == set()


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
    np.testing.assert_array_equal(reassemble(ArrayKeys(seq), start, batch_size, num_workers), seq[start:])


def test_worker_batches_fixed_case_and_bad_arguments():
    assert list(worker_batches(10, 1, 4, 2, 0)) == [(1, 5), (9, 10)]
    assert list(worker_batches(10, 1, 4, 2, 1)) == [(5, 9)]
    assert list(worker_batches(10, 10, 4, 0, 0)) == []
    assert num_batches(10, 1, 4) == 3
    with pytest.raises(ValueError, match="worker_id"):
        list(worker_batches(10, 0, 4, 2, 2))
    with pytest.raises(ValueError, match="start"):
        list(worker_batches(10, 11, 4, 2, 0))
    with pytest.raises(ValueError, match="batch_size"):
        list(worker_batches(10, 0, 0, 2, 0))


def test_determinism_and_epochs_differ():
    sizes = [20] * 50
    kw = dict(shuffle=True, drop_last=False, world_size=2, rank=1, batch_size=4)
    geometry = dataset_geometry(sizes, 1.0, 3)
    a = dataset_plan(geometry, epoch=0, **kw).all_keys()
    np.testing.assert_array_equal(a, dataset_plan(dataset_geometry(sizes, 1.0, 3), epoch=0, **kw).all_keys())
    assert not np.array_equal(a, dataset_plan(geometry, epoch=1, **kw).all_keys())
    assert not np.array_equal(a, dataset_plan(dataset_geometry(sizes, 1.0, 4), epoch=0, **kw).all_keys())
    assert sorted(a.tolist()) != sorted(dataset_plan(geometry, epoch=1, **kw).all_keys().tolist())
    plain = dataset_plan(geometry, epoch=0, **{**kw, "shuffle": False}).all_keys()
    np.testing.assert_array_equal(plain, np.arange(500, 1000))
    # Same keys whether read in one go, window by window, or backwards.
    seq = dataset_plan(geometry, epoch=0, **kw)
    backwards = np.concatenate(
        [seq.keys(lo, min(lo + 7, seq.length)) for lo in range(0, seq.length, 7)][::-1]
    )
    expected = np.concatenate([a[lo : lo + 7] for lo in range(0, a.size, 7)][::-1])
    np.testing.assert_array_equal(backwards, expected)


def test_chunk_order_keeps_chunks_together_and_windows_shuffle_within():
    sizes = [3, 0, 4, 2, 5]
    geometry = dataset_geometry(sizes, 1.0, 9)
    order = chunk_order(len(sizes), 9, 2, True)
    assert sorted(order.tolist()) == list(range(5))
    plain = dataset_plan(
        geometry, epoch=2, shuffle=True, drop_last=False, world_size=1, rank=0, batch_size=1, shuffle_window=1
    ).all_keys()
    # Window of one piece = one chunk: a run per non-empty chunk, in chunk order, each a permutation.
    chunks = chunk_of(plain, geometry.offsets)
    runs = chunks[np.r_[True, chunks[1:] != chunks[:-1]]].tolist()
    assert runs == [k for k in order.tolist() if sizes[k]]
    assert sorted(plain.tolist()) == list(range(14))
    wide = dataset_plan(
        geometry, epoch=2, shuffle=True, drop_last=False, world_size=1, rank=0, batch_size=1, shuffle_window=2
    ).all_keys()
    # Windows of two pieces: the first window holds exactly the first two non-empty chunks' ids.
    first_two = [k for k in order.tolist() if sizes[k]][:2]
    head = sum(sizes[k] for k in first_two)
    assert set(chunk_of(wide[:head], geometry.offsets).tolist()) == set(first_two)


def test_partition_fixed_cases():
    seq = ArrayKeys(np.arange(10))
    assert rank_length(10, 3, 2, False) == 4 and rank_length(10, 3, 2, True) == 2
    assert [partition(seq, 3, r, 2, False).all_keys().tolist() for r in range(3)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 0, 1],
    ]
    assert [partition(seq, 3, r, 2, True).all_keys().tolist() for r in range(3)] == [[0, 1], [3, 4], [6, 7]]
    assert partition(ArrayKeys([]), 2, 1, 3, False).length == 0
    assert rank_intervals(10, 3, 2, 2, False) == [(8, 10), (0, 2)]
    assert rank_intervals(10, 3, 1, 2, True) == [(3, 5)]
    assert rank_intervals(0, 2, 1, 3, False) == []
    # Composition pieces: slices of concatenations of cycles.
    cyc = Cycle(ArrayKeys([7, 8, 9]), 8)
    assert cyc.all_keys().tolist() == [7, 8, 9, 7, 8, 9, 7, 8]
    assert Slice(Concat([ArrayKeys([1, 2]), ArrayKeys([]), cyc]), 1, 5).all_keys().tolist() == [2, 7, 8, 9, 7]
    with pytest.raises(ValueError, match="empty"):
        Cycle(ArrayKeys([]), 1)
    with pytest.raises(IndexError):
        cyc.keys(0, 9)


@pytest.mark.parametrize("frac", [0.3, 1.0, 2.0, 2.5])
def test_subsample_multiset(frac):
    sizes = [7, 0, 13, 20]
    geometry = dataset_geometry(sizes, frac, seed=5)
    assert geometry.total == subsample_count(40, frac) == int(np.floor(frac)) * 40 + round((frac % 1) * 40)
    ids = np.concatenate([geometry.ids(k, 0, int(geometry.counts[k])) for k in range(len(sizes))])
    assert ids.size == geometry.total
    assert np.all(np.diff(ids) >= 0)
    counts = np.bincount(ids, minlength=40)
    assert counts.min() >= int(np.floor(frac)) and counts.max() <= int(np.floor(frac)) + 1
    assert np.all(geometry.counts <= np.array(sizes) * int(np.ceil(frac)))
    np.testing.assert_array_equal(geometry.counts, dataset_geometry(sizes, frac, seed=5).counts)
    for k, size in enumerate(sizes):
        local = chunk_ids(k, size, int(geometry.counts[k]), 5)
        np.testing.assert_array_equal(local, ref_chunk_ids(k, size, int(geometry.counts[k]), 5))
        lo, hi = min(1, local.size), min(4, local.size)
        np.testing.assert_array_equal(geometry.ids(k, lo, hi), (local + geometry.offsets[k])[lo:hi])
    # Every epoch trains on the same subset; the plan over all ranks covers it (pads are repeats).
    kw = dict(shuffle=True, drop_last=False, world_size=3, batch_size=2)
    for epoch in (1, 2):
        got = np.concatenate([s.all_keys() for s in plans(geometry, epoch=epoch, **kw)])
        assert Counter(got.tolist()) >= Counter(ids.tolist()) and got.size - ids.size < 3


def test_subsample_is_uniform_over_chunks():
    """f < 1 picks ids uniformly: chunk counts follow the hypergeometric mean over seeds."""
    sizes = [10, 30, 60]
    counts = np.array([subsample_counts(sizes, 0.5, seed) for seed in range(400)])
    assert np.all(counts.sum(axis=1) == 50)
    np.testing.assert_allclose(counts.mean(axis=0), [5, 15, 30], atol=0.6)
    assert len({tuple(c) for c in counts.tolist()}) > 10


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_subsample_must_be_positive(bad):
    with pytest.raises(ValueError, match="subsample"):
        dataset_geometry([3, 4], bad, 0)
    with pytest.raises(ValueError, match="subsample"):
        subsample_count(7, bad)


def run_chain(geometry, segments, final_world, **kw):
    """Consumed samples of each earlier segment + everything the final world size yields, checked against the
    eager reference chain and the cheap length."""

    def native(w, r):
        return dataset_plan(geometry, world_size=w, rank=r, **kw)

    def eager_native(w, r):
        return native(w, r).all_keys()

    common = dict(batch_size=kw["batch_size"], drop_last=kw["drop_last"])
    consumed, chain = [], []
    for w, c in segments:
        seqs = [
            resumed_plan(native, world_size=w, rank=r, resume_chain=tuple(chain), **common) for r in range(w)
        ]
        consumed += [s.keys(0, c) for s in seqs]
        chain.append((w, c))
    final = []
    length = resumed_length(
        lambda w: native(w, 0).length, world_size=final_world, resume_chain=chain, **common
    )
    for r in range(final_world):
        seq = resumed_plan(native, world_size=final_world, rank=r, resume_chain=chain, **common)
        assert seq.length == length
        eager = ref_resumed(eager_native, world_size=final_world, rank=r, resume_chain=chain, **common)
        np.testing.assert_array_equal(seq.all_keys(), eager)
        final.append(seq.all_keys())
    return np.concatenate(consumed + final)


@settings(max_examples=500, deadline=None)
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
    geometry = dataset_geometry(chunk_sizes, 1.0, seed)
    kw = dict(epoch=1, shuffle=shuffle, drop_last=drop_last, batch_size=batch_size, shuffle_window=3)
    segments = []
    for w in worlds[:-1]:
        m = resumed_length(
            lambda v: rank_length(geometry.total, v, batch_size, drop_last),
            world_size=w,
            batch_size=batch_size,
            drop_last=drop_last,
            resume_chain=tuple(segments),
        )
        segments.append((w, data.draw(st.integers(0, m))))
    yielded = run_chain(geometry, segments, worlds[-1], **kw)
    n = sum(chunk_sizes)
    check_union(
        yielded, Counter(range(n)), drop_last, max_pads=sum(worlds), max_dropped=sum(worlds) * batch_size
    )
    assert set(yielded.tolist()) <= set(range(n))


def test_elastic_chain_rejects_overconsumption():
    geometry = dataset_geometry([10, 10], 1.0, 0)

    def native(w, r):
        return dataset_plan(
            geometry, epoch=0, shuffle=True, drop_last=False, world_size=w, rank=r, batch_size=2
        )

    kw = dict(world_size=1, batch_size=2, drop_last=False)
    with pytest.raises(ValueError, match="resume_chain"):
        resumed_plan(native, rank=0, resume_chain=[(2, 11)], **kw)
    with pytest.raises(ValueError, match="resume_chain"):
        resumed_length(lambda w: rank_length(20, w, 2, False), resume_chain=[(2, 11)], **kw)
    with pytest.raises(ValueError, match="resume_chain"):
        resumed_plan(native, rank=0, resume_chain=[(2, 4), (3, 7)], **kw)  # 12 left: 4 per rank
    with pytest.raises(ValueError, match="resume_chain"):
        resumed_plan(native, rank=0, resume_chain=[(2, 4, 1)], **kw)
    with pytest.raises(ValueError, match="resume_chain"):
        resumed_plan(native, rank=0, resume_chain=[(0, 1)], **kw)
    with pytest.raises(ValueError, match="resume_chain"):
        resumed_length(lambda w: rank_length(20, w, 2, False), resume_chain=[(2, -1)], **kw)
    # A chain that consumed everything leaves an empty, valid plan.
    assert resumed_plan(native, rank=0, resume_chain=[(2, 10)], **kw).length == 0


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"world_size": 0}, "world_size"),
        ({"world_size": True}, "world_size"),
        ({"rank": 2}, "rank"),
        ({"rank": -1}, "rank"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"seed": -1, "shuffle": False}, "seed"),
        ({"epoch": 1.5}, "epoch"),
        ({"epoch": -1, "shuffle": False}, "epoch"),
        ({"shuffle_window": 0}, "shuffle_window"),
    ],
)
def test_bad_arguments_are_named(kw, word):
    base = dict(epoch=0, shuffle=True, drop_last=False, world_size=2, rank=0, batch_size=2)
    kw = {**base, **kw}
    seed = kw.pop("seed", 0)
    with pytest.raises(ValueError, match=word):
        dataset_plan(dataset_geometry([5, 5], 1.0, seed), **kw)


def test_negative_chunk_sizes_are_refused():
    with pytest.raises(ValueError, match="chunk_sizes"):
        chunk_offsets([3, -1])


def diversity(window: int) -> float:
    sizes = [100] * 64
    geometry = dataset_geometry(sizes, 1.0, 11)
    scores = []
    for epoch in range(3):
        seq = dataset_plan(
            geometry,
            epoch=epoch,
            shuffle=True,
            drop_last=False,
            world_size=1,
            rank=0,
            batch_size=32,
            shuffle_window=window,
        ).all_keys()
        scores.append(batch_diversity(seq, chunk_of(seq, geometry.offsets), 32))
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


# --- scale: arithmetic on the plan only, never iterating over the samples -------------------------------


@pytest.mark.parametrize("subsample", [1.0, 0.37])
@pytest.mark.parametrize("drop_last", [True, False])
def test_plan_at_scale_by_arithmetic(subsample, drop_last):
    """1.5e9 samples in 200,000 chunks, W=8: every rank's plan in O(chunks), equal lengths, exactly once."""
    num_chunks, chunk_size, world_size, batch_size = 200_000, 7_500, 8, 8
    t0 = time.perf_counter()
    geometry = dataset_geometry(np.full(num_chunks, chunk_size), subsample, seed=42)
    n = geometry.total
    assert n == subsample_count(num_chunks * chunk_size, subsample)
    assert subsample < 1 or n == 1_500_000_000
    m = rank_length(n, world_size, batch_size, drop_last)
    kw = dict(epoch=3, shuffle=True, drop_last=drop_last, world_size=world_size, batch_size=batch_size)
    seqs = [dataset_plan(geometry, rank=r, **kw) for r in range(world_size)]
    build = time.perf_counter() - t0
    assert [s.length for s in seqs] == [m] * world_size
    # Exactly once by arithmetic: per chunk, the pieces of all ranks add up to the chunk's count (minus fewer
    # than W*B dropped, or plus fewer than W pads), and no piece leaves its chunk.
    taken = np.zeros(num_chunks, dtype=np.int64)
    for s in seqs:
        piece_len = np.diff(s.piece_start)
        assert np.all(piece_len > 0)
        # O(chunks / W) integers per rank, no ids: at most one piece per chunk met, plus the interval ends.
        assert piece_len.size <= m // int(geometry.counts.min()) + 4
        assert np.all(s.piece_lo + piece_len <= geometry.counts[s.piece_chunk])
        np.add.at(taken, s.piece_chunk, piece_len)
    assert int(taken.sum()) == world_size * m
    if drop_last:
        assert np.all(taken <= geometry.counts) and n - world_size * m < world_size * batch_size
    else:
        assert np.all(taken >= geometry.counts) and int((taken - geometry.counts).sum()) < world_size
    # The rank intervals tile [0, n) (drop_last: disjoint, in order) without looking at a sample.
    intervals = [
        iv for r in range(world_size) for iv in rank_intervals(n, world_size, r, batch_size, drop_last)
    ]
    assert sum(b - a for a, b in intervals) == world_size * m
    if drop_last:
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(intervals, intervals[1:]))
    # Reading in the middle materialises one window (or two) and gives ids of the right chunks.
    t1 = time.perf_counter()
    mid = seqs[5]
    lo = m // 2 + 12_345
    keys = mid.keys(lo, lo + 1000)
    read = time.perf_counter() - t1
    assert keys.size == 1000 and keys.min() >= 0 and keys.max() < num_chunks * chunk_size
    assert len(np.unique(keys)) == 1000
    hinted = {int(c) for _, chunks in mid.chunk_runs(lo, lo + 1000) for c in chunks}
    assert set((keys // chunk_size).tolist()) <= hinted
    assert 0 < mid.materialised_ids() <= 2 * DEFAULT_SHUFFLE_WINDOW * chunk_size
    print(
        f"\n1.5e9 samples x{subsample}: 8 rank plans built in {build:.2f} s, a read mid-epoch in {read:.3f} s"
    )
    assert build < 20 and read < 5


def test_plan_length_needs_no_plan_at_scale():
    """len() at 1.5e9 for every world size is arithmetic: rank_length agrees with the resumed chain."""
    n = 1_500_000_000
    for w in (1, 3, 8, 1024):
        m = rank_length(n, w, 8, True)
        assert m % 8 == 0 and n - w * m < w * 8
        chain = [(8, 1000)]
        rest = 8 * (rank_length(n, 8, 8, True) - 1000)
        got = resumed_length(
            lambda v: rank_length(n, v, 8, True),
            world_size=w,
            batch_size=8,
            drop_last=True,
            resume_chain=chain,
        )
        assert got == rank_length(rest, w, 8, True)
