"""File digests by algorithm name, for the checksums a format's index lists.

``xxh3_64`` is what lit-streaming writes (``crc32`` before); MosaicML MDS lists any of hashlib's algorithms and xxhash's
(``xxh32``, ``xxh64``, ``xxh128``, ``xxh3_64``, ``xxh3_128``). xxhash is optional: without it those
digests cannot be checked, and ``available`` says so, so a format can fall back to another listed hash.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import zlib
from collections.abc import Callable
from typing import Any

from lit_streaming.errors import LitStreamingValueError

# hashlib's names, as MosaicML Streaming collects them (shake_* need a length, so no index lists them)
_HASHLIB = {a for a in hashlib.algorithms_available if hasattr(hashlib, a) and not a.startswith("shake_")}
_XXHASH = ("xxh32", "xxh64", "xxh128", "xxh3_64", "xxh3_128")
# Preferred order when an index lists several digests: cheap first, all strong enough for transport damage.
PREFERENCE = ("xxh3_64", "crc32", "xxh64", "xxh3_128", "xxh128", "xxh32", "md5", "sha1", "blake2b")


def _xxhash() -> Any:
    try:
        import xxhash
    except ImportError:
        return None
    return xxhash


def known(algo: str) -> bool:
    """Whether ``algo`` is a digest name we know (available or not)."""
    return algo == "crc32" or algo in _HASHLIB or algo in _XXHASH


def available(algo: str) -> bool:
    """Whether ``algo`` can be computed in this environment."""
    if algo == "crc32" or algo in _HASHLIB:
        return True
    return algo in _XXHASH and _xxhash() is not None


def pick(algos: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The algorithm to verify with among those listed: the cheapest available one."""
    usable = [a for a in algos if available(a)]
    if not usable:
        return None
    return min(usable, key=lambda a: PREFERENCE.index(a) if a in PREFERENCE else len(PREFERENCE))


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value & 0xFFFFFFFF:08x}"


def _hasher(algo: str) -> Any:
    if algo == "crc32":
        return _Crc32()
    if algo in _HASHLIB:
        return getattr(hashlib, algo)()
    if algo in _XXHASH:
        xxhash = _xxhash()
        if xxhash is None:
            raise ImportError(f"Checking a {algo} digest needs the 'xxhash' package (pip install xxhash)")
        factory: Callable[[], Any] = getattr(xxhash, algo)
        return factory()
    raise LitStreamingValueError(f"Unknown digest algorithm {algo!r}")


def file_digest(path: str, algo: str) -> str:
    """Hex digest of the whole file, hashed through a read-only mapping: no buffer is allocated, so nothing is
    first-touched (reading a 16 MB shard in fresh 4 MB blocks took 2.5x as long as hashing its mapping)."""
    hasher = _hasher(algo)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > 0:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                hasher.update(mapped)
    return hasher.hexdigest()


def digest(data: bytes | memoryview, algo: str) -> str:
    hasher = _hasher(algo)
    hasher.update(data)
    return hasher.hexdigest()
