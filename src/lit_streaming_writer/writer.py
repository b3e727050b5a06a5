"""ChunkWriter: samples in, chunk files out (one writer per worker process; the worker's ``RankWriter``
publishes them and writes its partial index)."""

from __future__ import annotations

import os
from typing import Any

from lit_streaming.errors import LitStreamingError, LitStreamingValueError
from lit_streaming.format import compression as zstd
from lit_streaming.format import pytree
from lit_streaming.format.chunk import checksum, encode_chunk
from lit_streaming.format.index import FORMAT_VERSION, ChunkEntry, DatasetIndex
from lit_streaming.format.items import encode_pytree_item
from lit_streaming.format.serializers import same_column, serialize_leaf


class SampleStructureError(ValueError, LitStreamingError):
    """A sample whose structure or leaf types differ from the first sample of the dataset."""


def _compatible(first: str, other: str) -> bool:
    # As LitData: JPEG-backed and plain PIL images share a column, and so do image/video/audio/file leaves
    # whose file extensions differ (the column keeps the first sample's name; reading ignores it).
    return same_column(first, other)


class ChunkWriter:
    """Packs serialized samples into chunk files of at most ``chunk_bytes`` bytes or ``chunk_size`` items
    (tokens, for the TokensLoader), cutting before the item that would overflow; an oversized item gets a chunk
    of its own. Files are published by rename, so a crash never leaves a half-written chunk under its name."""

    def __init__(
        self,
        output_dir: str,
        rank: int = 0,
        chunk_size: int | None = None,
        chunk_bytes: int | None = None,
        compression: str | None = None,
        tokens: bool = False,
        first_chunk_index: int = 0,
        expected: DatasetIndex | None = None,
    ) -> None:
        if (chunk_size is None) == (chunk_bytes is None):
            raise LitStreamingValueError("Pass exactly one of `chunk_size` or `chunk_bytes`")
        zstd.parse_compression(compression)
        self.output_dir = output_dir
        self.rank = rank
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes
        self.compression = compression
        self.tokens = tokens
        self._next_chunk = first_chunk_index
        self._items: list[bytes] = []
        self._dims: list[int] = []
        self._bytes = 8
        self._data_format: list[str] | None = list(expected.data_format) if expected else None
        self._spec_json: str | None = expected.config.get("data_spec") if expected else None
        self._spec = pytree.loads(self._spec_json) if self._spec_json else None
        self.chunks: list[ChunkEntry] = []

    def add(self, sample: Any, where: str) -> None:
        """Serialize and buffer one sample; ``where`` names its input in error messages."""
        leaves, spec = pytree.flatten(sample)
        payloads, formats = [], []
        for leaf in leaves:
            data, fmt = serialize_leaf(leaf)
            payloads.append(data)
            formats.append(fmt)
        self._check_structure(sample, spec, formats, where)
        if self.tokens:
            if len(leaves) != 1 or formats[0].split(":")[0] not in ("no_header_numpy", "no_header_tensor"):
                raise SampleStructureError(
                    f"{where}: TokensLoader samples must be one 1-D numpy array or tensor of tokens, got {formats}"
                )
            item = bytes(payloads[0])
            dim = int(leaves[0].shape[0])
        else:
            item = encode_pytree_item(payloads)
            dim = 1
        if self._items and self._would_overflow(len(item), dim):
            self.flush()
        self._items.append(item)
        self._dims.append(dim)
        self._bytes += 4 + len(item)

    def _would_overflow(self, size: int, dim: int) -> bool:
        if self.chunk_bytes is not None:
            return self._bytes + 4 + size > self.chunk_bytes
        return sum(self._dims) + dim > self.chunk_size  # type: ignore[operator]

    def _check_structure(self, sample: Any, spec: Any, formats: list[str], where: str) -> None:
        if self._data_format is None:
            self._data_format = formats
            self._spec = spec
            self._spec_json = pytree.dumps(spec)
            return
        if spec is not self._spec and spec != self._spec:
            raise SampleStructureError(
                f"{where}: sample structure differs from the first sample: {pytree.describe_mismatch(self._spec, spec)}"
            )
        for i, (a, b) in enumerate(zip(self._data_format, formats)):
            if not _compatible(a, b):
                raise SampleStructureError(
                    f"{where}: field {pytree.leaf_path(sample, i)} is {b!r} but the first sample's is {a!r}"
                )

    def flush(self) -> None:
        if not self._items:
            return
        raw = encode_chunk(self._items)
        stored = zstd.compress(raw, self.compression) if self.compression else raw
        # LitData names whole-file compressed chunks after the full compression string
        # ("chunk-0-0.zstd:3.bin") and its reader strips exactly ".{compression}" to find the decompressed
        # file: use the same names.
        suffix = f".{self.compression}" if self.compression else ""
        filename = f"chunk-{self.rank}-{self._next_chunk}{suffix}.bin"
        path = os.path.join(self.output_dir, filename)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(stored)
        os.replace(tmp, path)
        self.chunks.append(
            ChunkEntry(
                filename=filename,
                chunk_size=len(self._items),
                chunk_bytes=len(raw),
                dim=sum(self._dims) if self.tokens else None,
                checksum=checksum(stored),
                file_bytes=len(stored),
            )
        )
        self._next_chunk += 1
        self._items, self._dims, self._bytes = [], [], 8

    def config(self) -> dict[str, Any]:
        return {
            "chunk_bytes": self.chunk_bytes,
            "chunk_size": self.chunk_size,
            "compression": self.compression,
            "data_format": self._data_format,
            "data_spec": self._spec_json,
            "encryption": None,
            "format_version": FORMAT_VERSION,
            "item_loader": "TokensLoader" if self.tokens else "PyTreeLoader",
        }
