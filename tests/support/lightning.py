"""Shared pieces of the Lightning tests: small id datasets and a model that records what it trains on.

Everything here is importable by name (the spawned DDP processes unpickle the model from this module).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from torch import nn


def sample(i: int) -> dict:
    """A sample whose id is recorded by the model; ``x`` gives the model something to learn from."""
    return {"id": i, "x": float(i % 7)}


def other_sample(i: int) -> dict:
    return {"id": 10_000 + i, "x": float(i % 5)}


def write_ids(fn: Any, count: int, out: Path, chunk_size: int) -> str:
    from lit_streaming_writer import optimize

    optimize(fn, list(range(count)), str(out), chunk_size=chunk_size, num_workers=1)
    return str(out)


class IdRecorder(LightningModule):
    """Appends one JSON line per training step (and per validation epoch) to ``{record_dir}/rank{r}.jsonl``.

    Files, not attributes, so that spawned DDP processes report back too. ``read_stepping_batches`` reads
    ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` (it builds the train loader early, before
    Lightning restores the loop state) and uses it for a LR schedule, as real training scripts do.
    """

    def __init__(self, record_dir: str, read_stepping_batches: bool = False) -> None:
        super().__init__()
        self.record_dir = record_dir
        self.read_stepping_batches = read_stepping_batches
        self.layer = nn.Linear(1, 1)
        self.val_ids: list[int] = []

    def _record(self, **entry: Any) -> None:
        os.makedirs(self.record_dir, exist_ok=True)
        with open(os.path.join(self.record_dir, f"rank{self.global_rank}.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._record(
            kind="train",
            epoch=self.current_epoch,
            step=self.global_step,
            batch_idx=batch_idx,
            ids=batch["id"].tolist(),
        )
        x = batch["x"].float().unsqueeze(1)
        return (self.layer(x) - x).pow(2).mean()

    def on_train_start(self) -> None:
        loader = self.trainer.train_dataloader
        self._record(
            kind="loader",
            loader=type(loader).__name__,
            sampler=type(loader.sampler).__name__,
            batches=len(loader),
            world_size=self.trainer.world_size,
        )

    def on_validation_epoch_start(self) -> None:
        self.val_ids = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_ids.extend(batch["id"].tolist())

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._record(kind="val", epoch=self.current_epoch, ids=self.val_ids)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        if not self.read_stepping_batches:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def read_records(record_dir: str | Path, rank: int = 0, kind: str = "train") -> list[dict]:
    path = Path(record_dir, f"rank{rank}.jsonl")
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in entries if e["kind"] == kind]


def steps(records: list[dict]) -> list[tuple[int, int, list[int]]]:
    """(epoch, global step, ids) per training step: what must match between runs."""
    return [(r["epoch"], r["step"], r["ids"]) for r in records]


class SaveAt(Callback):
    """``trainer.save_checkpoint`` at chosen points: after global step k, at an epoch's end; optionally stop."""

    def __init__(
        self,
        folder: str,
        at_steps: tuple[int, ...] = (),
        at_epoch_ends: tuple[int, ...] = (),
        stop: bool = False,
    ) -> None:
        self.folder = folder
        self.at_steps = set(at_steps)
        self.at_epoch_ends = set(at_epoch_ends)
        self.stop = stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in self.at_steps:
            trainer.save_checkpoint(os.path.join(self.folder, f"step{trainer.global_step}.ckpt"))
            if self.stop:
                trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch in self.at_epoch_ends:
            trainer.save_checkpoint(os.path.join(self.folder, f"epoch{trainer.current_epoch}-end.ckpt"))
            if self.stop:
                trainer.should_stop = True
