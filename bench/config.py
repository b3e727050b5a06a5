"""Sizes and settings shared by every library in one run (the same for all, so rates compare)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

LIBS = ("ours", "litdata", "mosaic", "wds")
LIB_TITLES = {"ours": "lit-streaming", "litdata": "LitData", "mosaic": "MosaicML", "wds": "WebDataset"}
JOBS = ("P1", "P2", "P3", "P4", "P5", "P6", "P8")
# jobs whose table rows come from the P1 cell (its memory and its first batches)
FROM_P1 = ("P1", "P6", "P8")

IMAGE_WIDTH = 320
IMAGE_HEIGHT = 256
NUM_CLASSES = 1000
VOCAB = 50_304


@dataclass(frozen=True)
class Sizes:
    name: str
    images: int  # JPEG files generated
    tokens: int  # int32 tokens generated
    mean_doc_tokens: int  # documents are exponential-length runs of the token stream
    image_chunk_bytes: int  # chunk / shard target for every library's image dataset
    token_chunk_tokens: int  # tokens per chunk (LitData's TokensLoader chunk_size); peers: same bytes
    batch_size: int = 64
    num_workers: int = 2
    epochs: int = 2  # P1
    token_epochs: int = 5  # P2 (an epoch of 50M tokens takes ~1.5 s: more epochs steady the rate)
    block_size: int = 2049
    token_batch_size: int = 8
    warmup_batches: int = 4  # per epoch, excluded from steady-state rates (P1, P2)
    shuffle_buffer: int = 1000  # WebDataset sample shuffle buffer
    job_timeout_s: int = 600
    repeat: int = 2  # rounds of the timed jobs; each cell reports its best round
    # P1/P6 forked from the zygote rather than started in a fresh interpreter (see bench/run.py)
    fork_memory_cell: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FULL = Sizes(
    name="full",
    images=20_000,
    tokens=50_000_000,
    mean_doc_tokens=2_000,
    image_chunk_bytes=16_000_000,
    token_chunk_tokens=2049 * 2048,
)

SMALL = Sizes(
    name="small",
    images=512,
    tokens=2_000_000,
    mean_doc_tokens=2_000,
    image_chunk_bytes=1_000_000,
    token_chunk_tokens=2049 * 128,
    warmup_batches=1,
    token_epochs=2,
    job_timeout_s=120,
    repeat=1,
    fork_memory_cell=True,
)
