"""lit-streaming (this repository): ``lit_streaming_writer.optimize`` + ``StreamingDataset`` /
``StreamingDataLoader``; JPEG leaves decode to uint8 CHW tensors in the workers."""

from __future__ import annotations

import numpy as np

from bench.config import Sizes
from bench.samples import ImageSample, TokenDocument

NAME = "ours"
WRITE_NOTE = "lit_streaming_writer.optimize, 2 worker processes"


def preload(job: str) -> None:
    import torchvision.io  # noqa: F401

    import lit_streaming  # noqa: F401

    if job == "write":
        # lit_streaming_writer imports its launcher (Lightning Fabric, ~1.5 s after torch) on the first optimize
        # call; it is imported here, before the clock, like every library's own imports (the cell reports how
        # long all of them took). Reading needs neither, and its cells do not import them (62 MB of memory).
        import lightning.fabric  # noqa: F401

        import lit_streaming_writer  # noqa: F401


def write_images(raw_root: str, out_dir: str, sizes: Sizes) -> None:
    from lit_streaming_writer import optimize

    fn = ImageSample(raw_root)
    optimize(
        fn=fn,
        inputs=list(range(sizes.images)),
        output_dir=out_dir,
        num_workers=sizes.num_workers,
        chunk_bytes=sizes.image_chunk_bytes,
        mode="overwrite",
    )


def write_tokens(raw_root: str, out_dir: str, sizes: Sizes) -> int:
    from lit_streaming import TokensLoader
    from lit_streaming_writer import optimize

    fn = TokenDocument(raw_root)
    n = fn.num_documents()
    optimize(
        fn=fn,
        inputs=list(range(n)),
        output_dir=out_dir,
        num_workers=sizes.num_workers,
        chunk_size=sizes.token_chunk_tokens,
        item_loader=TokensLoader(),
        mode="overwrite",
    )
    return n


def count_images(out_dir: str) -> int:
    from lit_streaming import StreamingDataset

    return len(StreamingDataset(out_dir))


def _dataset(path: str, s3: dict | None = None, **kwargs):
    from lit_streaming import StreamingDataset

    if s3 is None:
        return StreamingDataset(path, shuffle=True, **kwargs)
    options = {"endpoint_url": s3["endpoint"], "key": "testing", "secret": "testing"}
    return StreamingDataset(
        s3["url"], shuffle=True, storage_options=options, cache_dir=s3["cache_dir"], **kwargs
    )


def image_loader(path: str, sizes: Sizes, s3: dict | None = None):
    from lit_streaming import StreamingDataLoader

    dataset = _dataset(path, s3)
    return StreamingDataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)


def token_loader(path: str, sizes: Sizes):
    from lit_streaming import StreamingDataLoader, TokensLoader

    dataset = _dataset(path, item_loader=TokensLoader(block_size=sizes.block_size))
    return StreamingDataLoader(dataset, batch_size=sizes.token_batch_size, num_workers=sizes.num_workers)


def chunk_id_loader(path: str, sizes: Sizes):
    """Batches of the chunk ids the shuffled loader would read (samples are not read)."""
    from lit_streaming import StreamingDataLoader, StreamingDataset

    class ChunkIds(StreamingDataset):
        def __getitem__(self, index: int) -> int:
            return int(np.searchsorted(self._bench_offsets, index, side="right") - 1)

    dataset = ChunkIds(path, shuffle=True)
    dataset._bench_offsets = np.cumsum(np.concatenate([[0], dataset.chunk_lengths]))
    loader = StreamingDataLoader(dataset, batch_size=sizes.batch_size, num_workers=sizes.num_workers)
    return loader, len(dataset.chunk_lengths)
