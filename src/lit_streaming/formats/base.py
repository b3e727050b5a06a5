"""The format seam: what storage, the cache and sampling need to know about any on-disk dataset format.

A format turns "what is at this location" into three things:

- a ``ShardTable``: the files to fetch (name, stored size, checksum and its algorithm, codec) and how many
  items each holds. Storage downloads, verifies and evicts from this table alone, so S3 and the bounded
  cache work the same for every format;
- per shard, a ``ShardView`` over the local file's bytes (one opened shard's items);
- an ``ItemReader`` that turns item ``j`` of a view into a sample.

Formats never import storage: they read files through the small ``FileAccess`` protocol that storage's
sources implement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lit_streaming.errors import LitStreamingError, LitStreamingTypeError
from lit_streaming.format.chunk import CorruptChunkError
from lit_streaming.format.index import InvalidIndexError, escapes_folder


class FormatError(InvalidIndexError):
    """A dataset's metadata is missing, unreadable, or describes something we refuse to read."""


class CorruptShardError(CorruptChunkError):
    """A shard's bytes do not match its own header or what the index says about it."""


class UnknownFormatError(FormatError):
    """Nothing at the location looks like a dataset format we read, or ``format=`` names none."""


class MissingIndexError(UnknownFormatError, FileNotFoundError):
    """No index.json where the dataset should be (and, unless a format was named, nothing else a format
    reads): the same error for a local folder and a remote prefix, detected or with ``format=`` given. A
    ``FileNotFoundError`` too, as reading a named format's index has always raised one."""


def missing_index(index_url: str) -> MissingIndexError:
    return MissingIndexError(
        f"No index.json at {index_url}: the folder is not an optimized dataset (run optimize first)"
    )


class MissingExtraError(ImportError, LitStreamingError):
    """A dataset needs an optional package (``pip install lit-streaming[EXTRA]``)."""


def missing_extra(what: str, package: str, extra: str) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the '{package}' package: pip install 'lit-streaming[{extra}]' (or pip install {package})"
    )


def check_relative_name(name: Any, where: str) -> str:
    """Refuse shard names that are absolute or escape the dataset folder: a hostile index must not make us
    read (or, through the cache, write) files outside it."""
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}: shard file name {name!r} is not a non-empty string")
    if escapes_folder(name):  # as written and percent-decoded, as for LitData chunk names
        raise FormatError(
            f"{where}: shard file name {name!r} escapes the dataset folder; refusing to read it"
        )
    return name


@dataclass(frozen=True)
class ShardEntry:
    """One stored file of a dataset, in format-neutral terms.

    ``stored_bytes`` is the exact size of the file as stored (checked on every first open and download;
    ``None`` when the format does not record it). ``raw_bytes`` is its size after undoing ``codec`` (a bound
    on decompression, and the cache's estimate while ``stored_bytes`` is unknown). ``checksum`` is the hex
    digest of the stored file under ``checksum_algo`` (see ``formats.hashing``).
    """

    filename: str
    items: int
    stored_bytes: int | None
    checksum: str | None = None
    checksum_algo: str | None = None
    codec: str | None = None
    raw_bytes: int | None = None

    @property
    def budget_bytes(self) -> int:
        """The bytes this shard takes in the cache (an upper bound while its stored size is unknown)."""
        if self.stored_bytes is not None:
            return self.stored_bytes
        return self.raw_bytes or 0


@dataclass(frozen=True)
class ShardTable:
    """Every shard of a dataset, in the order that defines the global item numbering.

    ``version_key`` identifies this version of the dataset (the index file's bytes, or a listing of the
    shards and their sizes): a dataset rewritten at the same URL gets a fresh cache entry.
    """

    format: str
    shards: tuple[ShardEntry, ...]
    version_key: bytes

    @property
    def filenames(self) -> list[str]:
        return [s.filename for s in self.shards]


@runtime_checkable
class ShardView(Protocol):
    """The items of one opened shard. ``name`` is used in every error about the shard."""

    name: str
    num_items: int


@runtime_checkable
class ItemReader(Protocol):
    """Turns item ``j`` of an opened shard into a sample. One per dataset; picklable into workers."""

    def load(self, view: Any, local_index: int) -> Any: ...

    def settings(self) -> dict[str, Any]:
        """Everything about the reader that changes which samples exist (recorded in resume states)."""
        ...


class FileAccess(Protocol):
    """How a format reaches a dataset's files: storage's sources implement this (formats never import
    storage). ``bind`` hands storage the shard table; ``chunk_path``/``release`` fetch a shard through the
    cache, for formats that must look inside shards to count their items."""

    url: str

    def location_of(self, name: str) -> str:
        """How errors name the file ``name`` (a path or a URL)."""
        ...

    def bind(self, table: ShardTable) -> None: ...

    def chunk_path(self, chunk_index: int, entry: Any = None) -> str: ...

    def release(self, chunk_index: int) -> None: ...

    def scratch_dir(self) -> str | None:
        """A node-local folder kept with the dataset version's cache entry (None for local folders)."""
        ...

    def read_bytes(self, name: str) -> bytes:
        """A file relative to the dataset root; ``FileNotFoundError`` when it is not there."""
        ...

    def list_files(self) -> dict[str, int]:
        """File names directly in the dataset folder and their sizes (``{}`` when the folder is empty)."""
        ...


class Listing:
    """What detection sees: the parsed ``index.json`` when there is one, and the files at the location
    (listed only when asked for: a dataset with an index is opened without listing its folder)."""

    def __init__(
        self,
        url: str,
        index_url: str,
        index: Any,
        index_bytes: bytes | None,
        list_files: Callable[[], dict[str, int]],
    ) -> None:
        self.url = url
        self.index_url = index_url
        self.index = index
        self.index_bytes = index_bytes
        self._list_files = list_files
        self._files: dict[str, int] | None = None

    @property
    def files(self) -> dict[str, int]:
        if self._files is None:
            self._files = self._list_files()
        return self._files


class OpenedDataset(ABC):
    """One dataset opened in one format: its shard table, its reader and how to open a shard's local file."""

    format_name: str = ""

    def __init__(self, table: ShardTable, reader: ItemReader, index: Any = None) -> None:
        self.table = table
        self.reader = reader
        self.index = index

    @property
    def chunk_lengths(self) -> np.ndarray:
        """Samples per shard, as sampling needs them (a reader may serve fewer or more than stored items)."""
        return np.array([s.items for s in self.table.shards], np.int64)

    @abstractmethod
    def open_shard(self, k: int, path: str) -> ShardView:
        """A view over shard ``k``'s items, from the local file ``path`` that storage verified."""

    def shard_name(self, k: int, url: str) -> str:
        return f"{self.table.shards[k].filename} (shard {k} of {url})"

    def describe(self) -> dict[str, Any]:
        """A summary for ``lit-streaming inspect``."""
        shards = self.table.shards
        return {
            "format": self.format_name,
            "shards": len(shards),
            "items": sum(s.items for s in shards),
            "stored_bytes": sum(s.stored_bytes or 0 for s in shards),
            "checksums": bool(shards) and all(s.checksum for s in shards),
            "codecs": sorted({s.codec for s in shards if s.codec}),
        }


Opener = Callable[[FileAccess, Listing, Any, bool], OpenedDataset]


@dataclass(frozen=True)
class FormatSpec:
    """A registered format: ``detect`` looks at a ``Listing``; ``open`` reads the dataset's metadata."""

    name: str
    detect: Callable[[Listing], bool]
    open: Opener
    description: str = ""


_REGISTRY: dict[str, FormatSpec] = {}
_TABLE_ADAPTERS: list[tuple[type, Callable[[Any], ShardTable]]] = []


def register(spec: FormatSpec) -> FormatSpec:
    """Add a format; detection tries formats in registration order."""
    _REGISTRY[spec.name] = spec
    return spec


def register_table_adapter(kind: type, adapt: Callable[[Any], ShardTable]) -> None:
    """Let ``as_shard_table`` accept a format's native index type (e.g. LitData's ``DatasetIndex``)."""
    _TABLE_ADAPTERS.append((kind, adapt))


def formats() -> list[str]:
    return list(_REGISTRY)


def format_named(name: str) -> FormatSpec:
    spec = _REGISTRY.get(name)
    if spec is None:
        raise UnknownFormatError(f"Unknown dataset format {name!r}; known formats: {sorted(_REGISTRY)}")
    return spec


def detect(listing: Listing) -> FormatSpec:
    """The first registered format that recognises the location."""
    for spec in _REGISTRY.values():
        if spec.detect(listing):
            return spec
    if listing.index is None:
        raise MissingIndexError(_nothing_found(listing))
    raise UnknownFormatError(_nothing_found(listing))


def _nothing_found(listing: Listing) -> str:
    if listing.index is None:
        return (
            f"No index.json at {listing.url.rstrip('/')}/index.json and no WebDataset .tar shards there: "
            "the folder is not a dataset lit-streaming reads (LitData/lit-streaming, MosaicML MDS, "
            "WebDataset, LitData Parquet index); run optimize first"
        )
    keys = sorted(listing.index) if isinstance(listing.index, dict) else type(listing.index).__name__
    return (
        f"{listing.url.rstrip('/')}/index.json is not an index of a format lit-streaming reads "
        f"(top-level keys {keys}); expected LitData's 'chunks' or MosaicML MDS's 'shards'"
    )


def as_shard_table(obj: Any) -> ShardTable:
    """``obj`` as a ``ShardTable``: a table as is, or a format's native index through its adapter."""
    if isinstance(obj, ShardTable):
        return obj
    for kind, adapt in _TABLE_ADAPTERS:
        if isinstance(obj, kind):
            return adapt(obj)
    raise LitStreamingTypeError(
        f"{type(obj).__name__} is not a ShardTable nor an index type a format registered"
    )
