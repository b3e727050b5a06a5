"""Tiny Lightning models for the demo and the example configs."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn import functional as F


def image_batch(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG leaves arrive as uint8 NCHW tensors (HWC arrays are permuted): make them float in [0, 1]."""
    images = batch["image"]
    if images.dim() == 4 and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    return images.float().div_(255), batch["label"]


class ShapesClassifier(LightningModule):
    """A small CNN that learns circle / square / triangle in a couple of CPU epochs."""

    def __init__(self, lr: float = 3e-3, num_classes: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )
        self.seen_ids: list[int] = []
        self.last_val_acc: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = image_batch(batch)
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, y = image_batch(batch)
        acc = (self(x).argmax(-1) == y).float().mean()
        self.log("val_acc", acc, prog_bar=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        acc = self.trainer.callback_metrics.get("val_acc")
        if acc is not None and not self.trainer.sanity_checking:
            self.last_val_acc = float(acc)
            self.print(
                f"epoch {self.current_epoch}: validation accuracy {self.last_val_acc:.1%} (chance 33.3%)"
            )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class TinyLM(LightningModule):
    """A next-token model over TokensLoader blocks (block_size = context + 1)."""

    def __init__(self, vocab_size: int = 256, dim: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab_size, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, vocab_size)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        tokens = batch.long() % self.hparams.vocab_size
        hidden, _ = self.rnn(self.embed(tokens[:, :-1]))
        loss = F.cross_entropy(self.head(hidden).flatten(0, 1), tokens[:, 1:].flatten())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
