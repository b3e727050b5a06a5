"""The whole product for any format: shuffling, exactly-once over ranks and workers, resume mid-epoch,
random access and mixing with another format. Each format's tests call these on a dataset whose samples
carry an integer id (``ids_of`` maps a sample to it)."""

from __future__ import annotations

import functools
import itertools
import os
import pickle
from collections import Counter
from collections.abc import Callable
from typing import Any

import fsspec
import pytest

from lit_streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
from support.resume import as_plain, check_resume

OTHER_N = 23  # samples of the LitData dataset the formats are mixed with (ids 10_000 + i)


def upload(local_dir: str, url: str) -> None:
    """Copy a dataset folder's files to a fsspec URL."""
    fs, root = fsspec.core.url_to_fs(url)
    for name in sorted(os.listdir(local_dir)):
        fs.put_file(os.path.join(local_dir, name), f"{root}/{name}")


def batch_ids(batches: list[Any]) -> list[int]:
    return [i for b in batches for i in as_plain(b)["id"]]


def check_shuffled(make: Callable[..., StreamingDataset], n: int) -> None:
    plain = [s["id"] for s in make(shuffle=False)]
    assert plain == list(range(n))
    ds = make(shuffle=True)
    first = [s["id"] for s in ds]
    ds.set_epoch(1)
    second = [s["id"] for s in ds]
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != plain and second != first


def check_exactly_once(make: Callable[..., StreamingDataset], n: int, monkeypatch: Any) -> None:
    """2 ranks x 2 workers, shuffled: every sample once (drop_last=False pads < world_size repeats)."""
    per_rank, lengths = [], []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = StreamingDataLoader(make(shuffle=True, drop_last=False), batch_size=3, num_workers=2)
        batches = list(loader)
        lengths.append((len(batches), len(loader)))
        per_rank.append(batch_ids(batches))
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert lengths[0] == lengths[1] and lengths[0][0] == lengths[0][1], lengths
    union = list(itertools.chain.from_iterable(per_rank))
    assert set(union) == set(range(n)) and len(union) - n < 2
    repeats = [i for i, c in Counter(union).items() if c > 1]
    assert len(repeats) == len(union) - n and all(Counter(union)[i] == 2 for i in repeats)


def check_resume_mid_epoch(make: Callable[..., StreamingDataset], workers: int = 2) -> None:
    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(make(shuffle=True), batch_size=4, num_workers=workers)

    check_resume(loader, break_epoch=0, break_after=3)
    check_resume(loader, break_epoch=1, break_after=2)


def check_elastic_workers(make: Callable[..., StreamingDataset]) -> None:
    """Saved with 2 workers, resumed with none: the rest of the epoch, in the uninterrupted order."""
    reference = batch_ids(list(StreamingDataLoader(make(shuffle=True), batch_size=4, num_workers=2)))
    loader = StreamingDataLoader(make(shuffle=True), batch_size=4, num_workers=2)
    it = iter(loader)
    head = batch_ids([next(it) for _ in range(3)])
    state = loader.state_dict()
    del it
    resumed = StreamingDataLoader(make(shuffle=True), batch_size=4, num_workers=0)
    resumed.load_state_dict(state)
    assert head + batch_ids(list(resumed)) == reference


def check_picklable(path: str, key: str) -> None:
    """A dataset pickles (spawned DataLoader workers, ddp_spawn) and the copy reads the same samples."""
    ds = StreamingDataset(path)
    first = ds[len(ds) - 1][key]  # opened shards in the original must not travel
    clone = pickle.loads(pickle.dumps(ds))
    assert [clone[i][key] for i in range(len(ds))] == [ds[i][key] for i in range(len(ds))]
    assert clone[len(ds) - 1][key] == first


def check_mixed(
    make: Callable[..., StreamingDataset], n: int, other: StreamingDataset, other_ids: set[int]
) -> None:
    mix = CombinedStreamingDataset([make(shuffle=True), other], seed=3, iterate_over_all=True)
    got = batch_ids(list(StreamingDataLoader(mix, batch_size=4, num_workers=2)))
    assert sorted(got) == sorted(list(range(n)) + sorted(other_ids))


def _id_of(sample: dict, key: str) -> dict:
    return {"id": sample[key]}


class ProductTests:
    """The checks above as tests, for one format's module: a subclass (``class TestProduct(ProductTests)``)
    sets ``n`` (the dataset's samples) and ``key`` (the field holding a sample's id) and defines the fixture
    ``path`` (the dataset folder). ``make(**kw)`` builds datasets whose samples are ``{"id": sample[key]}``;
    a subclass overrides the fixture when ids come from elsewhere."""

    n: int
    key: str

    @pytest.fixture()
    def make(self, path: str) -> Callable[..., StreamingDataset]:
        return functools.partial(StreamingDataset, path, transform=functools.partial(_id_of, key=self.key))

    def test_shuffles(self, make):
        check_shuffled(make, self.n)

    def test_exactly_once_over_ranks_and_workers(self, make, monkeypatch):
        check_exactly_once(make, self.n, monkeypatch)

    def test_resumes_mid_epoch(self, make):
        check_resume_mid_epoch(make)

    def test_mixes_with_a_litdata_dataset(self, make, litdata_dir):
        other = StreamingDataset(litdata_dir, shuffle=True)
        check_mixed(make, self.n, other, {10_000 + i for i in range(OTHER_N)})

    def test_resumes_with_another_number_of_workers(self, make):
        check_elastic_workers(make)

    def test_pickles_for_spawned_workers(self, path):
        check_picklable(path, self.key)
