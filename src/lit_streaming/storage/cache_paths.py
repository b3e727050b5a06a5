"""Where a remote dataset lives in the local cache: ``<root>/<name>-<url hash>/<index hash>/``.

The URL part keeps datasets at different URLs (or behind different endpoints) apart; the index part makes a
dataset rewritten at the same URL a new entry, so stale chunks of the old version are never read.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

CACHE_DIR_ENV = "LIT_STREAMING_CACHE_DIR"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def cache_root(cache_dir: str | os.PathLike | None) -> str:
    """The ``cache_dir`` argument, else ``$LIT_STREAMING_CACHE_DIR``, else ``~/.cache/lit_streaming``."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_DIR_ENV)
    if not chosen:
        chosen = os.path.join("~", ".cache", "lit_streaming")
    return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


def dataset_dirname(url: str, storage_options: dict[str, Any]) -> str:
    """A readable, collision-free folder name for the dataset URL (and the endpoint serving it)."""
    client_kwargs = storage_options.get("client_kwargs") or {}
    endpoint = storage_options.get("endpoint_url") or client_kwargs.get("endpoint_url") or ""
    digest = hashlib.sha256(f"{endpoint}\n{url}".encode()).hexdigest()[:16]
    tail = [part for part in re.split(r"[/:]+", url) if part][-2:]
    name = _UNSAFE.sub("_", "-".join(tail))[:48] or "dataset"
    return f"{name}-{digest}"


def dataset_version(index_bytes: bytes) -> str:
    """The dataset version: a hash of its index.json (which changes whenever any chunk does)."""
    return hashlib.sha256(index_bytes).hexdigest()[:20]
