"""ParallelStreamingDataset: LitData's documented usage (zip, transform with and without rngs, cycling with
``length``, ``resume``, infinite), exactly once over 2 ranks x 2 workers, and exact mid-epoch resume."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from support.resume import as_plain, check_resume

from lit_streaming import ParallelStreamingDataset, StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize

A, B = 30, 20


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("par_a"), tmp_path_factory.mktemp("par_b")
    optimize(lambda i: i, list(range(A)), str(a), chunk_size=7, num_workers=1)
    optimize(lambda i: 1000 + i, list(range(B)), str(b), chunk_size=5, num_workers=1)
    return str(a), str(b)


def _pairs(loader) -> list[tuple[int, int]]:
    return [tuple(x) for batch in loader for x in zip(*(t.tolist() for t in batch))]


def test_readme_zip_with_transform(dirs):
    # LitData README, imports changed.
    def transform(samples: tuple):
        sample_1, sample_2 = samples
        return sample_1 + sample_2

    dset_1, dset_2 = StreamingDataset(dirs[0]), StreamingDataset(dirs[1])
    parallel_dataset = ParallelStreamingDataset([dset_1, dset_2], transform=transform)
    dataloader = StreamingDataLoader(parallel_dataset, batch_size=4)
    out = [v for batch in dataloader for v in batch.tolist()]
    assert len(parallel_dataset) == B and out == [i + 1000 + i for i in range(B)]


def test_zip_stops_with_the_shortest_and_shuffles_each(dirs):
    ds = ParallelStreamingDataset(
        [StreamingDataset(dirs[0], shuffle=True), StreamingDataset(dirs[1], shuffle=True)]
    )
    pairs = _pairs(StreamingDataLoader(ds, batch_size=3, num_workers=2))
    assert len(pairs) == B
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    assert len(set(firsts)) == B and set(firsts) <= set(range(A))
    assert sorted(seconds) == [1000 + i for i in range(B)]
    assert seconds != sorted(seconds)


def test_cycling_length_and_resume_across_epochs(dirs):
    ds = ParallelStreamingDataset(
        [StreamingDataset(dirs[0], shuffle=True), StreamingDataset(dirs[1])], length=50
    )
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2)
    assert len(ds) == 50 and len(loader) == 13
    e0, e1 = _pairs(loader), _pairs(loader)
    assert len(e0) == len(e1) == 50
    # child b (20 samples) is cycled: positions 0..99 over two epochs are five whole cycles
    assert Counter(b for _, b in e0 + e1) == {1000 + i: 5 for i in range(B)}
    # child a (30): positions 0..89 are three whole cycles, each a new shuffle of it
    a_seq = [a for a, _ in e0 + e1]
    cycles = [a_seq[k * A : (k + 1) * A] for k in range(3)]
    assert all(sorted(c) == list(range(A)) for c in cycles) and cycles[0] != cycles[1]
    assert e0 != e1  # resume=True: the second epoch continues


def test_resume_false_repeats_the_same_samples(dirs):
    ds = ParallelStreamingDataset(
        [StreamingDataset(dirs[0], shuffle=True), StreamingDataset(dirs[1])], length=25, resume=False
    )
    loader = StreamingDataLoader(ds, batch_size=4)
    assert _pairs(loader) == _pairs(loader)


def test_rngs_transform_is_reproducible(dirs):
    def transform(samples, rngs):
        a, b = samples
        return (
            a
            + rngs["random"].random()
            + float(rngs["numpy"].random())
            + float(rngs["torch"].initial_seed() % 7)
        )

    def run(reset):
        ds = ParallelStreamingDataset(
            [StreamingDataset(dirs[0]), StreamingDataset(dirs[1])],
            length=10,
            transform=transform,
            reset_rngs=reset,
        )
        loader = StreamingDataLoader(ds, batch_size=5)
        return [v for _ in range(2) for batch in loader for v in batch.tolist()]

    plain, with_reset = run(False), run(True)
    assert plain == run(False)

    def frac(values):
        return [round(v - int(v), 9) for v in values]

    # reset_rngs: epoch 1 draws what epoch 0 drew at the same in-epoch position (the samples differ: resume=True)
    assert frac(with_reset[10:]) == frac(with_reset[:10])
    assert frac(plain[10:]) != frac(plain[:10])
    assert with_reset[10:] != with_reset[:10]


def test_infinite(dirs):
    ds = ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=float("inf"))
    loader = StreamingDataLoader(ds, batch_size=8, num_workers=2)
    pairs = [tuple(x) for batch in itertools.islice(loader, 20) for x in zip(*(t.tolist() for t in batch))]
    assert len(pairs) == 160
    assert Counter(b for _, b in pairs) == {1000 + i: 8 for i in range(B)}
    with pytest.raises(TypeError, match="inf"):
        len(ds)


@pytest.mark.parametrize("length", [None, 47])
def test_exactly_once_over_two_ranks_and_two_workers(dirs, monkeypatch, length):
    per_rank, lengths = [], []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = ParallelStreamingDataset(
            [
                StreamingDataset(dirs[0], shuffle=True, drop_last=False),
                StreamingDataset(dirs[1], drop_last=False),
            ],
            length=length,
        )
        loader = StreamingDataLoader(ds, batch_size=3, num_workers=2)
        batches = list(loader)
        lengths.append((len(batches), len(loader)))
        per_rank.append(_pairs(batches))
    assert lengths[0] == lengths[1] and lengths[0][0] == lengths[0][1]
    pairs = list(itertools.chain(*per_rank))
    n = length or B
    assert len(pairs) - n < 2  # at most one pad repeat to even the ranks
    seconds = Counter(b for _, b in pairs)
    if length is None:  # the shortest child: every sample exactly once (plus a pad)
        assert set(seconds) == {1000 + i for i in range(B)} and sum(seconds.values()) - B < 2
    else:  # positions 0..46 of the unshuffled 20-sample child, and position 0 again as the one pad
        assert seconds == Counter(1000 + p % B for p in [*range(47), 0])


@pytest.mark.parametrize("length", [None, 45])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("break_epoch", "break_after"), [(0, 2), (1, 3)])
def test_resume_mid_epoch(dirs, length, workers, break_epoch, break_after):
    def transform(samples, rngs):
        return samples[0] * 10_000 + samples[1] + rngs["random"].random()

    def make():
        ds = ParallelStreamingDataset(
            [StreamingDataset(dirs[0], shuffle=True), StreamingDataset(dirs[1], shuffle=True)],
            length=length,
            transform=transform,
        )
        return StreamingDataLoader(ds, batch_size=4, num_workers=workers)

    check_resume(make, break_epoch, break_after)


def test_state_refused_when_length_changes(dirs):
    from lit_streaming import ResumeError

    def make(length):
        ds = ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=length)
        return StreamingDataLoader(ds, batch_size=4)

    first = make(40)
    next(iter(first))
    with pytest.raises(ResumeError, match="length"):
        make(41).load_state_dict(first.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": 2.5}, "length"),
        ({"length": "10"}, "length"),
        ({"transform": lambda a, b, c: a}, "transform"),
    ],
)
def test_bad_arguments_named(dirs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParallelStreamingDataset([StreamingDataset(dirs[0])], **kwargs)


def test_plain_iteration_and_as_plain(dirs):
    ds = ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])])
    assert as_plain(list(ds)[:2]) == [[0, 1000], [1, 1001]]


def test_children_may_be_mixes_and_splits(dirs):
    from lit_streaming import CombinedStreamingDataset, train_test_split

    mix = CombinedStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])])
    train, _ = train_test_split(StreamingDataset(dirs[0], shuffle=True), splits=[0.5, 0.5])
    ds = ParallelStreamingDataset([mix, train], length=2 * (A + B))
    pairs = _pairs(StreamingDataLoader(ds, batch_size=5, num_workers=2))
    assert Counter(a for a, _ in pairs) == Counter(2 * [*range(A), *range(1000, 1000 + B)])
    # the 15-sample split cycled over 100 positions: 6 whole cycles and 10 samples of a seventh
    seconds = Counter(b for _, b in pairs)
    assert set(seconds) == set(train[:]) and sorted(seconds.values()) == [6] * 5 + [7] * 10
