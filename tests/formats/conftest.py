"""Fixtures for the format tests: a LitData dataset to mix with, and a remote (memory://) location."""

from __future__ import annotations

import uuid

import fsspec
import pytest
from _product import OTHER_N

from lit_streaming_writer import optimize


def _other(i: int) -> dict:
    return {"id": 10_000 + i}


@pytest.fixture(scope="session")
def litdata_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("litdata_other")
    optimize(_other, list(range(OTHER_N)), str(out), chunk_size=5, num_workers=1)
    return str(out)


@pytest.fixture()
def memory_url():
    root = f"/lit-streaming-format-tests/{uuid.uuid4().hex[:12]}"
    yield f"memory:/{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
