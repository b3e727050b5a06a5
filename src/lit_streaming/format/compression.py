"""Whole-file chunk compression ("zstd" or "zstd:LEVEL"), as LitData writes it."""

from __future__ import annotations

import zstandard

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
