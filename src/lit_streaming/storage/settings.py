"""Tunables of remote reading, with defaults for training jobs. Tests pass smaller ones to ``open_source``."""

from __future__ import annotations

from dataclasses import dataclass

from lit_streaming.errors import LitStreamingValueError


@dataclass(frozen=True)
class StorageSettings:
    """How hard to try and how long to wait.

    Attributes:
        download_threads: concurrent prefetch downloads per process (each DataLoader worker has its own pool).
        prefetch_chunks: how many chunks past the reader's position a process downloads ahead.
        prefetch_fraction: the share of ``max_cache_size`` a process may fill ahead of its reader, so that
            several workers prefetching at once still leave room for the chunks they are reading.
        attempts: tries per remote request before giving up on transient errors.
        backoff_s: sleep before the first retry; doubled for each further retry (with jitter), up to
            ``max_backoff_s``.
        integrity_attempts: downloads of a chunk whose bytes fail the size or checksum check before the chunk
            is reported corrupt (a second download rules out damage in transit).
        wait_timeout_s: the longest wait for a chunk another thread or process is downloading.
        lock_timeout_s: the longest wait for the cache entry's bookkeeping lock (held for milliseconds).
        room_timeout_s: the longest a reader blocked on a download waits for other readers to release chunks
            when the cache is full (then ``CacheFullError``): pins never push the cache past its bound.
        download_timeout_s: overall deadline of one download attempt (one request), however fast it goes.
        stall_timeout_s: the longest one read of a download may wait for its next bytes.
        min_throughput_bps: after ``throughput_grace_s``, a download averaging fewer bytes per second is
            abandoned and retried (a server trickling bytes would otherwise hold a reader for hours).
        throughput_grace_s: how long a download may run before ``min_throughput_bps`` is enforced (covers
            connection setup and time to first byte).
    """

    download_threads: int = 4
    prefetch_chunks: int = 8
    prefetch_fraction: float = 0.25
    attempts: int = 5
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    integrity_attempts: int = 2
    wait_timeout_s: float = 900.0
    lock_timeout_s: float = 120.0
    room_timeout_s: float = 300.0
    download_timeout_s: float = 1800.0
    stall_timeout_s: float = 120.0
    min_throughput_bps: float = 64 * 1024
    throughput_grace_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("download_threads", "prefetch_chunks", "attempts", "integrity_attempts"):
            if getattr(self, name) < 1:
                raise LitStreamingValueError(
                    f"StorageSettings.{name} must be >= 1, got {getattr(self, name)}"
                )
        for name in (
            "backoff_s",
            "max_backoff_s",
            "wait_timeout_s",
            "lock_timeout_s",
            "room_timeout_s",
            "min_throughput_bps",
            "throughput_grace_s",
        ):
            if getattr(self, name) < 0:
                raise LitStreamingValueError(
                    f"StorageSettings.{name} must be >= 0, got {getattr(self, name)}"
                )
        for name in ("download_timeout_s", "stall_timeout_s"):
            if getattr(self, name) <= 0:
                raise LitStreamingValueError(f"StorageSettings.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.prefetch_fraction <= 1:
            raise LitStreamingValueError(
                f"StorageSettings.prefetch_fraction must be in (0, 1], got {self.prefetch_fraction}"
            )
