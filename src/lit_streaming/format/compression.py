"""Whole-file chunk compression ("zstd" or "zstd:LEVEL"), as LitData writes it."""

from __future__ import annotations

import io
import struct

import numpy as np
import zstandard

from lit_streaming.errors import LitStreamingValueError
from lit_streaming.format.chunk import CorruptChunkError

DEFAULT_ZSTD_LEVEL = 4
# Inflated bytes are produced in pieces of this size, so memory grows with what the data really holds, never
# with what a header or index claims.
_PIECE = 4 << 20
# The classic layout addresses items with u32 offsets: no inflated chunk can be larger.
_MAX_CLASSIC_BYTES = 2**32 - 1
# A zip-bomb policy: zstd can expand 32768x (RLE blocks), but data that inflates past both of these is refused
# before any of it is inflated: more than MAX_INFLATE_RATIO times its compressed size *and* over INFLATE_FLOOR.
# Chunks up to INFLATE_FLOOR (LitData's default target is 64 MB) are never refused for their ratio.
MAX_INFLATE_RATIO = 1024
INFLATE_FLOOR = 256 << 20


def inflate_limit(compressed_bytes: int) -> int:
    """The most bytes ``compressed_bytes`` of zstd may inflate to before it is treated as a zip bomb."""
    return max(INFLATE_FLOOR, compressed_bytes * MAX_INFLATE_RATIO)


def parse_compression(name: str | None) -> tuple[str, int] | None:
    """Split ``"zstd:7"`` into ``("zstd", 7)``; ``None`` means uncompressed chunks."""
    if name is None:
        return None
    algo, _, level = str(name).partition(":")
    if algo != "zstd":
        raise LitStreamingValueError(f"Unsupported compression {name!r}: use None, 'zstd' or 'zstd:LEVEL'")
    if level == "":
        return "zstd", DEFAULT_ZSTD_LEVEL
    if not level.lstrip("-").isdigit():
        raise LitStreamingValueError(f"Compression level in {name!r} must be an integer")
    return "zstd", int(level)


def compress(data: bytes | memoryview, name: str) -> bytes:
    _, level = parse_compression(name)  # type: ignore[misc]
    return zstandard.ZstdCompressor(level=level).compress(data)


def decompress(data: bytes | memoryview, name: str, expected_size: int | None, what: str) -> bytes:
    """Decompress a chunk file, bounding the output by the size recorded in the index (no zip bombs).

    The frame's own content size, when it declares one, must agree with the index; output is produced in
    pieces, so a forged size never allocates more than the data really inflates to.
    """
    try:
        parse_compression(name)
    except ValueError as err:
        raise CorruptChunkError(f"{what}: {err}") from None
    limit = _MAX_CLASSIC_BYTES if expected_size is None else expected_size
    if limit > inflate_limit(len(data)):
        raise CorruptChunkError(
            f"{what}: index.json chunk_bytes {limit} is more than {MAX_INFLATE_RATIO}x the {len(data)}-byte "
            f"compressed file and over {INFLATE_FLOOR >> 20} MiB; refusing to inflate it (a zip bomb?)"
        )
    declared = _declared_size(data)
    if declared is not None and expected_size is not None and declared != expected_size:
        raise CorruptChunkError(
            f"{what}: the zstd frame declares {declared} bytes, index.json chunk_bytes says {expected_size}"
        )
    out = inflate_bounded(data, limit, what, "chunk_bytes" if expected_size is not None else "4 GiB layout")
    if expected_size is not None and len(out) != expected_size:
        raise CorruptChunkError(f"{what}: decompressed to {len(out)} bytes, index says {expected_size}")
    return out


def _declared_size(data: bytes | memoryview) -> int | None:
    """The content size a zstd frame header declares, or None (absent, or not a zstd frame at all)."""
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        return None
    return None if size < 0 else size


def inflate_bounded(data: bytes | memoryview, limit: int, what: str, field: str) -> bytes:
    """Inflate zstd ``data`` (one or more frames) to at most ``limit`` bytes, else ``CorruptChunkError`` naming
    ``what`` and the ``field`` that set the bound."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    parts: list[bytes] = []
    total = 0
    try:
        while True:
            piece = reader.read(min(_PIECE, limit - total + 1))
            if not piece:
                break
            total += len(piece)
            if total > limit:
                raise CorruptChunkError(f"{what}: zstd data inflates past {limit} bytes (its {field})")
            parts.append(piece)
    except zstandard.ZstdError as err:
        raise CorruptChunkError(f"{what}: zstd data is corrupt ({err})") from err
    return parts[0] if len(parts) == 1 else b"".join(parts)


# LitData >= 0.2.7x also compresses *inside* a ``.bin`` chunk (its default for ``compression="zstd"``):
# ``compression_level="batch"``: b"LDFZ01\0\0", u16 version, u16 flags, u32 N, u32 items per frame,
#     u32 frames, u32[N+1] item offsets relative to the uncompressed item bytes, then per frame (u32 first
#     item, u32 items, u64 file offset, u32 compressed length, u32 uncompressed length), then the frames;
# ``compression_level="sample"``: the classic header, each item payload one zstd frame.
# Both inflate to the classic chunk layout, so everything after this reads them unchanged.
_FRAMED_MAGIC = b"LDFZ01\0\0"
_FRAMED_PREFIX = struct.Struct("<8sHHIII")
_FRAME = struct.Struct("<IIQII")


def inflate_in_file(data: bytes | memoryview, level: str, what: str) -> bytes:
    """Turn a LitData in-file-compressed chunk (``level`` "batch" or "sample") into the classic layout."""
    try:
        if level == "batch":
            return _inflate_framed(memoryview(data), what)
        if level == "sample":
            return _inflate_per_item(memoryview(data), what)
    except zstandard.ZstdError as err:
        raise CorruptChunkError(f"{what}: zstd data is corrupt ({err})") from err
    raise LitStreamingValueError(f"{what}: unknown compression_level {level!r}")


def _inflate_framed(mv: memoryview, what: str) -> bytes:
    if len(mv) < _FRAMED_PREFIX.size or bytes(mv[:8]) != _FRAMED_MAGIC:
        raise CorruptChunkError(f"{what}: no LDFZ01 magic, though index.json says framed zstd ('batch')")
    _, version, _flags, n, _rows, n_frames = _FRAMED_PREFIX.unpack_from(mv)
    if version != 1:
        raise CorruptChunkError(f"{what}: framed zstd version {version} is not supported (1 is)")
    offsets_end = _FRAMED_PREFIX.size + 4 * (n + 1)
    table_end = offsets_end + _FRAME.size * n_frames
    if table_end > len(mv):
        raise CorruptChunkError(f"{what}: framed zstd header of {n} items / {n_frames} frames is truncated")
    logical = np.frombuffer(mv, dtype="<u4", count=n + 1, offset=_FRAMED_PREFIX.size).astype(np.int64)
    if logical[0] != 0 or np.any(np.diff(logical) < 0):
        raise CorruptChunkError(f"{what}: framed zstd item offsets are invalid")
    if int(logical[-1]) + 4 * (n + 2) > _MAX_CLASSIC_BYTES:
        raise CorruptChunkError(
            f"{what}: framed zstd item offsets claim {int(logical[-1])} bytes, past 4 GiB"
        )
    parts, next_item = [], 0
    for f in range(n_frames):
        first, count, start, clen, ulen = _FRAME.unpack_from(mv, offsets_end + f * _FRAME.size)
        end_item = first + count
        if first != next_item or end_item > n or start < table_end or start + clen > len(mv):
            raise CorruptChunkError(f"{what}: framed zstd frame {f} is invalid or truncated")
        if ulen != logical[end_item] - logical[first]:
            raise CorruptChunkError(f"{what}: framed zstd frame {f} size disagrees with the item offsets")
        if ulen > inflate_limit(clen):
            raise CorruptChunkError(
                f"{what}: framed zstd frame {f} claims {ulen} bytes from {clen}; refusing to inflate it"
            )
        raw = inflate_bounded(mv[start : start + clen], ulen, what, f"frame {f} uncompressed length")
        if len(raw) != ulen:
            raise CorruptChunkError(f"{what}: zstd frame {f} inflated to {len(raw)} bytes, expected {ulen}")
        parts.append(raw)
        next_item = end_item
    if next_item != n:
        raise CorruptChunkError(f"{what}: framed zstd frames cover {next_item} of {n} items")
    header = np.empty(n + 2, dtype="<u4")
    header[0] = n
    header[1:] = logical + 4 * (n + 2)
    return b"".join([header.tobytes(), *parts])


def _inflate_per_item(mv: memoryview, what: str) -> bytes:
    if len(mv) < 8:
        raise CorruptChunkError(f"{what}: truncated chunk of {len(mv)} bytes")
    n = int(np.frombuffer(mv, dtype="<u4", count=1)[0])
    if 4 * (n + 2) > len(mv):
        raise CorruptChunkError(f"{what}: header of {n} items exceeds the {len(mv)}-byte file")
    offsets = np.frombuffer(mv, dtype="<u4", count=n + 1, offset=4).astype(np.int64)
    if offsets[0] != 4 * (n + 2) or offsets[-1] > len(mv) or np.any(np.diff(offsets) < 0):
        raise CorruptChunkError(f"{what}: invalid item offsets")
    bounds = offsets.tolist()
    items, room = [], _MAX_CLASSIC_BYTES - 4 * (n + 2)
    for j in range(n):  # the layout's 4 GiB bounds the items together; the bomb policy bounds each one
        frame = mv[bounds[j] : bounds[j + 1]]
        limit = min(room, inflate_limit(len(frame)))
        declared = _declared_size(frame)
        if declared is not None and declared > limit:
            raise CorruptChunkError(
                f"{what} item {j}: its zstd frame declares {declared} bytes from {len(frame)}; refusing to inflate it"
            )
        item = inflate_bounded(frame, limit, f"{what} item {j}", "zip-bomb bound")
        room -= len(item)
        items.append(item)
    header = np.empty(n + 2, dtype="<u4")
    header[0] = n
    header[1] = 4 * (n + 2)
    header[2:] = header[1] + np.cumsum([len(item) for item in items], dtype=np.int64)
    return b"".join([header.tobytes(), *items])
