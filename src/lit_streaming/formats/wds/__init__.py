"""WebDataset tar shards, read in place: a folder (or URL) of ``.tar`` / ``.tar.gz`` files, samples grouped
by key as WebDataset groups them, values decoded by extension.

Sampling needs each shard's sample count up front, so every shard gets a member index (one pass over its
512-byte headers, see ``tarscan``). It is read, in this order, from ``wds-index.json`` beside the shards
(written ahead of time by ``lit-streaming index DIR_OR_URL``), from the copy kept with the dataset's cache
entry, or built by scanning the shard (downloaded through the bounded cache when remote) and then kept with
the cache entry. An entry is used only when its recorded shard size matches the listing.
"""

from __future__ import annotations

import gzip
import json
import logging
import mmap
import os
from typing import Any

from lit_streaming.formats import codecs
from lit_streaming.formats.base import (
    CorruptShardError,
    FileAccess,
    FormatError,
    FormatSpec,
    Listing,
    OpenedDataset,
    ShardEntry,
    ShardTable,
    register,
)
from lit_streaming.formats.wds.decode import UNSAFE_EXTENSIONS, decode_value
from lit_streaming.formats.wds.tarscan import TarIndex, header_mismatch, scan

logger = logging.getLogger("lit_streaming.formats")

NAME = "wds"
INDEX_NAME = "wds-index.json"
INDEX_KIND = "lit-streaming-wds-index"
INDEX_VERSION = 1
_PLAIN = (".tar",)
_GZIP = (".tar.gz", ".tgz")


def shard_names(files: dict[str, int]) -> list[str]:
    """The tar shards among a folder's files, in name order (WebDataset's ``{000000..000099}`` order)."""
    return sorted(n for n in files if n.endswith(_PLAIN + _GZIP))


def _codec(name: str) -> str | None:
    return "gz" if name.endswith(_GZIP) else None


def scan_file(path: str, name: str) -> TarIndex:
    """Index one local tar shard (a ``.tar.gz`` is streamed through gzip, read forward once)."""
    if _codec(name):
        try:
            with gzip.open(path, "rb") as f:
                return scan(f, None, name)  # type: ignore[arg-type]
        except (OSError, EOFError) as err:
            raise CorruptShardError(f"Tar shard {name}: gzip data is corrupt or truncated ({err})") from err
    with open(path, "rb") as f:
        return scan(f, os.fstat(f.fileno()).st_size, name)


def index_document(names: list[str], files: dict[str, int], indexes: dict[str, TarIndex]) -> bytes:
    """The ``wds-index.json`` text for ``names`` (stored sizes let a reader detect a stale entry)."""
    shards = {n: {"stored_bytes": files[n], **indexes[n].to_json()} for n in names}
    doc = {"kind": INDEX_KIND, "version": INDEX_VERSION, "shards": shards}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_index_document(raw: bytes, where: str, files: dict[str, int]) -> dict[str, TarIndex]:
    """Entries of a ``wds-index.json`` whose shard is listed with the same size (others are stale)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise FormatError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("kind") != INDEX_KIND or not isinstance(doc.get("shards"), dict):
        raise FormatError(f"{where} is not a lit-streaming WebDataset index")
    if doc.get("version") != INDEX_VERSION:
        raise FormatError(
            f"{where}: index version {doc.get('version')!r} is not supported ({INDEX_VERSION} is)"
        )
    out = {}
    for name, entry in doc["shards"].items():
        if not isinstance(entry, dict) or files.get(name) != entry.get("stored_bytes"):
            logger.info("%s: entry for %s is stale (the shard changed); scanning it again", where, name)
            continue
        index = TarIndex.from_json(entry, f"{where}: shard {name}")
        if not _codec(name) and index.raw_bytes != files[name]:
            raise CorruptShardError(f"{where}: shard {name} entry disagrees with the shard's size")
        out[name] = index
    return out


def build_indexes(
    source: FileAccess, names: list[str], files: dict[str, int], known: dict[str, TarIndex]
) -> dict[str, TarIndex]:
    """Scan the shards ``known`` lacks, fetching each through ``source`` (which must be bound to a table
    listing ``names`` in this order) and releasing it right after."""
    out = dict(known)
    for k, name in enumerate(names):
        if name in out:
            continue
        path = source.chunk_path(k)
        try:
            out[name] = scan_file(path, name)
        finally:
            source.release(k)
    return out


class WDSShardView:
    """One opened tar shard: its bytes (mapped, or inflated for ``.tar.gz``) and its member index."""

    __slots__ = ("buffer", "index", "name", "num_items", "url")

    def __init__(self, buffer: Any, index: TarIndex, name: str, url: str) -> None:
        self.buffer = memoryview(buffer)
        if len(self.buffer) < index.raw_bytes:
            raise CorruptShardError(
                f"Tar shard {name} has {len(self.buffer)} bytes, its index needs {index.raw_bytes}"
            )
        self.index = index
        self.name = name
        self.url = url
        self.num_items = index.num_samples
        stale = header_mismatch(self.buffer, index)
        if stale is not None:
            raise CorruptShardError(
                f"Tar shard {name} does not match its member index (member {stale}): the shard was rewritten "
                "after it was indexed; run `lit-streaming index` again (or delete its wds-index.json)"
            )

    def members(self, j: int) -> tuple[str, list[tuple[str, memoryview]]]:
        if not 0 <= j < self.num_items:
            raise IndexError(f"Sample {j} out of range for tar shard {self.name} of {self.num_items} samples")
        ix = self.index
        lo, hi = int(ix.starts[j]), int(ix.starts[j + 1])
        return ix.keys[j], [
            (ix.exts[m], self.buffer[int(ix.offsets[m]) : int(ix.offsets[m] + ix.sizes[m])])
            for m in range(lo, hi)
        ]


class WDSReader:
    """A sample as WebDataset's default decoding yields it: ``__key__``, ``__url__`` and one entry per
    extension, decoded by extension (see ``decode``)."""

    def __init__(self, allow_pickle: bool) -> None:
        self.allow_pickle = allow_pickle

    def load(self, view: WDSShardView, local_index: int) -> dict[str, Any]:
        key, members = view.members(local_index)
        sample: dict[str, Any] = {"__key__": key, "__url__": view.url}
        for ext, data in members:
            sample[ext] = decode_value(ext, data, self.allow_pickle, f"{view.name} sample {key!r} .{ext}")
        return sample

    def settings(self) -> dict[str, Any]:
        return {"item_loader": "WDSReader", "format": NAME}


class WDSDataset(OpenedDataset):
    format_name = NAME

    def __init__(
        self, table: ShardTable, indexes: list[TarIndex], source: FileAccess, allow_pickle: bool
    ) -> None:
        super().__init__(table, WDSReader(allow_pickle), None)
        self.indexes = indexes
        self.url = source.url
        self._shard_urls = [source.location_of(s.filename) for s in table.shards]

    def open_shard(self, k: int, path: str) -> WDSShardView:
        shard, index = self.table.shards[k], self.indexes[k]
        name = self.shard_name(k, self.url)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Tar shard file {path} is missing ({name})")
        with open(path, "rb") as f:
            if shard.codec:
                buffer: Any = bytearray(
                    codecs.decompress(f.read(), shard.codec, index.raw_bytes, f"Tar shard {name}")
                )
            elif index.raw_bytes == 0:
                buffer = b""
            else:
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return WDSShardView(buffer, index, name, self._shard_urls[k])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["extensions"] = sorted({e for ix in self.indexes for e in ix.exts})
        return out


def _detect(listing: Listing) -> bool:
    return listing.index is None and bool(shard_names(listing.files))


def _bind_shards(source: FileAccess, files: dict[str, int]) -> tuple[list[str], bytes]:
    """Bind a table of the shards with their sizes (items not known yet), so storage can fetch them and
    name the cache entry; the dataset version is the listing of shard names and sizes."""
    names = shard_names(files)
    if not names:
        raise FormatError(f"{source.url}: no WebDataset shards (.tar, .tar.gz) there")
    version_key = json.dumps([[n, files[n]] for n in names]).encode()
    source.bind(
        ShardTable(NAME, tuple(ShardEntry(n, 0, files[n], codec=_codec(n)) for n in names), version_key)
    )
    return names, version_key


def index_folder(source: FileAccess) -> tuple[bytes, int, int]:
    """Scan every shard at ``source``: the ``wds-index.json`` bytes, the number of shards and of samples
    (what ``lit-streaming index`` writes beside the shards)."""
    files = source.list_files()
    names, _ = _bind_shards(source, files)
    indexes = build_indexes(source, names, files, {})
    return index_document(names, files, indexes), len(names), sum(ix.num_samples for ix in indexes.values())


def _open(source: FileAccess, listing: Listing, item_loader: Any, allow_pickle: bool) -> WDSDataset:
    files = listing.files
    names, version_key = _bind_shards(source, files)
    known: dict[str, TarIndex] = {}
    if INDEX_NAME in files:
        where = source.location_of(INDEX_NAME)
        known.update(parse_index_document(source.read_bytes(INDEX_NAME), where, files))
    scratch = source.scratch_dir()
    cached_path = os.path.join(scratch, INDEX_NAME) if scratch else None
    if len(known) < len(names) and cached_path and os.path.exists(cached_path):
        try:
            with open(cached_path, "rb") as f:
                cached = parse_index_document(f.read(), cached_path, files)
        except (FormatError, CorruptShardError) as err:  # our own cache copy: rebuild it
            logger.warning(
                "Ignoring the damaged cached WebDataset index (%s); scanning the shards again", err
            )
            cached = {}
        known.update({n: ix for n, ix in cached.items() if n not in known})
    indexes = build_indexes(source, names, files, known) if len(known) < len(names) else known
    if cached_path and len(known) < len(names):
        _write_atomic(cached_path, index_document(names, files, indexes))
    ordered = [indexes[n] for n in names]
    if not allow_pickle:
        _refuse_pickles(source, names, ordered)
    table = ShardTable(
        NAME,
        tuple(
            ShardEntry(n, ix.num_samples, files[n], codec=_codec(n), raw_bytes=ix.raw_bytes)
            for n, ix in zip(names, ordered)
        ),
        version_key,
    )
    return WDSDataset(table, ordered, source, allow_pickle)


def _refuse_pickles(source: FileAccess, names: list[str], indexes: list[TarIndex]) -> None:
    """Refuse at open (not mid-epoch) a dataset whose members would be unpickled."""
    for name, ix in zip(names, indexes):
        unsafe = sorted({e for e in ix.exts if e.rsplit(".", 1)[-1] in UNSAFE_EXTENSIONS})
        if unsafe:
            from lit_streaming.format.serializers import PickleNotAllowedError

            raise PickleNotAllowedError(
                f"{source.location_of(name)} holds .{unsafe[0]} members (pickled objects). Unpickling runs "
                "arbitrary code, so it is refused by default; pass allow_pickle=True if you trust this dataset."
            )


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


register(FormatSpec(NAME, _detect, _open, "WebDataset: a folder of .tar / .tar.gz shards"))
