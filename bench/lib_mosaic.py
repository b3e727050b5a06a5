"""MosaicML Streaming: ``MDSWriter`` (one process; it has no parallel writer of its own) + its
``StreamingDataset`` under a plain torch ``DataLoader``.

Images: a ``jpeg`` column (the writer copies the file's bytes). Mosaic's own ``jpeg`` decode returns a lazy
PIL image; to produce the same uint8 CHW tensor as the other libraries, the reader registers a ``jpeg``
decoding that hands back the stored bytes, and the dataset's ``__getitem__`` decodes them with
``torchvision.io.decode_jpeg`` (in the DataLoader workers).

Tokens: Mosaic has no block loader; the equivalent its users run (llm-foundry's concatenated-token datasets)
writes pre-cut ``block_size`` blocks as samples, here an ``ndarray:int32:<block>`` column.
"""

from __future__ import annotations

import json
import os

from bench.config import Sizes
from bench.samples import ImageSample, TokenDocument, token_blocks

NAME = "mosaic"
WRITE_NOTE = "MDSWriter, 1 process (no parallel writer in the library)"


def preload(job: str) -> None:
    import streaming  # noqa: F401
    import torchvision.io  # noqa: F401


def write_images(raw_root: str, out_dir: str, sizes: Sizes) -> None:
    from streaming import MDSWriter

    sample = ImageSample(raw_root)
    columns = {"image": "jpeg", "label": "int"}
    with MDSWriter(out=out_dir, columns=columns, size_limit=sizes.image_chunk_bytes) as writer:
        for i in range(sizes.images):
            item = sample(i)
            writer.write(item)
            item["image"].close()


def write_tokens(raw_root: str, out_dir: str, sizes: Sizes) -> int:
    from streaming import MDSWriter

    docs = TokenDocument(raw_root)
    columns = {"tokens": f"ndarray:int32:{sizes.block_size}"}
    with MDSWriter(out=out_dir, columns=columns, size_limit=sizes.token_chunk_tokens * 4) as writer:
        for block in token_blocks(docs, sizes.block_size):
            writer.write({"tokens": block})
    return docs.num_documents()


def _index(path: str) -> dict:
    with open(os.path.join(path, "index.json")) as f:
        return json.load(f)


def count_images(out_dir: str) -> int:
    return sum(shard["samples"] for shard in _index(out_dir)["shards"])


def _prepare() -> None:
    from streaming.base.format.mds import encodings
    from streaming.base.util import clean_stale_shared_memory

    class RawJPEG(encodings.JPEG):
        def decode(self, data: bytes) -> bytes:
            return data

    encodings._encodings["jpeg"] = RawJPEG
    clean_stale_shared_memory()


def _kwargs(path: str, s3: dict | None) -> dict:
    if s3 is None:
        return dict(local=path, remote=None)
    os.environ["S3_ENDPOINT_URL"] = s3["endpoint"]
    return dict(local=s3["cache_dir"], remote=s3["url"])


def image_loader(path: str, sizes: Sizes, s3: dict | None = None):
    import torch
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader
    from torchvision.io import ImageReadMode, decode_jpeg

    _prepare()

    class Images(StreamingDataset):
        def __getitem__(self, idx: int) -> dict:
            sample = super().__getitem__(idx)
            data = torch.frombuffer(bytearray(sample["image"]), dtype=torch.uint8)
            return {"image": decode_jpeg(data, mode=ImageReadMode.RGB), "label": sample["label"]}

    dataset = Images(shuffle=True, batch_size=sizes.batch_size, **_kwargs(path, s3))
    return DataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)


def token_loader(path: str, sizes: Sizes):
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader

    _prepare()

    class Tokens(StreamingDataset):
        def __getitem__(self, idx: int):
            return super().__getitem__(idx)["tokens"]

    dataset = Tokens(shuffle=True, batch_size=sizes.token_batch_size, local=path, remote=None)
    return DataLoader(dataset, batch_size=sizes.token_batch_size, num_workers=sizes.num_workers)


def chunk_id_loader(path: str, sizes: Sizes):
    """Batches of the shard ids Mosaic's shuffled iteration visits (samples are not read)."""
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader

    _prepare()

    class ShardIds(StreamingDataset):
        def __getitem__(self, idx: int) -> int:
            return int(self.spanner[idx][0])

    dataset = ShardIds(shuffle=True, batch_size=sizes.batch_size, local=path, remote=None)
    loader = DataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)
    return loader, len(_index(path)["shards"])
