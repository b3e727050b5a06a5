"""The cache bound is hard: when ``max_cache_size`` cannot hold every reader's shuffle window, the window shrinks
(one warning naming the budget that would restore it), the disk stays within the bound, and resume still works."""

from __future__ import annotations

import warnings

import pytest
from support.resume import check_resume
from support.storage import CacheMonitor, chunk_names, tree_bytes, upload, write_dataset

from lit_streaming import ResumeError, StreamingDataLoader, StreamingDataset


@pytest.fixture()
def big(s3_bucket, tmp_path):
    """120 samples in 24 chunks of ~20 KB on S3."""
    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "big", n=120, chunk_size=5, size=4000)
    upload(local, f"{bucket}/big", options)
    chunk = max((local / name).stat().st_size for name in chunk_names(local))
    return f"{bucket}/big", options, tree_bytes(str(local)), chunk


def _dataset(url, options, cache, max_cache_size):
    return StreamingDataset(
        url, storage_options=options, cache_dir=cache, max_cache_size=max_cache_size, shuffle=True
    )


def test_shuffle_window_shrinks_to_the_budget_and_the_disk_bound_holds(big, tmp_path):
    url, options, dataset_bytes, chunk = big
    max_cache_size = dataset_bytes // 5  # ~4 chunks for 2 readers: 2 each, not the default 16
    cache = str(tmp_path / "cache")
    ds = _dataset(url, options, cache, max_cache_size)
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: [s["i"] for s in b])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        windows = loader.stream.fit_cache(1, 2)
    assert windows[0] < ds.shuffle_window
    shrink = [w for w in caught if "shuffle window shrinks" in str(w.message)]
    assert len(shrink) == 1 and "restores it" in str(shrink[0].message)
    with CacheMonitor(cache, entry=loader.stream.leaves()[0].cache_path) as monitor:
        ids = [i for batch in loader for i in batch]
    assert sorted(ids) == list(range(120)), "every sample exactly once under the bound"
    assert ids != sorted(ids)
    assert monitor.samples > 10
    # max_cache_size plus at most one in-flight chunk per downloading reader (2 workers)
    assert monitor.peak <= max_cache_size + 2 * chunk, (monitor.peak, max_cache_size, chunk)


def test_resume_under_a_shrunk_window_is_exact_and_a_changed_budget_is_refused(big, tmp_path):
    url, options, dataset_bytes, _ = big
    cache = str(tmp_path / "cache")

    def make(budget=dataset_bytes // 5):
        return StreamingDataLoader(_dataset(url, options, cache, budget), batch_size=4, num_workers=2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_resume(make, 0, 7, epochs=1)
        loader = make()
        it = iter(loader)
        next(it)
        state = loader.state_dict()
        del it
        with pytest.raises(ResumeError, match="shuffle windows"):
            make(dataset_bytes * 2).load_state_dict(state)
