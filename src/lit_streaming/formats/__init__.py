"""On-disk dataset formats behind one seam (see ``base``): LitData/lit-streaming chunks, MosaicML MDS,
WebDataset tars and LitData's Parquet index. Importing this package registers them all; each keeps its
optional dependencies (pyarrow, brotli, snappy, xxhash) out of the import, so only opening a dataset that
needs one asks for it.
"""

from __future__ import annotations

import json
from typing import Any

# Importing a format registers it. Their detections exclude each other (LitData's 'chunks' index, its
# ParquetLoader variant, MDS's 'shards' index, WebDataset tars without any index), so order does not matter.
from lit_streaming.errors import LitStreamingValueError
from lit_streaming.formats import litdata, mds, parquet, wds
from lit_streaming.formats.base import (
    FileAccess,
    FormatError,
    FormatSpec,
    ItemReader,
    Listing,
    MissingExtraError,
    MissingIndexError,
    OpenedDataset,
    ShardEntry,
    ShardTable,
    ShardView,
    UnknownFormatError,
    as_shard_table,
    detect,
    format_named,
    formats,
    register,
)

INDEX_FILENAME = "index.json"


def read_listing(source: FileAccess) -> Listing:
    """What is at ``source``: its parsed index.json (if any) and, lazily, its files."""
    index_url = source.location_of(INDEX_FILENAME)
    try:
        raw: bytes | None = source.read_bytes(INDEX_FILENAME)
    except FileNotFoundError:
        raw = None
        source.list_files()  # a missing dataset folder gets its own error, naming it
    except IsADirectoryError as err:
        raise FormatError(f"Cannot read {index_url}: {err}") from err
    index: Any = None
    if raw is not None:
        try:
            index = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise FormatError(f"{index_url} is not valid JSON: {err}") from err
    return Listing(source.url, index_url, index, raw, source.list_files)


def open_dataset(
    source: FileAccess, format: str | None = None, item_loader: Any = None, allow_pickle: bool = False
) -> OpenedDataset:
    """Open the dataset at ``source`` in ``format`` (detected from what is there when None) and bind its shard
    table to the source, so storage fetches and verifies its shards."""
    listing = read_listing(source)
    if format is None:
        spec = detect(listing)
    else:
        spec = format_named(format)
    if item_loader is not None and spec.name != litdata.NAME and not _is_description(item_loader, spec.name):
        raise LitStreamingValueError(
            f"{source.url} is a {spec.name} dataset: item_loader={type(item_loader).__name__} reads LitData "
            "chunks only; leave item_loader unset"
        )
    opened = spec.open(source, listing, item_loader, allow_pickle)
    source.bind(opened.table)
    return opened


def _is_description(item_loader: Any, format_name: str) -> bool:
    """LitData's Parquet index names its loader; a ``ParquetLoader``-named object is accepted for it."""
    return format_name == parquet.NAME and type(item_loader).__name__ == "ParquetLoader"


__all__ = [
    "litdata",
    "mds",
    "parquet",
    "wds",
    "FileAccess",
    "FormatError",
    "FormatSpec",
    "ItemReader",
    "Listing",
    "MissingExtraError",
    "MissingIndexError",
    "OpenedDataset",
    "ShardEntry",
    "ShardTable",
    "ShardView",
    "UnknownFormatError",
    "as_shard_table",
    "detect",
    "format_named",
    "formats",
    "open_dataset",
    "read_listing",
    "register",
]
