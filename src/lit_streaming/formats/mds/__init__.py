"""MosaicML Streaming's MDS format, read in place: ``index.json`` (``version: 2``, ``shards``) and
``shard.NNNNN.mds[.CODEC]`` files, as ``streaming.MDSWriter`` writes them.

A shard is ``u32 n``, ``u32 offsets[n+1]`` (absolute), the writer's JSON config, then the samples; a sample is
one u32 size per variable-size column, then the column values in column order. Compressed shards
(``zstd``, ``gz``, ``bz2``, ``br``, ``snappy``) are decompressed whole when first opened, bounded by the
uncompressed size the index records; the hashes the index lists for the stored file are verified by storage
on first open and after every download. Samples are dicts keyed by column name.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
from typing import Any

import numpy as np

from lit_streaming.formats import codecs, hashing
from lit_streaming.formats.base import (
    CorruptShardError,
    FileAccess,
    FormatError,
    FormatSpec,
    Listing,
    OpenedDataset,
    ShardEntry,
    ShardTable,
    check_relative_name,
    missing_extra,
    missing_index,
    register,
)
from lit_streaming.formats.mds.columns import UNSAFE, Decoder, decoder_for, fixed_size

NAME = "mds"
_U32 = np.dtype("<u4")
_EXTRA_PACKAGES = {"br": ("brotli", "brotli"), "snappy": ("snappy", "python-snappy")}


class Columns:
    """One shard's columns: names, decoders and which of them carry a size prefix."""

    def __init__(self, raw: dict[str, Any], where: str, allow_pickle: bool) -> None:
        names, encodings, sizes = (
            raw.get("column_names"),
            raw.get("column_encodings"),
            raw.get("column_sizes"),
        )
        if not (isinstance(names, list) and isinstance(encodings, list) and isinstance(sizes, list)):
            raise FormatError(f"{where}: column_names, column_encodings and column_sizes must be lists")
        if not (len(names) == len(encodings) == len(sizes)) or not names:
            raise FormatError(f"{where}: column_names/encodings/sizes differ in length or are empty")
        for name, encoding, size in zip(names, encodings, sizes):
            if not isinstance(name, str):
                raise FormatError(f"{where}: column name {name!r} is not a string")
            if encoding in UNSAFE and not allow_pickle:
                from lit_streaming.format.serializers import PickleNotAllowedError

                raise PickleNotAllowedError(
                    f"{where}: column {name!r} is encoded as {encoding!r}. Unpickling runs arbitrary code, so "
                    "it is refused by default; pass allow_pickle=True if you trust this dataset."
                )
            expected = fixed_size(encoding) if isinstance(encoding, str) else None
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
                raise FormatError(f"{where}: column {name!r} has invalid size {size!r}")
            if expected is not None and size != expected:
                raise FormatError(
                    f"{where}: column {name!r} ({encoding}) must have size {expected}, not {size}"
                )
        self.names: list[str] = names
        self.encodings: list[str] = encodings
        self.sizes: list[int | None] = sizes
        self.decoders: list[Decoder] = [
            decoder_for(e, f"{where} column {n!r}") for n, e in zip(names, encodings)
        ]
        self.num_variable = sum(1 for s in sizes if not s)

    def signature(self) -> tuple[Any, ...]:
        return (tuple(self.names), tuple(self.encodings), tuple(self.sizes))

    def __getstate__(self) -> dict[str, Any]:
        """Decoders are closures: rebuilt from the encodings where the reader lands (a spawned worker)."""
        state = dict(self.__dict__)
        del state["decoders"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.decoders = [decoder_for(e, f"column {n!r}") for n, e in zip(self.names, self.encodings)]


def _file_info(raw: Any, where: str) -> tuple[str, int, dict[str, str]]:
    if not isinstance(raw, dict):
        raise FormatError(f"{where} is not an object")
    name = check_relative_name(raw.get("basename"), where)
    size = raw.get("bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise FormatError(f"{where}.bytes must be a non-negative integer, got {size!r}")
    hashes = raw.get("hashes") or {}
    if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
        raise FormatError(f"{where}.hashes must map algorithm names to hex digests")
    return name, size, hashes


def _shard_entry(raw: Any, where: str) -> ShardEntry:
    if not isinstance(raw, dict):
        raise FormatError(f"{where} is not an object")
    if raw.get("format") != "mds":
        raise FormatError(
            f"{where} is a {raw.get('format')!r} shard; lit-streaming reads MDS shards only (format 'mds')"
        )
    if raw.get("version", 2) != 2:
        raise FormatError(f"{where}: shard version {raw.get('version')!r} is not supported (2 is)")
    samples = raw.get("samples")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise FormatError(f"{where}.samples must be a non-negative integer, got {samples!r}")
    raw_name, raw_bytes, raw_hashes = _file_info(raw.get("raw_data"), f"{where}.raw_data")
    compression = raw.get("compression") or None
    codec = codecs.codec_name(compression)
    if codec is not None:
        if not codecs.known_codec(compression):
            raise FormatError(f"{where}: unknown compression {compression!r}")
        module, package = _EXTRA_PACKAGES.get(codec, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise missing_extra(f"{where} (compressed with {codec!r})", package, "mds")  # type: ignore[arg-type]
        if not raw.get("zip_data"):
            raise FormatError(f"{where}: compression {compression!r} but no zip_data")
        name, stored, hashes = _file_info(raw["zip_data"], f"{where}.zip_data")
    else:
        name, stored, hashes = raw_name, raw_bytes, raw_hashes
    algo = hashing.pick(list(hashes))
    return ShardEntry(
        filename=name,
        items=samples,
        stored_bytes=stored,
        checksum=hashes[algo].lower() if algo else None,
        checksum_algo=algo,
        codec=codec,
        raw_bytes=raw_bytes,
    )


class MDSShardView:
    """The samples of one opened MDS shard (its offsets checked against the file before any slicing)."""

    __slots__ = ("buffer", "mapping", "name", "num_items", "offsets")

    def __init__(self, buffer: Any, name: str, expected_items: int) -> None:
        self.buffer = memoryview(buffer)
        self.name = name
        self.mapping: mmap.mmap | None = buffer if isinstance(buffer, mmap.mmap) else None
        size = len(self.buffer)
        if size < 8:
            raise CorruptShardError(f"MDS shard {name} is truncated: {size} bytes")
        n = int(np.frombuffer(self.buffer, _U32, count=1)[0])
        if n != expected_items:
            raise CorruptShardError(
                f"MDS shard {name} holds {n} samples but index.json says {expected_items}"
            )
        if 4 * (n + 2) > size:
            raise CorruptShardError(f"MDS shard {name}: header of {n} samples exceeds its {size} bytes")
        offsets = np.frombuffer(self.buffer, _U32, count=n + 1, offset=4).astype(np.int64)
        if offsets[0] < 4 * (n + 2) or offsets[-1] > size or np.any(np.diff(offsets) < 0):
            raise CorruptShardError(
                f"MDS shard {name} has invalid sample offsets (first {int(offsets[0])}, last {int(offsets[-1])}, "
                f"file {size} bytes): truncated or corrupt"
            )
        self.num_items = n
        self.offsets = offsets

    def item(self, j: int) -> memoryview:
        if not 0 <= j < self.num_items:
            raise IndexError(f"Sample {j} out of range for MDS shard {self.name} of {self.num_items} samples")
        return self.buffer[self.offsets[j] : self.offsets[j + 1]]


class MDSReader:
    """Decodes a sample of an MDS shard into a dict keyed by column (every shard shares one schema)."""

    def __init__(self, columns: Columns) -> None:
        self._columns = columns

    def load(self, view: MDSShardView, local_index: int) -> dict[str, Any]:
        data = view.item(local_index)
        what = f"{view.name} sample {local_index}"
        cols = self._columns
        head = 4 * cols.num_variable
        if head > len(data):
            raise CorruptShardError(f"{what}: {len(data)} bytes cannot hold its {cols.num_variable} sizes")
        variable = np.frombuffer(data, _U32, count=cols.num_variable).tolist()
        sample: dict[str, Any] = {}
        pos, v = head, 0
        for name, size, decode in zip(cols.names, cols.sizes, cols.decoders):
            if not size:
                size, v = variable[v], v + 1
            if pos + size > len(data):
                raise CorruptShardError(f"{what}: column {name!r} of {size} bytes runs past the sample's end")
            sample[name] = decode(data[pos : pos + size], f"{what} column {name!r}")
            pos += size
        return sample

    def settings(self) -> dict[str, Any]:
        return {"item_loader": "MDSReader", "format": NAME}


class MDSDataset(OpenedDataset):
    format_name = NAME

    def __init__(self, table: ShardTable, columns: Columns, url: str) -> None:
        super().__init__(table, MDSReader(columns), None)
        self.url = url
        self.columns = columns

    def open_shard(self, k: int, path: str) -> MDSShardView:
        shard = self.table.shards[k]
        name = self.shard_name(k, self.url)
        if not os.path.exists(path):
            raise FileNotFoundError(f"MDS shard file {path} is missing ({name})")
        with open(path, "rb") as f:
            if shard.codec:
                data = f.read()
                buffer: Any = bytearray(
                    codecs.decompress(data, shard.codec, shard.raw_bytes, f"MDS shard {name}")
                )
            elif os.fstat(f.fileno()).st_size == 0:
                buffer = b""
            else:
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return MDSShardView(buffer, name, shard.items)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["columns"] = dict(zip(self.columns.names, self.columns.encodings))
        return out


def _detect(listing: Listing) -> bool:
    index = listing.index
    return isinstance(index, dict) and isinstance(index.get("shards"), list) and "chunks" not in index


def _open(source: FileAccess, listing: Listing, item_loader: Any, allow_pickle: bool) -> MDSDataset:
    index, where = listing.index, listing.index_url
    if index is None:
        raise missing_index(where)
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise FormatError(f"{where} has no 'shards' list; is this a MosaicML MDS dataset?")
    if index.get("version") != 2:
        raise FormatError(f"{where}: MDS index version {index.get('version')!r} is not supported (2 is)")
    if not index["shards"]:
        raise FormatError(f"{where} lists no shards")
    entries, columns = [], None
    for k, raw in enumerate(index["shards"]):
        shard_where = f"{where}: shards[{k}]"
        entries.append(_shard_entry(raw, shard_where))
        these = Columns(raw, shard_where, allow_pickle)
        if columns is None:
            columns = these
        elif these.signature() != columns.signature():
            raise FormatError(
                f"{shard_where} has other columns than shards[0]; samples must share one schema"
            )
    assert columns is not None and listing.index_bytes is not None
    return MDSDataset(ShardTable(NAME, tuple(entries), listing.index_bytes), columns, source.url)


register(FormatSpec(NAME, _detect, _open, "MosaicML Streaming MDS: index.json with 'shards', shard.*.mds"))
