"""Fixtures for storage unit tests: a unique ``memory://`` location (fsspec's in-process file system)."""

from __future__ import annotations

import uuid

import fsspec
import pytest


@pytest.fixture()
def memory_url():
    """A fresh ``memory://`` folder URL, removed afterwards."""
    root = f"/lit-streaming-tests/{uuid.uuid4().hex[:12]}"
    yield f"memory:/{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
