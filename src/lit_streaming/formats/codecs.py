"""Whole-file codecs a shard may be stored under, undone with the output bounded by the size the index
records (a forged shard cannot make us allocate more than its index admits).

Names are MosaicML Streaming's (``zstd``, ``gz``, ``bz2``, ``br``, ``snappy``, each optionally ``:LEVEL``);
``br`` and ``snappy`` need optional packages and fail with an error naming the extra when missing.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Callable

from lit_streaming.formats.base import CorruptShardError, missing_extra

Buffer = bytes | bytearray | memoryview


def codec_name(spec: str | None) -> str | None:
    """``"zstd:7"`` -> ``"zstd"``; ``None``/``""`` -> ``None``."""
    if not spec:
        return None
    return str(spec).split(":", 1)[0].strip().lower()


_PIECE = 8 << 20


def _zstd(data: Buffer, limit: int | None, what: str) -> bytes:
    """Inflated in pieces, so memory follows the bytes actually produced (never a buffer of the size the
    index claims), and stops one byte past ``limit``."""
    import zstandard

    declared = zstandard.frame_content_size(bytes(data[:18]))
    if limit is not None and declared >= 0 and declared != limit:
        raise CorruptShardError(f"{what}: zstd frame declares {declared} bytes, the index records {limit}")
    reader = zstandard.ZstdDecompressor().stream_reader(bytes(data), read_across_frames=True)
    parts, total = [], 0
    while limit is None or total <= limit:
        piece = reader.read(_PIECE if limit is None else min(_PIECE, limit + 1 - total))
        if not piece:
            break
        parts.append(piece)
        total += len(piece)
    if limit is not None and total > limit:
        raise CorruptShardError(f"{what}: zstd data inflates past the {limit} bytes the index records")
    return b"".join(parts)


def _gz(data: Buffer, limit: int | None, what: str) -> bytes:
    d = zlib.decompressobj(wbits=31)  # gzip container
    out = d.decompress(data, (limit + 1) if limit is not None else 0)
    if limit is not None and len(out) > limit:
        raise CorruptShardError(f"{what}: gzip data inflates past the {limit} bytes the index records")
    if not d.eof:
        raise CorruptShardError(f"{what}: gzip data is truncated")
    return out


def _bz2(data: Buffer, limit: int | None, what: str) -> bytes:
    d = bz2.BZ2Decompressor()
    out = d.decompress(data, (limit + 1) if limit is not None else -1)
    if limit is not None and len(out) > limit:
        raise CorruptShardError(f"{what}: bz2 data inflates past the {limit} bytes the index records")
    if not d.eof:
        raise CorruptShardError(f"{what}: bz2 data is truncated")
    return out


def _br(data: Buffer, limit: int | None, what: str) -> bytes:
    try:
        import brotli
    except ImportError:
        raise missing_extra(f"{what} (compressed with 'br')", "brotli", "mds") from None
    d = brotli.Decompressor()
    try:  # brotli >= 1.2 bounds the output; older versions decompress whole and are checked after
        out = d.process(bytes(data), output_buffer_limit=(limit + 1) if limit is not None else None)
    except TypeError:
        out = d.process(bytes(data))
    if limit is not None and len(out) > limit:
        raise CorruptShardError(f"{what}: brotli data inflates past the {limit} bytes the index records")
    return out


def _snappy(data: Buffer, limit: int | None, what: str) -> bytes:
    try:
        import snappy
    except ImportError:
        raise missing_extra(f"{what} (compressed with 'snappy')", "python-snappy", "mds") from None
    declared = _snappy_length(data, what)
    if limit is not None and declared > limit:
        raise CorruptShardError(
            f"{what}: snappy header declares {declared} bytes, more than the {limit} the index records"
        )
    return snappy.decompress(bytes(data))


def _snappy_length(data: Buffer, what: str) -> int:
    """A raw snappy block starts with its uncompressed length as a little-endian base-128 varint."""
    value = shift = 0
    for pos in range(min(len(data), 10)):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    raise CorruptShardError(f"{what}: snappy data has no valid length header")


_CODECS: dict[str, Callable[[Buffer, int | None, str], bytes]] = {
    "zstd": _zstd,
    "gz": _gz,
    "bz2": _bz2,
    "br": _br,
    "snappy": _snappy,
}


def known_codec(spec: str | None) -> bool:
    name = codec_name(spec)
    return name is None or name in _CODECS


def decompress(data: Buffer, spec: str, expected_size: int | None, what: str) -> bytes:
    """Undo ``spec`` on ``data``; the result must be exactly ``expected_size`` bytes when that is known."""
    name = codec_name(spec)
    codec = _CODECS.get(name or "")
    if codec is None:
        raise CorruptShardError(f"{what}: unknown compression {spec!r} (known: {sorted(_CODECS)})")
    try:
        out = codec(data, expected_size, what)
    except (CorruptShardError, ImportError):
        raise
    except Exception as err:  # each library raises its own error type for corrupt input
        raise CorruptShardError(f"{what}: {name} data is corrupt ({err})") from err
    if expected_size is not None and len(out) != expected_size:
        raise CorruptShardError(
            f"{what}: decompressed to {len(out)} bytes, the index records {expected_size}"
        )
    return out
