"""Item payloads: the default (pytree) item is L u32 leaf sizes followed by the leaf bytes; a token item is
the raw 1-D token bytes with no header."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import numpy as np

from lit_streaming.format.chunk import CorruptChunkError

_U32 = np.dtype("<u4")


def encode_pytree_item(leaf_payloads: Sequence[bytes | memoryview]) -> bytes:
    sizes = np.fromiter((len(p) for p in leaf_payloads), dtype=_U32, count=len(leaf_payloads))
    return b"".join([sizes.tobytes(), *leaf_payloads])


def split_pytree_item(payload: memoryview, num_leaves: int, where: str) -> list[memoryview]:
    """Slice an item into its leaves without copying; the sizes are checked against the item length."""
    header = 4 * num_leaves
    if len(payload) < header:
        raise CorruptChunkError(
            f"{where}: item of {len(payload)} bytes is shorter than its {num_leaves}-leaf header"
        )
    sizes = _sizes_format(num_leaves).unpack_from(payload)  # struct, not numpy: a few leaves per sample
    if header + sum(sizes) != len(payload):
        raise CorruptChunkError(
            f"{where}: leaf sizes add up to {header + sum(sizes)} bytes but the item has {len(payload)}"
        )
    out = []
    start = header
    for size in sizes:
        out.append(payload[start : start + size])
        start += size
    return out


@functools.cache
def _sizes_format(num_leaves: int) -> struct.Struct:
    return struct.Struct(f"<{num_leaves}I")
