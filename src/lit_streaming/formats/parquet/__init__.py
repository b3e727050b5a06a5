"""LitData's Parquet index, read in place: ``index.json`` with ``config.item_loader == "ParquetLoader"``
(what ``litdata.index_parquet_dataset`` writes), one chunk entry per ``.parquet`` file.

Rows are dicts keyed by column, as LitData's ``ParquetLoader`` returns them. A shard is read one row group at
a time with pyarrow (the optional extra ``lit-streaming[parquet]``); a decoded row group is kept until each
of its rows has been read once, then dropped, so memory stays near one row group per open shard when reading
in order and never beyond one shard's rows.
"""

from __future__ import annotations

import bisect
import importlib.util
from typing import Any

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

NAME = "parquet"
LOADER = "ParquetLoader"


def _require_pyarrow(what: str) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise missing_extra(what, "pyarrow", "parquet")


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"{what} must be a non-negative integer, got {value!r}")
    return value


class ParquetShardView:
    """One opened Parquet file: its row-group layout, and the row groups decoded so far."""

    def __init__(self, path: str, name: str, expected_rows: int, columns: list[str] | None) -> None:
        import pyarrow.parquet as pq

        self.name = name
        try:
            self.file = pq.ParquetFile(path, memory_map=True)
        except Exception as err:  # pyarrow's ArrowInvalid / OSError for a damaged footer
            raise CorruptShardError(f"Parquet shard {name} cannot be opened: {err}") from err
        meta = self.file.metadata
        if meta.num_rows != expected_rows:
            raise CorruptShardError(
                f"Parquet shard {name} holds {meta.num_rows} rows but index.json says {expected_rows}"
            )
        self.offsets = [0]
        for g in range(meta.num_row_groups):
            self.offsets.append(self.offsets[-1] + meta.row_group(g).num_rows)
        self.num_items = expected_rows
        self.columns = columns
        self._groups: dict[int, list[Any]] = {}
        self._unread: dict[int, int] = {}

    def row(self, j: int) -> dict[str, Any]:
        if not 0 <= j < self.num_items:
            raise IndexError(f"Row {j} out of range for Parquet shard {self.name} of {self.num_items} rows")
        g = bisect.bisect_right(self.offsets, j) - 1
        rows = self._groups.get(g)
        if rows is None:
            try:
                rows = self.file.read_row_group(g, columns=self.columns).to_pylist()
            except Exception as err:
                raise CorruptShardError(
                    f"Parquet shard {self.name}: row group {g} cannot be read: {err}"
                ) from err
            if len(rows) != self.offsets[g + 1] - self.offsets[g]:
                raise CorruptShardError(
                    f"Parquet shard {self.name}: row group {g} has {len(rows)} rows, its metadata says otherwise"
                )
            self._groups[g] = rows
            self._unread[g] = len(rows)
        self._unread[g] -= 1
        if self._unread[g] <= 0:  # every row read once: the next read of this group decodes it again
            del self._groups[g], self._unread[g]
        return rows[j - self.offsets[g]]


class ParquetReader:
    def load(self, view: ParquetShardView, local_index: int) -> dict[str, Any]:
        return view.row(local_index)

    def settings(self) -> dict[str, Any]:
        return {"item_loader": LOADER, "format": NAME}


class ParquetDataset(OpenedDataset):
    format_name = NAME

    def __init__(self, table: ShardTable, url: str, data_format: list[str]) -> None:
        super().__init__(table, ParquetReader(), None)
        self.url = url
        self.data_format = data_format

    def open_shard(self, k: int, path: str) -> ParquetShardView:
        return ParquetShardView(path, self.shard_name(k, self.url), self.table.shards[k].items, None)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["data_format"] = self.data_format
        return out


def _detect(listing: Listing) -> bool:
    index = listing.index
    if not isinstance(index, dict) or not isinstance(index.get("chunks"), list):
        return False
    config = index.get("config")
    return isinstance(config, dict) and config.get("item_loader") == LOADER


def _open(source: FileAccess, listing: Listing, item_loader: Any, allow_pickle: bool) -> ParquetDataset:
    index, where = listing.index, listing.index_url
    if index is None:
        raise missing_index(where)
    _require_pyarrow(f"{source.url} (a Parquet dataset)")
    if not isinstance(index, dict) or not isinstance(index.get("chunks"), list):
        raise FormatError(f"{where} has no 'chunks' list; is this a LitData Parquet index?")
    config = index.get("config")
    if not isinstance(config, dict) or config.get("item_loader") != LOADER:
        raise FormatError(f"{where}: config.item_loader is not {LOADER!r}; not a Parquet index")
    data_format = config.get("data_format") or []
    if not isinstance(data_format, list) or not all(isinstance(x, str) for x in data_format):
        raise FormatError(f"{where}: config.data_format must be a list of type names")
    entries = []
    for k, raw in enumerate(index["chunks"]):
        what = f"{where}: chunks[{k}]"
        if not isinstance(raw, dict):
            raise FormatError(f"{what} is not an object")
        name = check_relative_name(raw.get("filename"), what)
        rows = _count(raw.get("chunk_size"), f"{what}.chunk_size")
        size = _count(raw.get("chunk_bytes"), f"{what}.chunk_bytes")
        entries.append(ShardEntry(filename=name, items=rows, stored_bytes=size))
    assert listing.index_bytes is not None
    return ParquetDataset(ShardTable(NAME, tuple(entries), listing.index_bytes), source.url, data_format)


register(FormatSpec(NAME, _detect, _open, "LitData Parquet index: index.json with ParquetLoader, *.parquet"))
