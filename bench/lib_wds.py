"""WebDataset: tar shards written with ``ShardWriter`` (one process) and read with ``WebDataset`` (shard
shuffle, split by worker, a sample shuffle buffer) under a plain torch ``DataLoader``; JPEGs decode with
``torchvision.io.decode_jpeg`` in the workers. Tokens: pre-cut blocks as raw int32 tar members (as
OpenLM-style WebDataset token pipelines store them). P4 reads the shards with ``pipe:curl --aws-sigv4`` URLs
(no cache: WebDataset streams shards)."""

from __future__ import annotations

import glob
import os

from bench.config import Sizes
from bench.samples import ImageSample, TokenDocument, token_blocks

NAME = "wds"
WRITE_NOTE = "webdataset ShardWriter, 1 process (no parallel writer in the library)"
PATTERN = "shard-%06d.tar"


def preload(job: str) -> None:
    import torchvision.io  # noqa: F401
    import webdataset  # noqa: F401


def write_images(raw_root: str, out_dir: str, sizes: Sizes) -> None:
    import webdataset as wds

    sample = ImageSample(raw_root)
    os.makedirs(out_dir, exist_ok=True)
    pattern = os.path.join(out_dir, PATTERN)
    with wds.ShardWriter(pattern, maxsize=sizes.image_chunk_bytes, maxcount=10**9, verbose=0) as sink:
        for i in range(sizes.images):
            with open(sample.raw.image_path(i), "rb") as f:
                data = f.read()
            sink.write({"__key__": f"{i:08d}", "jpg": data, "cls": sample.label(i)})


def write_tokens(raw_root: str, out_dir: str, sizes: Sizes) -> int:
    import webdataset as wds

    docs = TokenDocument(raw_root)
    os.makedirs(out_dir, exist_ok=True)
    pattern = os.path.join(out_dir, PATTERN)
    with wds.ShardWriter(pattern, maxsize=sizes.token_chunk_tokens * 4, maxcount=10**9, verbose=0) as sink:
        for j, block in enumerate(token_blocks(docs, sizes.block_size)):
            sink.write({"__key__": f"{j:08d}", "bin": block.tobytes()})
    return docs.num_documents()


def shards(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "shard-*.tar")))


def count_images(out_dir: str) -> int:
    import tarfile

    total = 0
    for shard in shards(out_dir):
        with tarfile.open(shard) as tar:
            total += sum(1 for m in tar.getmembers() if m.name.endswith(".jpg"))
    return total


def _pipeline(urls: list[str], sizes: Sizes, decode):
    import webdataset as wds

    return (
        wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False, seed=42)
        .shuffle(sizes.shuffle_buffer)
        .map(decode)
    )


def _decode_image(sample: dict) -> dict:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = torch.frombuffer(bytearray(sample["jpg"]), dtype=torch.uint8)
    return {"image": decode_jpeg(data, mode=ImageReadMode.RGB), "label": int(sample["cls"])}


def _decode_tokens(sample: dict):
    import torch

    return torch.frombuffer(bytearray(sample["bin"]), dtype=torch.int32)


def image_loader(path: str, sizes: Sizes, s3: dict | None = None):
    from torch.utils.data import DataLoader

    if s3 is None:
        urls = shards(path)
    else:  # the same shards fetched from the S3 server by curl with SigV4 (WebDataset's pipe: opener)
        curl = "pipe:curl -s -f --aws-sigv4 aws:amz:us-east-1:s3 --user testing:testing"
        urls = [f"{curl} {s3['http_prefix']}/{os.path.basename(u)}" for u in shards(path)]
    dataset = _pipeline(urls, sizes, _decode_image)
    return DataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)


def token_loader(path: str, sizes: Sizes):
    from torch.utils.data import DataLoader

    dataset = _pipeline(shards(path), sizes, _decode_tokens)
    return DataLoader(dataset, batch_size=sizes.token_batch_size, num_workers=sizes.num_workers)


def chunk_id_loader(path: str, sizes: Sizes):
    """Batches of the shard each sample came from (``__url__``); images are not decoded."""
    from torch.utils.data import DataLoader

    urls = shards(path)
    ids = {u: k for k, u in enumerate(urls)}
    dataset = _pipeline(urls, sizes, lambda sample: ids[sample["__url__"]])
    return DataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers), len(urls)
