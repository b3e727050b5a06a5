"""StreamingDataLoader: exactly-once over simulated ranks, equal batch counts, exact and elastic resume."""

from __future__ import annotations

import itertools

import pytest
from support.resume import as_plain, check_resume

from lit_streaming import CombinedStreamingDataset, ResumeError, StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize

N = 97


def _sample(i: int) -> dict:
    return {"id": i}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader_ds")
    optimize(_sample, list(range(N)), str(out), chunk_size=6, num_workers=1)
    return str(out)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader_ds2")
    optimize(lambda i: {"id": 1000 + i}, list(range(41)), str(out), chunk_size=5, num_workers=1)
    return str(out)


def _ids(batches):
    return [i for b in batches for i in as_plain(b)["id"]]


def _in_rank(monkeypatch, rank: int, world_size: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world_size))


@pytest.mark.parametrize(
    ("world_size", "workers", "batch", "drop_last"),
    [(1, 0, 4, False), (2, 2, 5, False), (3, 1, 4, True), (4, 3, 3, False), (2, 0, 7, True)],
)
def test_exactly_once_across_ranks(data_dir, monkeypatch, world_size, workers, batch, drop_last):
    per_rank, lengths = [], []
    for rank in range(world_size):
        _in_rank(monkeypatch, rank, world_size)
        loader = StreamingDataLoader(
            StreamingDataset(data_dir, shuffle=True, drop_last=drop_last),
            batch_size=batch,
            num_workers=workers,
        )
        batches = list(loader)
        lengths.append((len(batches), len(loader)))
        per_rank.append(_ids(batches))
    assert len({n for n, _ in lengths}) == 1, f"ranks yield different batch counts: {lengths}"
    assert all(n == length for n, length in lengths)
    union = sorted(itertools.chain.from_iterable(per_rank))
    if drop_last:
        assert len(union) == len(set(union)) and N - len(union) < world_size * batch
    else:
        assert set(union) == set(range(N)) and len(union) - N < world_size


@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (2, False), (2, True), (3, False)])
@pytest.mark.parametrize(("break_epoch", "break_after"), [(0, 1), (0, 7), (0, 20), (1, 0), (1, 19)])
def test_resume_exact(data_dir, workers, persistent, break_epoch, break_after):
    def make():
        return StreamingDataLoader(
            StreamingDataset(data_dir, shuffle=True),
            batch_size=5,
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
        )

    check_resume(make, break_epoch, break_after)


def test_resume_last_batch_goes_to_next_epoch(data_dir):
    def make():
        return StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4)

    n = len(make())
    check_resume(make, 0, n)  # saved after the epoch's last batch
    check_resume(make, 0, n - 1)


def test_resume_combined(data_dir, other_dir):
    def make():
        ds = CombinedStreamingDataset(
            [StreamingDataset(data_dir, shuffle=True), StreamingDataset(other_dir, shuffle=True)],
            weights=[0.5, 0.5],
            iterate_over_all=False,
        )
        return StreamingDataLoader(ds, batch_size=4, num_workers=2)

    check_resume(make, 0, 9)
    check_resume(make, 0, len(make()) - 2)  # after the smaller child is exhausted


def test_resume_refuses_changed_settings(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True, seed=1), batch_size=4)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(ResumeError, match="seed"):
        StreamingDataLoader(StreamingDataset(data_dir, shuffle=True, seed=2), batch_size=4).load_state_dict(
            state
        )
    with pytest.raises(ResumeError, match="batch_size"):
        StreamingDataLoader(StreamingDataset(data_dir, shuffle=True, seed=1), batch_size=3).load_state_dict(
            state
        )
    with pytest.raises(ResumeError, match="shuffle"):
        StreamingDataLoader(StreamingDataset(data_dir, shuffle=False, seed=1), batch_size=4).load_state_dict(
            state
        )


def _run_world(make_loader, monkeypatch, world_size, batches, state=None):
    """Run every rank of a world for ``batches`` batches (None = to the end); return ids and rank-0 state."""
    seen, states = [], []
    for rank in range(world_size):
        _in_rank(monkeypatch, rank, world_size)
        loader = make_loader()
        if state is not None:
            loader.load_state_dict(state)
        it = iter(loader)
        got = list(it) if batches is None else [next(it) for _ in range(batches)]
        seen.extend(_ids(got))
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states), "loader state differs between ranks"
    return seen, states[0]


def _consume(data_dir, monkeypatch, world_size, workers, batches, state=None, drop_last=False):
    def make():
        ds = StreamingDataset(data_dir, shuffle=True, drop_last=drop_last)
        return StreamingDataLoader(ds, batch_size=4, num_workers=workers)

    return _run_world(make, monkeypatch, world_size, batches, state)


@pytest.mark.parametrize(("w_from", "w_to"), [(2, 1), (1, 2), (3, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_elastic_world_size(data_dir, monkeypatch, w_from, w_to, drop_last):
    first, state = _consume(data_dir, monkeypatch, w_from, 0, 3, drop_last=drop_last)
    second, _ = _consume(data_dir, monkeypatch, w_to, 0, None, state=state, drop_last=drop_last)
    total = first + second
    if drop_last:
        assert len(total) == len(set(total))
        assert N - len(total) < w_from * 4 + w_to * 4
    else:
        assert set(total) == set(range(N))
        assert len(total) - N < w_from + w_to


@pytest.mark.parametrize(("w_from", "w_to"), [(2, 3), (3, 0), (0, 2)])
def test_elastic_workers(data_dir, w_from, w_to):
    ref = _ids(
        StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4, num_workers=w_from)
    )
    loader = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4, num_workers=w_from)
    it = iter(loader)
    head = _ids([next(it) for _ in range(5)])
    state = loader.state_dict()
    resumed = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4, num_workers=w_to)
    resumed.load_state_dict(state)
    assert head + _ids(resumed) == ref


def test_shuffle_and_drop_last_overrides_are_per_loader(data_dir):
    ds = StreamingDataset(data_dir)
    loader = StreamingDataLoader(ds, batch_size=4, shuffle=True, drop_last=True)
    plain = StreamingDataLoader(ds, batch_size=4)
    ids = _ids(loader)
    assert not ds.shuffle and ds.drop_last is None, "the loader must not mutate the dataset passed in"
    assert len(ids) == N // 4 * 4 and ids != sorted(ids)
    assert _ids(plain) == list(range(N)), "a second loader over the same dataset is unaffected"


def test_epochs_differ_and_set_epoch_replays(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4)
    e0, e1 = _ids(loader), _ids(loader)
    assert e0 != e1 and sorted(e0) == sorted(e1) == list(range(N))
    loader.set_epoch(0)
    assert _ids(loader) == e0


def test_combined_weights_and_per_stream(data_dir, other_dir):
    a, b = StreamingDataset(data_dir), StreamingDataset(other_dir)
    combined = CombinedStreamingDataset(
        [a, b], weights=[3, 1], batching_method="per_stream", iterate_over_all=False
    )
    assert combined.weights == [0.75, 0.25]
    for batch in StreamingDataLoader(combined, batch_size=4, num_workers=2):
        ids = as_plain(batch)["id"]
        assert all(i < 1000 for i in ids) or all(i >= 1000 for i in ids), ids


def test_weights_need_iterate_over_all_false(data_dir, other_dir):
    a, b = StreamingDataset(data_dir), StreamingDataset(other_dir)
    with pytest.raises(ValueError, match="iterate_over_all"):
        CombinedStreamingDataset([a, b], weights=[0.5, 0.5])


def _nested(data_dir, other_dir):
    inner = CombinedStreamingDataset(
        [StreamingDataset(data_dir, shuffle=True), StreamingDataset(other_dir, shuffle=True)], seed=3
    )
    return CombinedStreamingDataset(
        [inner, StreamingDataset(other_dir, shuffle=True, seed=9)], weights=[2, 1], iterate_over_all=False
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_nested_combined_streams_and_resumes(data_dir, other_dir, workers):
    def make():
        return StreamingDataLoader(_nested(data_dir, other_dir), batch_size=4, num_workers=workers)

    ids = _ids(make())
    assert len(ids) == len(make().dataset)
    assert any(i < 1000 for i in ids) and any(i >= 1000 for i in ids)
    check_resume(make, 0, 5)
    check_resume(make, 1, 3)


def _consume_combined(data_dir, other_dir, monkeypatch, world_size, batches, state=None):
    def make():
        parts = [StreamingDataset(data_dir, shuffle=True), StreamingDataset(other_dir, shuffle=True)]
        return StreamingDataLoader(CombinedStreamingDataset(parts), batch_size=4, drop_last=False)

    return _run_world(make, monkeypatch, world_size, batches, state)


@pytest.mark.parametrize(("w_from", "w_to"), [(2, 1), (1, 2), (2, 3)])
def test_combined_elastic_world_size(data_dir, other_dir, monkeypatch, w_from, w_to):
    first, state = _consume_combined(data_dir, other_dir, monkeypatch, w_from, 3)
    second, _ = _consume_combined(data_dir, other_dir, monkeypatch, w_to, None, state=state)
    everything = set(range(N)) | set(range(1000, 1041))
    total = first + second
    assert set(total) == everything, "a sample was lost across the world-size change"
    assert len(total) - len(everything) < 2 * (w_from + w_to), "more repeats than the rank pads"


def test_resume_refuses_other_chunking_of_same_length(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    optimize(_sample, list(range(100)), str(a), chunk_size=10, num_workers=1)
    optimize(_sample, list(range(100)), str(b), chunk_size=25, num_workers=1)
    loader = StreamingDataLoader(StreamingDataset(str(a), shuffle=True), batch_size=4)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(ResumeError, match="geometry|num_chunks"):
        StreamingDataLoader(StreamingDataset(str(b), shuffle=True), batch_size=4).load_state_dict(state)


def _valid_state(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4)
    it = iter(loader)
    next(it)
    return loader.state_dict()


def _mutations(state):
    yield "missing", {k: v for k, v in state.items() if k != "consumed"}, "consumed"
    yield "list", list(state.items()), "dict"
    yield "version", {**state, "version": 1}, "version"
    yield "version-str", {**state, "version": "2"}, "version"
    yield "negative", {**state, "consumed": -4}, "consumed"
    yield "type", {**state, "epoch": "0"}, "epoch"
    yield "bool", {**state, "batch_size": True}, "batch_size"
    yield "range", {**state, "consumed": state["epoch_length"] + 4}, "consumed"
    yield "world", {**state, "world_size": 0}, "world_size"
    yield "chain", {**state, "resume_chain": {"a": 1}}, "resume_chain"
    yield "chain-entry", {**state, "resume_chain": [[2]]}, "resume_chain"
    yield "settings", {**state, "settings": None}, "settings"
    yield "started", {**state, "started": "yes"}, "started"
    yield (
        "elastic-overflow",
        {**state, "world_size": 2, "consumed": 90, "epoch_length": 96},
        "resume_chain|consumed",
    )


@pytest.mark.parametrize("case", range(14))
def test_malformed_states_raise_resume_error(data_dir, case):
    name, bad, key = list(_mutations(_valid_state(data_dir)))[case]
    loader = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=4)
    with pytest.raises(ResumeError, match=key):
        loader.load_state_dict(bad)
        list(loader)
