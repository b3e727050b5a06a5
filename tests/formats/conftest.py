"""Fixtures for the format tests: a LitData dataset to mix with (``memory_url`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest
from support.product import OTHER_N

from lit_streaming_writer import optimize


def _other(i: int) -> dict:
    return {"id": 10_000 + i}


@pytest.fixture(scope="session")
def litdata_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("litdata_other")
    optimize(_other, list(range(OTHER_N)), str(out), chunk_size=5, num_workers=1)
    return str(out)
