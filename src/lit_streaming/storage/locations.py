"""Which source a dataset location names: a local folder, ``file://``, ``local:/path`` or any fsspec URL."""

from __future__ import annotations

import os
from typing import Any

from lit_streaming.storage.cache_paths import cache_root
from lit_streaming.storage.local_source import LocalSource
from lit_streaming.storage.remote_files import LOCAL_PREFIX
from lit_streaming.storage.remote_source import RemoteSource
from lit_streaming.storage.settings import StorageSettings
from lit_streaming.storage.source import DatasetSource


def is_remote(location: str) -> bool:
    """True for locations read through the cache: fsspec URLs other than ``file://``, and ``local:``."""
    return location.startswith(LOCAL_PREFIX) or ("://" in location and not location.startswith("file://"))


def open_source(
    input_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    storage_options: dict[str, Any] | None = None,
    max_cache_size: int | None = None,
    settings: StorageSettings | None = None,
) -> DatasetSource:
    """A source for ``input_dir``.

    Local folders and ``file://`` URLs are read in place. ``local:/path`` (a network drive) and every other
    fsspec URL (``s3://``, ``gs://``, ``memory://``, ...) go through the cache under ``cache_dir`` (else
    ``$LIT_STREAMING_CACHE_DIR``, else ``~/.cache/lit_streaming``), holding at most ``max_cache_size`` bytes
    per dataset version. ``storage_options`` go to the fsspec filesystem of this dataset only.
    """
    location = os.fspath(input_dir)
    if is_remote(location):
        return RemoteSource(
            location, cache_root(cache_dir), storage_options, max_cache_size, settings or StorageSettings()
        )
    location = location.removeprefix("file://")
    return LocalSource(os.path.abspath(os.path.expanduser(location)))
