"""Typed storage errors. Each message names the URL or file involved, so a failure deep in a DataLoader worker
still tells the user which object to look at."""

from __future__ import annotations

from lit_streaming.errors import LitStreamingError
from lit_streaming.format.chunk import CorruptChunkError


class StorageError(OSError, LitStreamingError):
    """Base class for errors raised while fetching or caching dataset files."""


class DownloadError(StorageError):
    """A remote file could not be fetched: a permanent error, or transient errors past the retry bound."""


class RemoteFileNotFoundError(DownloadError, FileNotFoundError):
    """The remote file does not exist (retrying cannot help)."""


class CacheTimeoutError(StorageError, TimeoutError):
    """A wait on the cache (a lock, or another process's download) took longer than its timeout."""


class CacheFullError(StorageError):
    """The cache cannot make room for a chunk without going past ``max_cache_size``: readers pin more chunks
    than the budget holds. The message says how much is pinned and by whom."""


class UnsafeFileError(StorageError):
    """A dataset file that must not be read: it resolves outside the dataset folder (a symlink) or is not a
    regular file (a FIFO would block ``open()`` forever)."""


class ChunkIntegrityError(CorruptChunkError):
    """A chunk's stored bytes do not match the size or checksum recorded in index.json."""
