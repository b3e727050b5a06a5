"""profile_batches writes a Chrome trace with worker-side fetch/decode spans and main-process waits."""

from __future__ import annotations

import json

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
    with open(loader.profile_trace) as f:
        trace = json.load(f)
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = {e["name"] for e in events}
    assert {"fetch", "decode", "sample", "wait_for_batch"} <= names
    assert sum(e["name"] == "wait_for_batch" for e in events) == 4
    assert sum(e["name"] == "sample" for e in events) == 4 * 8
    assert len({e["pid"] for e in events}) == (1 if workers == 0 else 3)
    assert all(e["dur"] >= 0 and e["ts"] > 0 for e in events)
