"""Whole-file chunk compression ("zstd" or "zstd:LEVEL"), as LitData writes it."""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from lit_streaming.format.chunk import CorruptChunkError

DEFAULT_ZSTD_LEVEL = 4


def parse_compression(name: str | None) -> tuple[str, int] | None:
    """Split ``"zstd:7"`` into ``("zstd", 7)``; ``None`` means uncompressed chunks."""
    if name is None:
        return None
    algo, _, level = str(name).partition(":")
    if algo != "zstd":
        raise ValueError(f"Unsupported compression {name!r}: use None, 'zstd' or 'zstd:LEVEL'")
    if level == "":
        return "zstd", DEFAULT_ZSTD_LEVEL
    if not level.lstrip("-").isdigit():
        raise ValueError(f"Compression level in {name!r} must be an integer")
    return "zstd", int(level)


def compress(data: bytes | memoryview, name: str) -> bytes:
    algo, level = parse_compression(name)  # type: ignore[misc]
    return zstandard.ZstdCompressor(level=level).compress(data)


def decompress(data: bytes | memoryview, name: str, expected_size: int | None, what: str) -> bytes:
    """Decompress a chunk file, bounding the output by the size recorded in the index (no zip bombs)."""
    parse_compression(name)
    try:
        dctx = zstandard.ZstdDecompressor()
        if expected_size is not None:
            out = dctx.decompress(data, max_output_size=expected_size)
        else:
            out = dctx.decompressobj().decompress(data)
    except zstandard.ZstdError as err:
        raise ValueError(f"{what}: zstd data is corrupt ({err})") from err
    if expected_size is not None and len(out) != expected_size:
        raise ValueError(f"{what}: decompressed to {len(out)} bytes, index says {expected_size}")
    return out


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
    raise ValueError(f"{what}: unknown compression_level {level!r}")


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
    dctx = zstandard.ZstdDecompressor()
    parts, next_item = [], 0
    for f in range(n_frames):
        first, count, start, clen, ulen = _FRAME.unpack_from(mv, offsets_end + f * _FRAME.size)
        end_item = first + count
        if first != next_item or end_item > n or start < table_end or start + clen > len(mv):
            raise CorruptChunkError(f"{what}: framed zstd frame {f} is invalid or truncated")
        if ulen != logical[end_item] - logical[first]:
            raise CorruptChunkError(f"{what}: framed zstd frame {f} size disagrees with the item offsets")
        raw = dctx.decompress(mv[start : start + clen], max_output_size=ulen)
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
    dctx = zstandard.ZstdDecompressor()
    bounds = offsets.tolist()
    items = [dctx.decompressobj().decompress(mv[bounds[j] : bounds[j + 1]]) for j in range(n)]
    header = np.empty(n + 2, dtype="<u4")
    header[0] = n
    header[1] = 4 * (n + 2)
    header[2:] = header[1] + np.cumsum([len(item) for item in items], dtype=np.int64)
    return b"".join([header.tobytes(), *items])
