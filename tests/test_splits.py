"""train_test_split: LitData's README usage, the same splits as LitData for the same seed, disjoint and complete,
each split exactly once over 2 ranks x 2 workers, exact mid-epoch resume, and O(chunks) cost."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from support.resume import as_plain, check_resume

from lit_streaming import StreamingDataLoader, StreamingDataset, sampling, train_test_split
from lit_streaming.splits import cut, pieces_of
from lit_streaming_writer import optimize

N = 200


def _sample(i: int) -> dict:
    return {"id": i}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("split_ds")
    optimize(_sample, list(range(N)), str(out), chunk_size=9, num_workers=1)
    return str(out)


def _ids(stream) -> list[int]:
    return [s["id"] for s in stream]


def test_readme_example(data_dir):
    # LitData README, imports changed: train/val/test of 30% / 20% / 50%, each with its own loader.
    dataset = StreamingDataset(data_dir)
    train_dataset, val_dataset, test_dataset = train_test_split(dataset, splits=[0.3, 0.2, 0.5])
    assert (len(train_dataset), len(val_dataset), len(test_dataset)) == (60, 40, 100)
    loaders = [StreamingDataLoader(d) for d in (train_dataset, val_dataset, test_dataset)]
    seen = [[int(b["id"]) for b in loader] for loader in loaders]
    assert [len(s) for s in seen] == [60, 40, 100]
    assert sorted(itertools.chain(*seen)) == list(range(N))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("splits", [[0.3, 0.2, 0.5], [0.8, 0.1], [0.5, 0.0, 0.25]])
def test_same_splits_as_litdata(data_dir, splits, shuffle):
    litdata = pytest.importorskip("litdata")
    theirs = litdata.train_test_split(
        litdata.StreamingDataset(data_dir), splits=splits, seed=3, shuffle=shuffle
    )
    ours = train_test_split(StreamingDataset(data_dir), splits=splits, seed=3, shuffle=shuffle)
    for t, o in zip(theirs, ours):
        assert len(t) == len(o)
        # the same samples, and the same index order (ds[j] is the same sample in both)
        assert [int(t[j]["id"]) for j in range(len(t))] == [o[j]["id"] for j in range(len(o))]


def test_disjoint_complete_and_sized(data_dir):
    ds = StreamingDataset(data_dir, shuffle=True)
    for seed in (0, 1, 42):
        parts = train_test_split(ds, splits=[0.55, 0.25, 0.2], seed=seed)
        ids = [_ids(p) for p in parts]
        assert [len(x) for x in ids] == [int(N * f) for f in (0.55, 0.25, 0.2)]
        flat = list(itertools.chain(*ids))
        assert len(flat) == len(set(flat))  # disjoint
        assert sorted(flat) == list(range(N))  # complete (these fractions lose nothing to rounding)
    a = [_ids(p) for p in train_test_split(ds, [0.5, 0.5], seed=1)]
    b = [_ids(p) for p in train_test_split(ds, [0.5, 0.5], seed=2)]
    assert set(a[0]) != set(b[0])  # the seed picks the chunks


def test_split_of_a_split_and_settings_kept(data_dir):
    ds = StreamingDataset(data_dir, shuffle=True, transform=lambda s: s["id"])
    train, val = train_test_split(ds, [0.75, 0.25])
    inner_a, inner_b = train_test_split(train, [0.5, 0.5], seed=5)
    assert sorted(list(inner_a) + list(inner_b)) == sorted(train)  # transform kept: ints
    assert not set(inner_a) & set(val)
    assert train.shuffle and train.seed == ds.seed


@pytest.mark.parametrize("drop_last", [False, True])
def test_each_split_exactly_once_over_two_ranks_and_two_workers(data_dir, monkeypatch, drop_last):
    ds = StreamingDataset(data_dir, shuffle=True, drop_last=drop_last)
    splits = train_test_split(ds, splits=[0.7, 0.3], seed=11)
    for split in splits:
        per_rank, lengths = [], []
        for rank in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            loader = StreamingDataLoader(split, batch_size=4, num_workers=2)
            batches = list(loader)
            lengths.append((len(batches), len(loader)))
            per_rank.append([i for b in batches for i in as_plain(b)["id"]])
        assert lengths[0] == lengths[1] and lengths[0][0] == lengths[0][1]
        union = sorted(itertools.chain(*per_rank))
        expected = sorted(s["id"] for s in split[:])  # random access: no rank involved
        if drop_last:
            assert len(union) == len(set(union)) and set(union) <= set(expected)
            assert len(expected) - len(union) < 2 * 4
        else:
            assert set(union) == set(expected) and len(union) - len(expected) < 2


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("break_epoch", "break_after"), [(0, 3), (1, 5)])
def test_split_resumes_mid_epoch(data_dir, workers, break_epoch, break_after):
    def make():
        train, _ = train_test_split(StreamingDataset(data_dir, shuffle=True), splits=[0.6, 0.4], seed=9)
        return StreamingDataLoader(train, batch_size=5, num_workers=workers)

    check_resume(make, break_epoch, break_after)


def test_split_state_refused_by_the_other_split(data_dir):
    from lit_streaming import ResumeError

    a, b = train_test_split(StreamingDataset(data_dir), splits=[0.5, 0.5])
    loader = StreamingDataLoader(a, batch_size=4)
    next(iter(loader))
    with pytest.raises(ResumeError, match="subset"):
        StreamingDataLoader(b, batch_size=4).load_state_dict(loader.state_dict())


@pytest.mark.parametrize(
    ("splits", "match"), [([0.5, 1], "floats"), ([0.5, -0.1], r"\[0, 1\]"), ([0.7, 0.6], "sum")]
)
def test_bad_splits_named(data_dir, splits, match):
    with pytest.raises(ValueError, match=match):
        train_test_split(StreamingDataset(data_dir), splits=splits)


def test_pieces_helpers():
    pieces = np.array([[0, 0, 10], [1, 0, 10], [2, 0, 10]], dtype=np.int64)
    assert cut(pieces, 5, 25).tolist() == [[0, 5, 10], [1, 0, 10], [2, 0, 5]]
    assert cut(pieces, 10, 20).tolist() == [[1, 0, 10]]
    assert cut(pieces, 7, 7).shape == (0, 3)
    assert pieces_of(pieces, [9, 10, 11, 3]).tolist() == [[0, 9, 10], [1, 0, 2], [0, 3, 4]]
    assert pieces_of(pieces, slice(2, 28, 1)).tolist() == [[0, 2, 10], [1, 0, 10], [2, 0, 8]]


def test_a_billion_sample_split_costs_o_chunks():
    # 1.5e9 samples in 1e6 chunks: the split and its rank plan are built from per-chunk integers only.
    chunks = 1_000_000
    pieces = np.stack(
        [np.arange(chunks), np.zeros(chunks, dtype=np.int64), np.full(chunks, 1500)], axis=1
    ).astype(np.int64)
    t0 = time.perf_counter()
    perm = pieces[np.random.RandomState([42]).permutation(chunks)]
    total = 1500 * chunks
    at = 1_200_000_123  # inside a chunk
    train = cut(perm, 0, at)
    val = cut(perm, at, total)
    geometry = sampling.dataset_geometry(train[:, 2] - train[:, 1], 1.0, 42)
    plan = sampling.dataset_plan(
        geometry, epoch=0, shuffle=True, drop_last=True, world_size=8, rank=3, batch_size=32
    )
    keys = plan.keys(0, 1000)
    elapsed = time.perf_counter() - t0
    assert len(train) + len(val) == chunks + 1  # one chunk is shared at the cut
    assert int((train[:, 2] - train[:, 1]).sum()) == at
    assert keys.size == 1000 and elapsed < 10


def test_splits_mix_in_a_combined_dataset_exactly_once(data_dir):
    from lit_streaming import CombinedStreamingDataset

    train, val = train_test_split(StreamingDataset(data_dir, shuffle=True), splits=[0.7, 0.3])
    mixed = CombinedStreamingDataset([train, val], iterate_over_all=True)
    loader = StreamingDataLoader(mixed, batch_size=6, num_workers=2)
    assert sorted(i for b in loader for i in b["id"].tolist()) == list(range(N))


def test_split_with_index_path_pickles(data_dir, tmp_path):
    import pickle
    import shutil

    shutil.copy(f"{data_dir}/index.json", tmp_path / "index.json")
    train, _ = train_test_split(StreamingDataset(data_dir, index_path=str(tmp_path)), splits=[0.5, 0.5])
    clone = pickle.loads(pickle.dumps(train))  # what spawn-started workers receive
    assert [s["id"] for s in clone[:]] == [s["id"] for s in train[:]]
