"""Profiling as LitData's README documents it: ``profile_batches`` writes ``result.json`` (Chrome trace) in the
working directory unless ``profile_dir`` is given, ``True`` traces the whole run, ``profile_skip_batches`` skips
the first batches, ``profile_cprofile`` writes cProfile stats; our worker fetch/decode spans and the main
process's waits are in the trace."""

from __future__ import annotations

import json
import os
import pstats

import numpy as np
import pytest

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize


def _sample(i: int) -> dict:
    return {"i": i, "x": np.full(16, i, np.float32)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof_ds")
    optimize(_sample, list(range(120)), str(out), chunk_size=10, num_workers=1)
    return str(out)


def _events(path: str) -> list[dict]:
    with open(path) as f:
        trace = json.load(f)
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


@pytest.mark.parametrize("workers", [0, 2])
def test_chrome_trace(data_dir, tmp_path, workers):
    loader = StreamingDataLoader(
        StreamingDataset(data_dir, shuffle=True),
        batch_size=8,
        num_workers=workers,
        profile_batches=4,
        profile_dir=str(tmp_path),
    )
    ids = [i for batch in loader for i in batch["i"].tolist()]
    assert sorted(ids) == list(range(120))  # profiling changes nothing about what is yielded
    assert loader.profile_trace == str(tmp_path / "result.json")
    events = _events(loader.profile_trace)
    names = {e["name"] for e in events}
    assert {"fetch", "decode", "sample", "wait_for_batch"} <= names
    assert sum(e["name"] == "wait_for_batch" for e in events) == 4
    assert sum(e["name"] == "sample" for e in events) == 4 * 8
    assert len({e["pid"] for e in events}) == (1 if workers == 0 else 3)
    assert all(e["dur"] >= 0 and e["ts"] > 0 for e in events)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".worker")]  # worker files merged away


def test_readme_default_is_result_json_in_cwd_and_true_traces_whole_run(data_dir, tmp_path, monkeypatch):
    # LitData README: StreamingDataLoader(dataset, profile_batches=True) -> result.json in the working directory.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "result.json").write_text("stale trace of an earlier run")
    loader = StreamingDataLoader(
        StreamingDataset(data_dir), batch_size=8, num_workers=2, profile_batches=True
    )
    assert not os.path.exists(tmp_path / "result.json")  # LitData removes an old trace before starting
    for _ in range(2):  # two epochs: the whole run is in the one file
        assert sum(1 for _ in loader) == 15
    assert os.path.exists(tmp_path / "result.json")
    events = _events(str(tmp_path / "result.json"))
    assert sum(e["name"] == "wait_for_batch" for e in events) == 2 * 15
    assert sum(e["name"] == "sample" for e in events) == 2 * 120
    assert sorted(e["args"]["sample"] for e in events if e["name"] == "sample") == sorted(
        2 * list(range(120))
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_batches(data_dir, tmp_path, workers):
    loader = StreamingDataLoader(
        StreamingDataset(data_dir),
        batch_size=8,
        num_workers=workers,
        profile_batches=3,
        profile_skip_batches=5,
        profile_dir=str(tmp_path),
    )
    assert sum(1 for _ in loader) == 15
    events = _events(loader.profile_trace)
    assert sorted(e["args"]["batch"] for e in events if e["name"] == "wait_for_batch") == [5, 6, 7]
    # batches 5..7 of an unshuffled loader hold samples 40..63
    assert sorted(e["args"]["sample"] for e in events if e["name"] == "sample") == list(range(40, 64))


def test_cprofile_outputs(data_dir, tmp_path):
    loader = StreamingDataLoader(
        StreamingDataset(data_dir),
        batch_size=8,
        num_workers=2,
        profile_cprofile=True,
        profile_dir=str(tmp_path),
    )
    assert sum(1 for _ in loader) == 15
    for stem in ("cprofile_main", "cprofile_worker0"):
        assert os.path.getsize(tmp_path / f"{stem}.txt") > 0
        stats = pstats.Stats(str(tmp_path / f"{stem}.prof"))
        assert stats.total_calls > 0
    assert not os.path.exists(tmp_path / "result.json")  # cProfile alone traces nothing


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"profile_batches": -1}, "profile_batches"),
        ({"profile_batches": 2, "profile_skip_batches": -1}, "profile_skip_batches"),
        ({"profile_cprofile": "yes"}, "profile_cprofile"),
    ],
)
def test_bad_profile_arguments_named(data_dir, kwargs, name):
    with pytest.raises(ValueError, match=name):
        StreamingDataLoader(StreamingDataset(data_dir), **kwargs)


def test_recorder_is_bounded():
    from lit_streaming.engine.profiling import TraceRecorder

    rec = TraceRecorder("p", max_events=3)
    for i in range(10):
        rec.span("s", "c", float(i), float(i + 1))
    events = rec.all_events()
    assert sum(e["ph"] == "X" for e in events) == 3
    assert events[-1]["name"] == "dropped_events" and events[-1]["args"]["dropped"] == 7
