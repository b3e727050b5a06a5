"""LitData Parquet indexes read in place: folders indexed by litdata's own index_parquet_dataset."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from support.formats import write_parquet
from support.product import ProductTests, upload

from lit_streaming import StreamingDataset
from lit_streaming.formats import MissingExtraError
from lit_streaming.formats.base import CorruptShardError

FILES, ROWS = 3, 17
N = FILES * ROWS


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> tuple[str, list[dict]]:
    """The folder, and its rows in the index's order (LitData lists the files in directory order)."""
    out = str(tmp_path_factory.mktemp("parquet") / "ds")
    rows = write_parquet(out, FILES, ROWS, row_group_size=5)
    by_file = {f"part-{f:03d}.parquet": rows[f * ROWS : (f + 1) * ROWS] for f in range(FILES)}
    index = json.loads(Path(out, "index.json").read_text())
    return out, [row for chunk in index["chunks"] for row in by_file[chunk["filename"]]]


class TestProduct(ProductTests):
    n, key = N, "id"

    @pytest.fixture()
    def path(self, parquet_dir):
        return parquet_dir[0]

    @pytest.fixture()
    def make(self, parquet_dir):
        """Datasets whose samples carry their position in the index order as ``id``."""
        path, rows = parquet_dir
        position = {row["id"]: k for k, row in enumerate(rows)}

        def make(**kw) -> StreamingDataset:
            return StreamingDataset(path, transform=lambda row: {"id": position[row["id"]]}, **kw)

        return make


def test_rows_read_back_as_dicts(parquet_dir):
    path, rows = parquet_dir
    index = json.loads(Path(path, "index.json").read_text())
    assert index["config"]["item_loader"] == "ParquetLoader"
    ds = StreamingDataset(path)
    assert ds.format_name == "parquet" and len(ds) == N
    assert ds.chunk_lengths.tolist() == [ROWS] * FILES
    assert [ds[i] for i in range(N)] == rows
    assert [row for row in ds] == rows


def test_litdata_reads_the_same_rows(parquet_dir):
    import litdata
    from litdata.streaming.item_loader import ParquetLoader

    path, rows = parquet_dir
    theirs = litdata.StreamingDataset(path, item_loader=ParquetLoader())
    ours = StreamingDataset(path, item_loader=ParquetLoader())  # LitData's loader object is accepted
    assert [theirs[i] for i in range(N)] == [ours[i] for i in range(N)] == rows


def test_missing_pyarrow_names_the_extra(parquet_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"pyarrow.*lit-streaming\[parquet\]"):
        StreamingDataset(parquet_dir[0])


def test_a_file_with_other_rows_than_indexed_is_refused(parquet_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = parquet_dir[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in os.listdir(src):
        (bad / name).write_bytes(Path(src, name).read_bytes())
    pq.write_table(pa.Table.from_pylist([{"id": 1}]), bad / "part-001.parquet")
    index = json.loads((bad / "index.json").read_text())
    k = [c["filename"] for c in index["chunks"]].index("part-001.parquet")
    index["chunks"][k]["chunk_bytes"] = (bad / "part-001.parquet").stat().st_size  # only the rows disagree
    (bad / "index.json").write_text(json.dumps(index))
    ds = StreamingDataset(str(bad))
    with pytest.raises(
        CorruptShardError, match=rf"part-001.parquet .*holds 1 rows but index.json says {ROWS}"
    ):
        ds[k * ROWS]


def test_streams_from_a_remote_url_through_the_cache(parquet_dir, tmp_path, memory_url):
    path, rows = parquet_dir
    upload(path, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"))
    assert [s for s in ds] == rows
