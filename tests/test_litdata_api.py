"""StreamingDataset takes every argument of litdata 0.2.76's, with LitData's meaning (a ported script changes
only its imports): slicing, transform lists and ``transform`` overrides, ``subset``, ``max_pre_download``,
``index_path``, ``session_options``, ``max_cache_size`` forms, and the tuning arguments we accept."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
from support.resume import check_resume

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming.engine.dataset_compat import merge_session_options, storage_settings
from lit_streaming_writer import optimize

N = 53


def _sample(i: int) -> dict:
    return {"i": i, "x": np.full(3, i, np.int64)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("api_ds")
    optimize(_sample, list(range(N)), str(out), chunk_size=7, num_workers=1)
    return str(out)


def test_every_litdata_argument_is_accepted():
    litdata_dataset = pytest.importorskip("litdata.streaming.dataset")
    theirs = set(inspect.signature(litdata_dataset.StreamingDataset.__init__).parameters) - {"self"}
    ours = set(inspect.signature(StreamingDataset.__init__).parameters) - {"self"}
    assert theirs <= ours, f"missing: {sorted(theirs - ours)}"


def test_litdata_keyword_call_runs(data_dir, tmp_path):
    ds = StreamingDataset(
        input_dir=data_dir,
        cache_dir=str(tmp_path),
        item_loader=None,
        shuffle=True,
        drop_last=False,
        seed=7,
        serializers=None,
        max_cache_size="60GB",
        subsample=1.0,
        encryption=None,
        storage_options=None,
        session_options=None,
        max_pre_download=4,
        index_path=None,
        force_override_state_dict=False,
        transform=None,
        num_canonical_nodes=2,
        batch_decode="auto",
        item_shuffle_window=256,
        window_direct_io=False,
    )
    assert sorted(s["i"] for s in ds) == list(range(N))


def test_slices_are_lists_of_samples(data_dir):
    ds = StreamingDataset(data_dir)
    assert [s["i"] for s in ds[3:9]] == list(range(3, 9))
    assert [s["i"] for s in ds[:]] == list(range(N))
    assert [s["i"] for s in ds[50:]] == [50, 51, 52]
    assert [s["i"] for s in ds[::10]] == [0, 10, 20, 30, 40, 50]
    assert [s["i"] for s in ds[-2:]] == [51, 52]
    assert ds[np.int64(4)]["i"] == 4
    with pytest.raises(IndexError, match="out of range"):
        ds[N]
    with pytest.raises(TypeError, match="ints or slices"):
        ds["key"]


def test_transform_list_applied_in_order(data_dir):
    ds = StreamingDataset(data_dir, transform=[lambda s: s["i"], lambda i: i * 10, lambda i: i + 1])
    assert ds[2] == 21
    assert ds[1:3] == [11, 21]
    assert sorted(ds) == [10 * i + 1 for i in range(N)]
    assert isinstance(ds.transform, list) and len(ds.transform) == 3  # LitData keeps a list
    with pytest.raises(ValueError, match="transform"):
        StreamingDataset(data_dir, transform=[lambda s: s, "not callable"])


class Doubled(StreamingDataset):
    """LitData's documented way: override ``transform`` in a subclass."""

    def transform(self, sample):
        return sample["i"] * 2


def test_subclass_transform_is_used_by_getitem_iteration_and_loader(data_dir):
    ds = Doubled(data_dir, shuffle=True)
    assert ds[5] == 10
    assert sorted(ds) == [2 * i for i in range(N)]
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2)
    assert sorted(i for b in loader for i in b.tolist()) == [2 * i for i in range(N)]


def test_subset_like_litdata(data_dir):
    ds = StreamingDataset(data_dir, shuffle=True)
    sub = ds.subset([5, 6, 7, 20, 21, 3])
    assert len(sub) == 6
    assert [sub[j]["i"] for j in range(6)] == [5, 6, 7, 20, 21, 3]
    assert sorted(s["i"] for s in sub) == [3, 5, 6, 7, 20, 21]
    # runs of consecutive samples are one piece each, cut where a chunk (of 7) ends: 5-6 | 7 | 20 | 21 | 3
    assert sub.pieces().tolist() == [[0, 5, 7], [1, 0, 1], [2, 6, 7], [3, 0, 1], [0, 3, 4]]
    assert [s["i"] for s in ds.subset(slice(10, 40))[:]] == list(range(10, 40))
    nested = ds.subset(slice(10, 40)).subset([0, 29])
    assert [s["i"] for s in nested[:]] == [10, 39]
    assert len(ds) == N  # the original is untouched
    with pytest.raises(ValueError, match="indices"):
        ds.subset([N])


def test_subset_matches_litdata(data_dir):
    litdata = pytest.importorskip("litdata")
    indices = [1, 2, 3, 30, 31, 10, 52]
    theirs = litdata.StreamingDataset(data_dir).subset(indices)
    ours = StreamingDataset(data_dir).subset(indices)
    assert len(theirs) == len(ours)
    assert [int(theirs[j]["i"]) for j in range(len(theirs))] == [ours[j]["i"] for j in range(len(ours))]


def test_a_subset_state_does_not_resume_another_subset_of_the_same_size(data_dir):
    from lit_streaming import ResumeError

    first = StreamingDataLoader(StreamingDataset(data_dir).subset(slice(0, 20)), batch_size=4)
    it = iter(first)
    next(it)
    state = first.state_dict()
    other = StreamingDataLoader(StreamingDataset(data_dir).subset(slice(20, 40)), batch_size=4)
    with pytest.raises(ResumeError, match="subset"):
        other.load_state_dict(state)
    same = StreamingDataLoader(StreamingDataset(data_dir).subset(slice(0, 20)), batch_size=4)
    same.load_state_dict(state)
    assert sorted(i for b in same for i in b["i"].tolist()) == list(range(4, 20))
    check_resume(
        lambda: StreamingDataLoader(
            StreamingDataset(data_dir, shuffle=True).subset(slice(0, 20)), batch_size=4
        ),
        break_epoch=0,
        break_after=2,
    )


def test_max_pre_download_sizes_the_prefetch_depth():
    assert storage_settings(None) is None
    assert storage_settings(3).prefetch_chunks == 3
    with pytest.raises(ValueError, match="max_pre_download"):
        storage_settings(0)


def test_max_pre_download_reaches_the_remote_source(data_dir, tmp_path):
    ds = StreamingDataset(f"local:{data_dir}", cache_dir=str(tmp_path), max_pre_download=3)
    assert ds.storage_settings.prefetch_chunks == 3
    assert sorted(s["i"] for s in ds) == list(range(N))


def test_index_path_file_or_folder(data_dir, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(data_dir, folder)
    index_dir = tmp_path / "elsewhere"
    index_dir.mkdir()
    shutil.move(str(folder / "index.json"), index_dir / "index.json")
    for index_path in (str(index_dir), str(index_dir / "index.json")):
        ds = StreamingDataset(str(folder), index_path=index_path)
        assert sorted(s["i"] for s in ds) == list(range(N))
    with pytest.raises(FileNotFoundError, match="index_path"):
        StreamingDataset(str(folder), index_path=str(tmp_path / "missing.json"))


def test_session_options_become_s3fs_options():
    merged = merge_session_options(
        {"endpoint_url": "http://x"}, {"profile_name": "dev", "region_name": "eu-west-1"}
    )
    assert merged == {
        "endpoint_url": "http://x",
        "profile": "dev",
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    with pytest.raises(ValueError, match="session_options"):
        merge_session_options(None, {"botocore_session": object()})


def test_max_cache_size_forms(data_dir):
    assert StreamingDataset(data_dir, max_cache_size="2GB").max_cache_size == 2 * 10**9
    assert StreamingDataset(data_dir, max_cache_size=None).max_cache_size > 0  # LitData: share of free disk
    assert StreamingDataset(data_dir, max_cache_size=0.5).max_cache_size > 0
    with pytest.raises(ValueError, match="max_cache_size"):
        StreamingDataset(data_dir, max_cache_size=1.5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"serializers": {"custom": object()}}, "serializers"),
        ({"encryption": object()}, "encryption"),
        ({"window_direct_io": True}, "window_direct_io"),
        ({"num_canonical_nodes": 0}, "num_canonical_nodes"),
        ({"batch_decode": "sometimes"}, "batch_decode"),
        ({"item_shuffle_window": -1}, "item_shuffle_window"),
        ({"force_override_state_dict": "yes"}, "force_override_state_dict"),
        ({"max_pre_download": -2}, "max_pre_download"),
    ],
)
def test_bad_or_unsupported_arguments_are_named(data_dir, kwargs, name):
    with pytest.raises(ValueError, match=name):
        StreamingDataset(data_dir, **kwargs)


def test_unknown_index_keys_do_not_matter_for_index_path(data_dir, tmp_path):
    with open(f"{data_dir}/index.json") as f:
        index = json.load(f)
    index["config"]["extra_key"] = 1
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert len(StreamingDataset(data_dir, index_path=str(tmp_path))) == N
