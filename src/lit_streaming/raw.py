"""StreamingRawDataset: stream raw files (images, audio, text...) from a folder or bucket without optimizing.

LitData 0.2.76's class of the same name, on our fsspec storage: the files under ``input_dir`` are listed once
(cached as a small JSON listing in the cache folder for remote URLs, rebuilt with ``recompute_index=True``),
``setup(files)`` turns the listing into items (one file, or a list of files, per item), and ``ds[i]`` reads
item i's bytes (or, with ``cache_files=True, item_type="path"``, a local copy's path) and applies
``transform``. It is a map-style dataset: any sampler, ``torch.utils.data.DataLoader`` and DDP's
``DistributedSampler`` work as for any map-style dataset. ``__getitems__`` (what DataLoader calls for a batch)
downloads a batch's files concurrently, and sequential access downloads the next ``max_prefetch`` items ahead.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
from torch.utils.data import Dataset

from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError, is_positive_int
from lit_streaming.storage import StorageSettings
from lit_streaming.storage.cache_paths import cache_root
from lit_streaming.storage.retry import call_with_retries

#: LitData's listing file name; it is never an item.
_LISTING = "index.json.zstd"
_DEFAULT_CONCURRENCY = 16


@dataclass
class FileMetadata:
    """One discovered file: its full path or URL and its size in bytes (LitData's type)."""

    path: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileMetadata:
        return cls(path=data["path"], size=data["size"])


class BaseIndexer(ABC):
    """How files are discovered (LitData's base class): a subclass implements :meth:`discover_files`; the
    listing is cached and reused by :meth:`build_or_load_index`."""

    @abstractmethod
    def discover_files(self, input_dir: str, storage_options: dict[str, Any] | None) -> list[FileMetadata]:
        """Every file of the dataset under ``input_dir``."""

    def build_or_load_index(
        self,
        input_dir: str,
        cache_dir: str | None,
        storage_options: dict[str, Any] | None,
        recompute_index: bool = False,
    ) -> list[FileMetadata]:
        """The listing, from ``cache_dir`` when one was saved there and ``recompute_index`` is False."""
        path = os.path.join(cache_dir, "files.json") if cache_dir else None
        if path and not recompute_index and os.path.exists(path):
            with open(path) as f:
                return [FileMetadata.from_dict(d) for d in json.load(f)]
        files = self.discover_files(input_dir, storage_options)
        if not files:
            raise LitStreamingValueError(f"StreamingRawDataset: no files found under {input_dir}")
        if path:
            os.makedirs(cache_dir, exist_ok=True)  # type: ignore[arg-type]
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump([fm.to_dict() for fm in files], f)
            os.replace(tmp, path)
        return files


class FileIndexer(BaseIndexer):
    """Lists the files under a folder or URL, up to ``max_depth`` levels, keeping ``extensions`` only (e.g.
    ``[".jpg", ".png"]``, case-insensitive; all files when empty), sorted by path."""

    def __init__(self, max_depth: int = 5, extensions: list[str] | None = None) -> None:
        if not is_positive_int(max_depth):
            raise LitStreamingValueError(f"`max_depth` must be an int >= 1, got {max_depth!r}")
        self.max_depth = max_depth
        self.extensions = [ext.lower() for ext in (extensions or [])]

    def discover_files(self, input_dir: str, storage_options: dict[str, Any] | None) -> list[FileMetadata]:
        fs, root = fsspec.core.url_to_fs(input_dir, **(storage_options or {}))
        if not fs.exists(root):
            raise FileNotFoundError(f"StreamingRawDataset: `input_dir` {input_dir} does not exist")
        found = fs.find(root, maxdepth=self.max_depth, detail=True, withdirs=False)
        remote = "://" in input_dir and not input_dir.startswith("file://")
        files = []
        for name, info in sorted(found.items()):
            if info.get("type", "file") != "file" or not self._include(name):
                continue
            files.append(
                FileMetadata(fs.unstrip_protocol(name) if remote else name, int(info.get("size") or 0))
            )
        return files

    def _include(self, path: str) -> bool:
        base = path.rsplit("/", 1)[-1]
        if base == _LISTING:
            return False
        return not self.extensions or os.path.splitext(base)[1].lower() in self.extensions


class StreamingRawDataset(Dataset):
    """Items built from the raw files under ``input_dir`` (override :meth:`setup` to group or filter them).

    Args:
        input_dir: a local folder or an fsspec URL (``s3://bucket/images/``).
        cache_dir: where remote listings (and, with ``cache_files``, downloaded files) are kept; default
            ``$LIT_STREAMING_CACHE_DIR`` or ``~/.cache/lit_streaming``, in a folder per ``input_dir``.
        indexer: lists the files (default :class:`FileIndexer`; ``FileIndexer(extensions=[".jpg"])`` filters).
        storage_options: passed to fsspec for this dataset (endpoint_url, key, secret, anon...).
        cache_files: keep downloaded remote files on local disk and read them from there next time.
        recompute_index: list the files again instead of using the saved listing.
        transform: applied to each item: ``bytes`` (or ``list[bytes]``), or the local path(s) with
            ``item_type="path"``.
        max_concurrent_downloads: files downloaded at once per process (default 16).
        max_prefetch: items downloaded ahead of sequential reads (0: off).
        prefetch_cache_size: prefetched items kept at most (default ``2 * max_prefetch``).
        item_type: ``"bytes"`` or ``"path"`` (needs ``cache_files=True``; local folders give their own paths).
        download_timeout: the longest a batch's downloads may take, in seconds (0: no limit).
        hedge_delay, range_parallel_threshold, range_chunk_size: LitData's request tuning; accepted, no effect
            here (fsspec issues one request per file, retried with backoff on transient errors).
    """

    def __init__(
        self,
        input_dir: str,
        cache_dir: str | None = None,
        indexer: BaseIndexer | None = None,
        storage_options: dict | None = None,
        cache_files: bool = False,
        recompute_index: bool = False,
        transform: Callable[[Any], Any] | None = None,
        max_concurrent_downloads: int | None = None,
        max_prefetch: int = 16,
        prefetch_cache_size: int | None = None,
        item_type: Literal["bytes", "path"] = "bytes",
        hedge_delay: float = 0.0,
        download_timeout: float = 120.0,
        range_parallel_threshold: int = 0,
        range_chunk_size: int = 8 * 1024 * 1024,
    ) -> None:
        if item_type not in ("bytes", "path"):
            raise LitStreamingValueError(f"`item_type` must be 'bytes' or 'path', got {item_type!r}")
        if item_type == "path" and not cache_files:
            raise LitStreamingValueError("`item_type='path'` requires `cache_files=True`")
        if max_concurrent_downloads is not None and not is_positive_int(max_concurrent_downloads):
            raise LitStreamingValueError(
                f"`max_concurrent_downloads` must be None or an int >= 1, got {max_concurrent_downloads!r}"
            )
        if transform is not None and not callable(transform):
            raise LitStreamingValueError(f"`transform` must be callable, got {transform!r}")
        self.input_dir = os.fspath(input_dir)
        self.remote = "://" in self.input_dir and not self.input_dir.startswith("file://")
        self.storage_options = dict(storage_options or {})
        self.cache_files = bool(cache_files)
        self.item_type = item_type
        self.transform = transform
        self.max_concurrent_downloads = max_concurrent_downloads or _DEFAULT_CONCURRENCY
        self.max_prefetch = max(0, int(max_prefetch))
        default_lru = 2 * self.max_prefetch
        self.prefetch_cache_size = max(
            0, int(default_lru if prefetch_cache_size is None else prefetch_cache_size)
        )
        self.hedge_delay = max(0.0, float(hedge_delay))
        self.download_timeout = max(0.0, float(download_timeout))
        self.range_parallel_threshold = range_parallel_threshold
        self.range_chunk_size = range_chunk_size
        digest = hashlib.sha256(f"{self.storage_options.get('endpoint_url', '')}\n{self.input_dir}".encode())
        self.cache_dir = os.path.join(cache_root(cache_dir), f"raw-{digest.hexdigest()[:16]}")
        self.indexer = indexer or FileIndexer()
        self.files: list[FileMetadata] = self.indexer.build_or_load_index(
            self.input_dir, self.cache_dir if self.remote else None, self.storage_options, recompute_index
        )
        self.items: list[FileMetadata] | list[list[FileMetadata]] = self.setup(self.files)
        if not isinstance(self.items, list):
            raise LitStreamingTypeError(f"setup() must return a list, returned {type(self.items).__name__}")
        self._runtime: _Runtime | None = None

    def setup(self, files: list[FileMetadata]) -> list[FileMetadata] | list[list[FileMetadata]]:
        """The dataset's items from the discovered files: each file (default), or lists of files per item.
        Override it to group (e.g. an image with its mask) or filter."""
        return files

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"Index {index} out of range for {self.input_dir} with {len(self)} items")
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """Items ``indices``, their files downloaded concurrently (what DataLoader calls for a batch)."""
        runtime = self._get_runtime()
        futures = [runtime.item(self, i) for i in indices]
        if indices and self.max_prefetch and _sequential(indices):
            for i in range(indices[-1] + 1, min(len(self), indices[-1] + 1 + self.max_prefetch)):
                runtime.prefetch(self, i)
        timeout = self.download_timeout or None
        out = []
        for i, future in zip(indices, futures):
            try:
                data = future.result(timeout=timeout)
            except FutureTimeout as err:
                raise TimeoutError(
                    f"StreamingRawDataset: item {i} ({_paths(self.items[i])}) not downloaded within "
                    f"download_timeout={self.download_timeout}s"
                ) from err
            out.append(self.transform(data) if self.transform is not None else data)
        return out

    # ---- reading -----------------------------------------------------------------------------------------------
    def _get_runtime(self) -> _Runtime:
        # Threads do not survive fork: a DataLoader worker builds its own pool.
        if self._runtime is None or self._runtime.pid != os.getpid():
            self._runtime = _Runtime(self.max_concurrent_downloads, self.prefetch_cache_size)
        return self._runtime

    def load_item(self, index: int) -> Any:
        """Item ``index``'s data (bytes or path; a list for a grouped item), without the transform."""
        item = self.items[index]
        if isinstance(item, FileMetadata):
            return self.load_file(item)
        if isinstance(item, (list, tuple)):
            return [self.load_file(fm) for fm in item]
        raise LitStreamingTypeError(
            f"item {index} from setup() is a {type(item).__name__}, expected FileMetadata or a list"
        )

    def load_file(self, fm: FileMetadata) -> bytes | str:
        if not self.remote:
            path = fm.path.removeprefix("file://")
            if self.item_type == "path":
                return path
            with open(path, "rb") as f:
                return f.read()
        if self.cache_files:
            local = self._cached(fm)
            if self.item_type == "path":
                return local
            with open(local, "rb") as f:
                return f.read()
        return self._download(fm.path)

    def _download(self, url: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        return call_with_retries(lambda: fs.cat_file(path), url, StorageSettings(), random.Random())

    def _cached(self, fm: FileMetadata) -> str:
        """A local copy of ``fm`` in the cache (written once, atomically; a size mismatch is fetched again)."""
        rel = fm.path.split("://", 1)[-1].lstrip("/")
        local = os.path.normpath(os.path.join(self.cache_dir, "files", rel))
        if not local.startswith(os.path.join(self.cache_dir, "files") + os.sep):
            raise LitStreamingValueError(
                f"StreamingRawDataset: {fm.path} would be cached outside {self.cache_dir}"
            )
        if os.path.exists(local) and (fm.size <= 0 or os.path.getsize(local) == fm.size):
            return local
        data = self._download(fm.path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, local)
        return local

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runtime"] = None
        return state


def _sequential(indices: list[int]) -> bool:
    return all(b == a + 1 for a, b in zip(indices, indices[1:]))


def _paths(item: Any) -> str:
    if isinstance(item, FileMetadata):
        return item.path
    return ", ".join(fm.path for fm in item)


class _Runtime:
    """One process's download pool and its bounded table of prefetched items."""

    def __init__(self, threads: int, keep: int) -> None:
        self.pid = os.getpid()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="raw-download")
        self.keep = keep
        self.ahead: OrderedDict[int, Future] = OrderedDict()
        self.lock = threading.Lock()

    def item(self, ds: StreamingRawDataset, index: int) -> Future:
        with self.lock:
            future = self.ahead.pop(index, None)
        return future if future is not None else self.pool.submit(ds.load_item, index)

    def prefetch(self, ds: StreamingRawDataset, index: int) -> None:
        if self.keep == 0:
            return
        with self.lock:
            if index in self.ahead:
                return
            self.ahead[index] = self.pool.submit(ds.load_item, index)
            while len(self.ahead) > self.keep:
                self.ahead.popitem(last=False)[1].cancel()
