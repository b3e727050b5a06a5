"""Datasets written by the peers' own writers (MosaicML's MDSWriter, WebDataset's ShardWriter, LitData's
index_parquet_dataset), with the samples each was given, so tests compare what we read against them."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import numpy as np
from PIL import Image

SCALARS = (
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)

MDS_COLUMNS = {
    "id": "int",
    "text": "str",
    "blob": "bytes",
    "meta": "json",
    "arr": "ndarray",
    "arr_f32": "ndarray:float32",
    "arr_fixed": "ndarray:int16:2,3",
    "photo": "jpeg",
    "icon": "png",
    "raw": "pil",
    "big": "str_int",
    "ratio": "str_float",
    "price": "str_decimal",
    "frames": "list[png]",
    **{f"s_{name}": name for name in SCALARS},
}


def _image(i: int, size: tuple[int, int] = (12, 8)) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def jpeg_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    _image(i).save(buf, format="JPEG")
    return buf.getvalue()


def mds_sample(i: int) -> dict[str, Any]:
    rng = np.random.default_rng(1000 + i)
    sample: dict[str, Any] = {
        "id": i,
        "text": f"sample {i} ü",
        "blob": bytes([i % 256]) * (i % 7),
        "meta": {"i": i, "tags": ["a", "b"][: i % 3]},
        "arr": rng.integers(-50, 50, (i % 3 + 1, 4)).astype(np.int64),
        "arr_f32": rng.random(i % 5 + 1).astype(np.float32),
        "arr_fixed": np.arange(6, dtype=np.int16).reshape(2, 3) + i,
        "photo": Image.open(io.BytesIO(jpeg_bytes(i))),
        "icon": _image(i + 500),
        "raw": _image(i + 900).convert("L"),
        "big": 10**30 + i,
        "ratio": i / 7,
        "price": Decimal(f"{i}.25"),
        "frames": [_image(i + 2000 + f, (4, 4)) for f in range(i % 3 + 1)],
    }
    for name in SCALARS:
        sample[f"s_{name}"] = np.dtype(name).type(i % 100)
    return sample


def write_mds(out: str, n: int, compression: str | None = "zstd", hashes: list[str] | None = None, **kw: Any):
    from streaming import MDSWriter

    columns = kw.pop("columns", MDS_COLUMNS)
    make = kw.pop("make", mds_sample)
    with MDSWriter(out=out, columns=columns, compression=compression, hashes=hashes, **kw) as writer:
        for i in range(n):
            writer.write(make(i))
    with open(f"{out}/index.json") as f:
        return json.load(f)


def wds_sample(i: int) -> dict[str, Any]:
    rng = np.random.default_rng(3000 + i)
    return {
        "__key__": f"sample{i:05d}",
        "jpg": _image(i),
        "cls": i,
        "json": {"id": i, "caption": f"caption {i}", "tags": ["x"] * (i % 3)},
        "npy": rng.random((2, i % 4 + 1)).astype(np.float32),
        "txt": f"text {i}",
        "seg.png": _image(i + 7000, (6, 5)),
        "raw.bin": bytes([i % 256]) * (i % 5),
    }


def write_wds(out: str, n: int, maxcount: int = 7, make=wds_sample) -> list[str]:
    """Shards ``out/shard-%06d.tar`` written by webdataset's ShardWriter."""
    import os

    import webdataset as wds

    os.makedirs(out, exist_ok=True)
    with wds.ShardWriter(f"{out}/shard-%06d.tar", maxcount=maxcount, verbose=0) as sink:
        for i in range(n):
            sink.write(make(i))
    return sorted(os.listdir(out))


def parquet_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "text": f"row {i}",
        "score": i / 3,
        "tags": ["t"] * (i % 3),
        "blob": bytes([i % 256]) * (i % 4),
        "point": {"x": i, "y": -i},
    }


def write_parquet(out: str, files: int, rows_per_file: int, row_group_size: int) -> list[dict[str, Any]]:
    """``files`` .parquet files (several row groups each), indexed by LitData's own index_parquet_dataset
    (in a subprocess, as LitData's helpers may change process-wide settings); returns every row in order."""
    import os
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    rows = []
    for f in range(files):
        chunk = [parquet_row(f * rows_per_file + r) for r in range(rows_per_file)]
        pq.write_table(
            pa.Table.from_pylist(chunk), f"{out}/part-{f:03d}.parquet", row_group_size=row_group_size
        )
        rows.extend(chunk)
    code = "import sys, litdata; litdata.index_parquet_dataset(sys.argv[1], num_workers=1)"
    subprocess.run([sys.executable, "-c", code, out], check=True, capture_output=True, timeout=120)
    return rows
