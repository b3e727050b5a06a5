"""LitData 0.2.76 ``StreamingDataset`` arguments that have no one-line home in ``dataset.py``.

Each argument either maps onto our machinery (``max_pre_download`` sizes the prefetch depth, ``session_options``
become fsspec/s3fs options, ``index_path`` supplies the index), is checked and recorded with no effect (it
tunes LitData's own reader, see the README's "LitData compatibility: reading" table), or is refused with an
error naming it where accepting it would silently read different data (custom serializers, encryption).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError, is_positive_int
from lit_streaming.format.units import parse_size
from lit_streaming.storage import StorageSettings
from lit_streaming.storage.cache_paths import cache_root

#: LitData's ``max_cache_size=None`` rule: 75% of the free disk, leaving at least 50 GB free when possible.
_FREE_SHARE = 0.75
_KEEP_FREE = 50 * 10**9

INDEX_FILENAME = "index.json"

#: boto3 session option -> s3fs (fsspec) option
_SESSION_KEYS = {
    "profile_name": "profile",
    "aws_access_key_id": "key",
    "aws_secret_access_key": "secret",
    "aws_session_token": "token",
}


def check_unsupported(serializers: Any, encryption: Any, window_direct_io: Any) -> None:
    """Refuse what would change the bytes we decode: we cannot honour these, so we must not pretend to."""
    if serializers:
        raise LitStreamingValueError(
            f"`serializers` is not supported: lit-streaming decodes LitData's built-in serializers only "
            f"(got custom ones for {sorted(serializers)}); write the data with built-in types"
        )
    if encryption is not None:
        raise LitStreamingValueError(
            "`encryption` is not supported: lit-streaming reads unencrypted datasets only"
        )
    if not isinstance(window_direct_io, bool):
        raise LitStreamingValueError(f"`window_direct_io` must be a bool, got {window_direct_io!r}")
    if window_direct_io:
        raise LitStreamingValueError(
            "`window_direct_io=True` is not supported: it switches LitData to its read_window API over NFS "
            "O_DIRECT; lit-streaming reads local and NFS chunks through mmap"
        )


def check_tuning(
    num_canonical_nodes: Any, batch_decode: Any, item_shuffle_window: Any, force_override_state_dict: Any
) -> None:
    """Validate the LitData tuning arguments we accept without effect, so a typo still fails loudly."""
    if num_canonical_nodes is not None and not is_positive_int(num_canonical_nodes):
        raise LitStreamingValueError(
            f"`num_canonical_nodes` must be None or an int >= 1, got {num_canonical_nodes!r}"
        )
    if not (
        batch_decode in ("auto", "all")
        or isinstance(batch_decode, bool)
        or (isinstance(batch_decode, int) and batch_decode >= 0)
    ):
        raise LitStreamingValueError(
            f"`batch_decode` must be 'auto', 'all', a bool or an int >= 0, got {batch_decode!r}"
        )
    if not (
        item_shuffle_window in (None, "auto", "full")
        or (
            isinstance(item_shuffle_window, int)
            and not isinstance(item_shuffle_window, bool)
            and item_shuffle_window >= 0
        )
    ):
        raise LitStreamingValueError(
            f"`item_shuffle_window` must be None, 'auto', 'full' or an int >= 0, got {item_shuffle_window!r}"
        )
    if not isinstance(force_override_state_dict, bool):
        raise LitStreamingValueError(
            f"`force_override_state_dict` must be a bool, got {force_override_state_dict!r}"
        )


def transform_list(transform: Callable[[Any], Any] | Sequence[Callable[[Any], Any]]) -> list[Callable]:
    """LitData keeps ``transform`` as a list of callables applied in order; so do we."""
    fns = list(transform) if isinstance(transform, (list, tuple)) else [transform]
    for fn in fns:
        if not callable(fn):
            raise LitStreamingValueError(
                f"`transform` must be a callable or a list of callables; found {fn!r}"
            )
    return fns


def cache_budget(max_cache_size: int | float | str | None, cache_dir: str | None) -> int:
    """Bytes for ``max_cache_size``: a size (``"50GB"``, int bytes), a fraction of the free disk under the cache
    (``0.9``), or None for LitData's default (75% of the free disk, leaving 50 GB free when possible)."""
    if isinstance(max_cache_size, float) or max_cache_size is None:
        root = cache_root(cache_dir)
        probe = root
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        free = shutil.disk_usage(probe).free
        if max_cache_size is None:
            keep = free - _KEEP_FREE
            return int(keep if keep >= _FREE_SHARE * free else _FREE_SHARE * free)
        if not 0 < max_cache_size <= 1:
            raise LitStreamingValueError(
                f"`max_cache_size` as a float is a fraction of the free disk in (0, 1], got {max_cache_size!r}"
            )
        return int(max_cache_size * free)
    return parse_size(max_cache_size, "max_cache_size")


def merge_session_options(
    storage_options: dict[str, Any] | None, session_options: dict[str, Any] | None
) -> dict[str, Any] | None:
    """LitData's boto3 ``session_options`` as s3fs options (``profile_name`` -> ``profile``, keys and token,
    ``region_name`` -> ``client_kwargs``); ``storage_options`` win where both set one."""
    if not session_options:
        return storage_options
    merged: dict[str, Any] = {}
    for key, value in session_options.items():
        if key == "region_name":
            merged.setdefault("client_kwargs", {})["region_name"] = value
        elif key in _SESSION_KEYS:
            merged[_SESSION_KEYS[key]] = value
        else:
            raise LitStreamingValueError(
                f"`session_options` key {key!r} has no fsspec equivalent; pass it in `storage_options` "
                f"(supported: {sorted([*_SESSION_KEYS, 'region_name'])})"
            )
    for key, value in (storage_options or {}).items():
        if key == "client_kwargs" and "client_kwargs" in merged:
            merged["client_kwargs"] = {**merged["client_kwargs"], **value}
        else:
            merged[key] = value
    return merged


def storage_settings(
    max_pre_download: int | None, settings: StorageSettings | None = None
) -> StorageSettings | None:
    """``settings`` (None: the defaults), with ``max_pre_download`` chunks fetched ahead of each reader (our
    ``prefetch_chunks``) when it is given."""
    if settings is not None and not isinstance(settings, StorageSettings):
        raise LitStreamingTypeError(
            f"`storage_settings` must be a StorageSettings, got {type(settings).__name__}"
        )
    if max_pre_download is None:
        return settings
    if not is_positive_int(max_pre_download):
        raise LitStreamingValueError(
            f"`max_pre_download` must be an int >= 1 (chunks), got {max_pre_download!r}"
        )
    return dataclasses.replace(settings or StorageSettings(), prefetch_chunks=max_pre_download)


class IndexOverride:
    """A dataset source whose ``index.json`` comes from ``index_path`` (LitData's argument for Parquet
    folders indexed elsewhere): a folder holding ``index.json`` or the file itself, local or any fsspec URL.
    Everything else is the wrapped source's."""

    def __init__(
        self, source: Any, index_path: str | os.PathLike, storage_options: dict[str, Any] | None
    ) -> None:
        import fsspec

        path = os.fspath(index_path)
        fs, _, (resolved,) = fsspec.get_fs_token_paths(path, storage_options=storage_options or {})
        if fs.isdir(resolved):
            path = path.rstrip("/") + "/" + INDEX_FILENAME
            resolved = resolved.rstrip("/") + "/" + INDEX_FILENAME
        try:
            with fs.open(resolved, "rb") as f:
                self._index = f.read()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"`index_path`: no index at {path}") from err
        self._index_location = path
        self._inner = source

    def read_bytes(self, name: str) -> bytes:
        return self._index if name == INDEX_FILENAME else self._inner.read_bytes(name)

    def location_of(self, name: str) -> str:
        return self._index_location if name == INDEX_FILENAME else self._inner.location_of(name)

    def list_files(self) -> dict[str, int]:
        return {**self._inner.list_files(), INDEX_FILENAME: len(self._index)}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)
