"""StreamingRawDataset: LitData's README usage (raw bytes, transform, grouped items via ``setup``, a plain
DataLoader with workers) from a local folder and from S3 (moto on loopback), the cached listing and
``recompute_index``, ``cache_files``/``item_type="path"``, extension filtering and named errors."""

from __future__ import annotations

import io
import os
from collections import defaultdict

import pytest
from torch.utils.data import DataLoader

from lit_streaming import StreamingRawDataset
from lit_streaming.raw import FileIndexer, FileMetadata

PIL = pytest.importorskip("PIL.Image")


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    PIL.new("RGB", (4, 3), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "raw"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        (root / f"img_{i:03d}.png").write_bytes(_png(i * 10))
        (root / "sub" / f"img_{i:03d}.txt").write_bytes(f"caption {i}".encode())
    return root


def test_readme_quick_start_bytes_and_transform(folder):
    dataset = StreamingRawDataset(str(folder))
    assert len(dataset) == 12
    raw: bytes = dataset[0]
    assert raw == (folder / "img_000.png").read_bytes()

    images = StreamingRawDataset(
        str(folder),
        indexer=FileIndexer(extensions=[".PNG"]),
        transform=lambda b: PIL.open(io.BytesIO(b)).convert("RGB").getpixel((0, 0))[0],
    )
    loader = DataLoader(images, batch_size=4, num_workers=2)
    assert sorted(v for batch in loader for v in batch.tolist()) == [0, 10, 20, 30, 40, 50]


class PairedRawDataset(StreamingRawDataset):
    """The README's grouping example (image + caption by stem), ported."""

    def setup(self, files: list[FileMetadata]) -> list[list[FileMetadata]]:
        by_stem: dict[str, dict[str, FileMetadata]] = defaultdict(dict)
        for f in files:
            name = f.path.rsplit("/", 1)[-1]
            stem, _, ext = name.rpartition(".")
            by_stem[stem][ext.lower()] = f
        return [
            [parts["png"], parts["txt"]]
            for _, parts in sorted(by_stem.items())
            if {"png", "txt"} <= set(parts)
        ]


def test_readme_grouped_items_with_a_dataloader(folder):
    dataset = PairedRawDataset(str(folder), transform=lambda pair: (pair[0], pair[1]))
    assert len(dataset) == 6
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    captions = [c for _, caps in loader for c in caps]
    assert captions == [f"caption {i}".encode() for i in range(6)]


def test_batches_are_fetched_together_and_prefetched(folder):
    dataset = StreamingRawDataset(str(folder), max_prefetch=4)
    assert dataset.__getitems__([0, 1, 2]) == [dataset[i] for i in range(3)]
    runtime = dataset._get_runtime()
    assert sorted(runtime.ahead) == [3, 4, 5, 6]  # sequential reads look ahead max_prefetch items
    assert dataset.__getitems__([3]) == [dataset.load_item(3)]


def test_s3_listing_cache_files_and_paths(s3_bucket, tmp_path, folder):
    import s3fs

    url, options = s3_bucket
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": options["endpoint_url"]}, key="testing", secret="testing"
    )
    fs.put(str(folder) + "/", url + "/raw/", recursive=True)
    storage_options = {
        "client_kwargs": {"endpoint_url": options["endpoint_url"]},
        "key": "testing",
        "secret": "testing",
    }

    dataset = StreamingRawDataset(
        f"{url}/raw", cache_dir=str(tmp_path / "cache"), storage_options=storage_options
    )
    assert len(dataset) == 12 and all(f.path.startswith("s3://") for f in dataset.files)
    assert dataset[0] == (folder / "img_000.png").read_bytes()
    loader = DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=list)
    assert sum(len(b) for b in loader) == 12

    # the listing is kept: a new file shows up only with recompute_index=True
    fs.pipe(f"{url}/raw/new.txt", b"new")
    again = StreamingRawDataset(
        f"{url}/raw", cache_dir=str(tmp_path / "cache"), storage_options=storage_options
    )
    assert len(again) == 12
    fresh = StreamingRawDataset(
        f"{url}/raw", cache_dir=str(tmp_path / "cache"), storage_options=storage_options, recompute_index=True
    )
    assert len(fresh) == 13

    paths = StreamingRawDataset(
        f"{url}/raw",
        cache_dir=str(tmp_path / "cache"),
        storage_options=storage_options,
        cache_files=True,
        item_type="path",
    )
    local = paths[0]
    assert os.path.isfile(local)
    with open(local, "rb") as f:
        assert f.read() == (folder / "img_000.png").read_bytes()
    fs.rm(paths.files[0].path)
    assert paths[0] == local  # served from the cache without the bucket


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"item_type": "array"}, "item_type"),
        ({"item_type": "path"}, "cache_files"),
        ({"max_concurrent_downloads": 0}, "max_concurrent_downloads"),
        ({"transform": "decode"}, "transform"),
    ],
)
def test_bad_arguments_named(folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        StreamingRawDataset(str(folder), **kwargs)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_dir"):
        StreamingRawDataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        StreamingRawDataset(str(tmp_path / "empty"))


def test_setup_must_return_a_list(folder):
    class Bad(StreamingRawDataset):
        def setup(self, files):
            return {"a": files}

    with pytest.raises(TypeError, match="setup"):
        Bad(str(folder))


def test_custom_indexer_subclass(folder):
    from lit_streaming.raw import BaseIndexer

    class OnlyCaptions(BaseIndexer):  # LitData's documented extension point: discover_files only
        def discover_files(self, input_dir, storage_options):
            return [FileMetadata(str(p), p.stat().st_size) for p in sorted((folder / "sub").iterdir())]

    dataset = StreamingRawDataset(str(folder), indexer=OnlyCaptions(), transform=bytes.decode)
    assert [dataset[i] for i in range(len(dataset))] == [f"caption {i}" for i in range(6)]
