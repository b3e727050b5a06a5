"""Helpers shared by the writer tests (module-level functions: workers are forked, and scripts import them)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec

from lit_streaming import StreamingDataset


def read_samples(path: str | Path) -> list[Any]:
    ds = StreamingDataset(str(path))
    return [ds[i] for i in range(len(ds))]


def chunk_files(path: str | Path) -> dict[str, bytes]:
    """Every chunk of a dataset, by name in index order, with its bytes: equal dicts mean equal datasets."""
    index = json.loads((Path(path) / "index.json").read_text())
    return {c["filename"]: (Path(path) / c["filename"]).read_bytes() for c in index["chunks"]}


def download(url: str, storage_options: dict[str, Any], local: Path) -> Path:
    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    fs.invalidate_cache()  # the workers wrote there: this process's cached listing is stale
    local.mkdir(parents=True, exist_ok=True)
    for name in fs.ls(root, detail=False):
        fs.get_file(name, str(local / os.path.basename(name)))
    return local


def sample(i: int, scale: int = 1) -> dict[str, Any]:
    return {"id": i, "value": i * scale, "name": f"item-{i}"}


def samples_of(i: int, count: int = 3):
    for k in range(count):
        yield {"id": i, "k": k}


def kill_once(i: int, at: int, marker: str, log: str) -> dict[str, Any]:
    """Like ``sample`` but logs every call, and SIGKILLs its own process at input ``at`` the first time."""
    with open(log, "a") as f:
        f.write(f"{i}\n")
    if i == at and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return sample(i)


def fail_at(i: int, at: int) -> dict[str, Any]:
    if i == at:
        raise ValueError(f"cannot handle {i}")
    return sample(i)


def write_files(i: int, folder: str) -> None:
    """A ``map`` fn: one file per input, in a subfolder, so relative paths matter."""
    sub = Path(folder) / f"part-{i % 3}"
    sub.mkdir(parents=True, exist_ok=True)
    (sub / f"{i}.txt").write_text(f"input {i}\n")


def slow_sample(i: int, log: str) -> dict[str, Any]:
    """Like ``sample`` but logs every call and takes a moment, so that a test can stop the job midway."""
    with open(log, "a") as f:
        f.write(f"{i}\n")
    time.sleep(0.01)
    return sample(i)


def kill_once_map(i: int, folder: str, at: int, marker: str, log: str) -> None:
    """``write_files`` that logs every call and SIGKILLs its own process at input ``at`` the first time."""
    with open(log, "a") as f:
        f.write(f"{i}\n")
    if i == at and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    write_files(i, folder)


def calls(log: Path) -> Counter:
    return Counter(int(x) for x in log.read_text().split())
