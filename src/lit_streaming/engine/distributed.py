"""Where this process sits in the job, read when iteration starts (never at construction), so a dataset built
before DDP starts still shards correctly."""

from __future__ import annotations

import os

import torch.distributed as dist

from lit_streaming.errors import LitStreamingValueError


def world() -> tuple[int, int]:
    """(rank, world_size): torch.distributed when initialized, else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size < 1 or not 0 <= rank < world_size:
        raise LitStreamingValueError(f"Inconsistent environment: RANK={rank}, WORLD_SIZE={world_size}")
    return rank, world_size
