"""LitData 0.2.76: ``litdata.optimize`` + ``StreamingDataset`` / ``StreamingDataLoader``; its ``jpeg``
serializer decodes to uint8 CHW tensors with torchvision, as ours does."""

from __future__ import annotations

from bench.config import Sizes
from bench.samples import ImageSample, TokenDocument

NAME = "litdata"
WRITE_NOTE = "litdata.optimize, 2 worker processes (spawned)"


def preload(job: str) -> None:
    import litdata  # noqa: F401
    import torchvision.io  # noqa: F401


def write_images(raw_root: str, out_dir: str, sizes: Sizes) -> None:
    import litdata

    litdata.optimize(
        fn=ImageSample(raw_root),
        inputs=list(range(sizes.images)),
        output_dir=out_dir,
        num_workers=sizes.num_workers,
        chunk_bytes=sizes.image_chunk_bytes,
        mode="overwrite",
    )


def write_tokens(raw_root: str, out_dir: str, sizes: Sizes) -> int:
    import litdata

    fn = TokenDocument(raw_root)
    n = fn.num_documents()
    litdata.optimize(
        fn=fn,
        inputs=list(range(n)),
        output_dir=out_dir,
        num_workers=sizes.num_workers,
        chunk_size=sizes.token_chunk_tokens,
        item_loader=litdata.TokensLoader(),
        mode="overwrite",
    )
    return n


def count_images(out_dir: str) -> int:
    import litdata

    return len(litdata.StreamingDataset(out_dir))


def _dataset(path: str, s3: dict | None = None, **kwargs):
    import litdata

    if s3 is None:
        return litdata.StreamingDataset(path, shuffle=True, **kwargs)
    return litdata.StreamingDataset(s3["url"], shuffle=True, cache_dir=s3["cache_dir"], **kwargs)


def image_loader(path: str, sizes: Sizes, s3: dict | None = None):
    import litdata

    dataset = _dataset(path, s3)
    return litdata.StreamingDataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)


def token_loader(path: str, sizes: Sizes):
    import litdata

    dataset = _dataset(path, item_loader=litdata.TokensLoader(block_size=sizes.block_size))
    return litdata.StreamingDataLoader(
        dataset, batch_size=sizes.token_batch_size, num_workers=sizes.num_workers
    )


def chunk_id_loader(path: str, sizes: Sizes):
    """Batches of the chunk ids LitData's shuffled iteration visits (``__getitem__`` receives a
    ``ChunkedIndex`` naming the chunk; samples are not read)."""
    import litdata

    class ChunkIds(litdata.StreamingDataset):
        def __getitem__(self, index):
            return int(index.chunk_index)

    dataset = ChunkIds(path, shuffle=True)
    loader = litdata.StreamingDataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)
    return loader, index_chunks(path)


def index_chunks(path: str) -> int:
    import json
    import os

    with open(os.path.join(path, "index.json")) as f:
        return len(json.load(f)["chunks"])
