"""StreamingDataModule: streaming datasets in Lightning's hooks, with the train position in every checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from lightning.pytorch import LightningDataModule

from lit_streaming.combined import CombinedStreamingDataset
from lit_streaming.dataloader import StreamingDataLoader
from lit_streaming.dataset import StreamingDataset
from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming.item_loaders import TokensLoader
from lit_streaming.storage import StorageSettings
from lit_streaming.stream import Stream

#: A dataset URL/path, several of them (mixed; see ``weights``), a {path: weight} mapping, or built datasets.
Source = str | list[str] | dict[str, float] | StreamingDataset | CombinedStreamingDataset | None


@dataclass
class DatasetOptions:
    """How the DataModule builds each :class:`StreamingDataset`: every field is that class's argument of the same
    name (``block_size`` reads token datasets with ``TokensLoader(block_size)``), so a dataset option is added
    here once. In a LightningCLI config they are the nested keys ``data.dataset.*``.

    ``shuffle`` applies to training data only (evaluation data is never shuffled); ``drop_last=None`` means
    True for training when distributed, while evaluation splits keep every sample and even out ranks with a
    few repeats. ``seed`` also seeds the mixing of several datasets.
    """

    shuffle: bool = True
    seed: int = 42
    drop_last: bool | None = None
    block_size: int | None = None
    shuffle_window: int | None = None
    subsample: float = 1.0
    allow_pickle: bool = False
    cache_dir: str | None = None
    max_cache_size: int | str = "100GB"
    storage_options: dict[str, Any] | None = None
    format: str | None = None  # detected from what is at the path when None: litdata, mds, wds, parquet
    # Remote reads: retries, backoff, timeouts, prefetch depth, download threads (None: the defaults).
    storage_settings: StorageSettings | None = None

    def build(self, path: str, split: str, transform: Callable[[Any], Any] | None) -> StreamingDataset:
        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "block_size"}
        kwargs["shuffle"] = self.shuffle and split == "train"
        if self.drop_last is None and split != "train":
            # Evaluation sees every sample: ranks are evened out with a few repeats, not by dropping samples.
            kwargs["drop_last"] = False
        item_loader = TokensLoader(self.block_size) if self.block_size else None
        return StreamingDataset(path, item_loader=item_loader, transform=transform, **kwargs)


class StreamingDataModule(LightningDataModule):
    """``Trainer.fit(model, datamodule=StreamingDataModule(train="s3://bucket/train", val=...))``.

    Datasets are built in ``setup()`` (once per process, after DDP started); ranks and workers are sharded at
    iteration time, so no DistributedSampler is involved. ``state_dict()`` carries the train loader's exact
    position, so resuming with ``ckpt_path=`` continues with exactly the batches an uninterrupted run would
    have seen next.

    Args:
        train, val, test, predict: a dataset path/URL, a list of them or a ``{path: weight}`` mapping (mixed with
            CombinedStreamingDataset), or a ready streaming dataset (used as it is).
        batch_size, num_workers, pin_memory, persistent_workers: passed to each StreamingDataLoader.
        dataset: how each dataset is built from a path (:class:`DatasetOptions`: shuffle, seed, block_size,
            cache and storage settings, ...).
        weights, iterate_over_all, batching_method: mixing settings when a source lists several datasets
            (``iterate_over_all=None``: ``False`` when weights are given, which they need, else ``True``).
        transform: applied to every sample (Python API only).
    """

    def __init__(
        self,
        train: Source = None,
        val: Source = None,
        test: Source = None,
        predict: Source = None,
        batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        dataset: DatasetOptions | None = None,
        weights: list[float] | None = None,
        iterate_over_all: bool | None = None,
        batching_method: str = "stratified",
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__()
        if train is None and val is None and test is None and predict is None:
            raise LitStreamingValueError(
                "StreamingDataModule needs at least one of train, val, test or predict"
            )
        if dataset is not None and not isinstance(dataset, DatasetOptions):
            raise LitStreamingTypeError(f"`dataset` must be a DatasetOptions, got {type(dataset).__name__}")
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.dataset_options = dataset if dataset is not None else DatasetOptions()
        self.weights = weights
        self.iterate_over_all = iterate_over_all
        self.batching_method = batching_method
        self.transform = transform
        self.datasets: dict[str, Stream] = {}
        self._train_loader: StreamingDataLoader | None = None
        self._restore: dict[str, Any] | None = None

    # ---- datasets --------------------------------------------------------------------------------------------
    def _dataset(self, path: str, split: str) -> StreamingDataset:
        return self.dataset_options.build(path, split, self.transform)

    def _build(self, split: str) -> Stream | None:
        source = self.sources[split]
        if source is None or isinstance(source, Stream):
            return source
        if isinstance(source, str):
            return self._dataset(source, split)
        paths, weights = (
            (list(source), list(source.values())) if isinstance(source, dict) else (source, self.weights)
        )
        if not paths:
            raise LitStreamingValueError(f"`{split}` lists no datasets")
        over_all = self.iterate_over_all if self.iterate_over_all is not None else weights is None
        return CombinedStreamingDataset(
            [self._dataset(p, split) for p in paths],
            seed=self.dataset_options.seed,
            weights=weights,
            iterate_over_all=over_all,
            batching_method=self.batching_method,
        )

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test", "predict"):
            if split not in self.datasets and self.sources[split] is not None:
                self.datasets[split] = self._build(split)  # type: ignore[assignment]

    # ---- loaders ---------------------------------------------------------------------------------------------
    def _loader(self, split: str) -> StreamingDataLoader:
        if split not in self.datasets:
            self.setup()
        if split not in self.datasets:
            raise LitStreamingValueError(f"StreamingDataModule has no `{split}` source")
        return StreamingDataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> StreamingDataLoader:
        loader = self._loader("train")
        loader.limit_batches = self._train_batch_limit(loader)
        if self._restore is not None:
            # Lightning does not load the loader state itself when the checkpoint was taken after an epoch
            # ended, or when the loader was built early (estimated_stepping_batches): apply ours.
            loader.load_state_dict(self._restore)
            self._restore = None
        elif self._train_loader is not None:
            # Rebuilt (reload_dataloaders_every_n_epochs): go on from the previous loader's position, i.e. the
            # next epoch, instead of starting over at epoch 0.
            loader.load_state_dict(self._train_loader.state_dict())
        self._train_loader = loader
        return loader

    def _train_batch_limit(self, loader: StreamingDataLoader) -> int | None:
        """Where Lightning ends every epoch: it reads ``len(loader)`` once, when the loader is built, and stops
        there or at ``limit_train_batches``. The loader ends its epochs at the same point, so that a checkpoint
        taken after an epoch's last batch resumes into the next epoch. Every stream's epoch length is the same
        every epoch, so only a limit below it needs telling."""
        if self.trainer is None:
            return None
        length = len(loader)
        limit = self.trainer.limit_train_batches
        batches = length
        if isinstance(limit, int) and not isinstance(limit, bool):
            batches = min(length, limit)
        elif isinstance(limit, float):
            batches = int(length * limit)
        return batches if batches < length else None

    def val_dataloader(self) -> StreamingDataLoader | list:
        # Lightning asks for validation data whenever the model has a validation_step: no source, no validation.
        return self._loader("val") if self.sources["val"] is not None else []

    def test_dataloader(self) -> StreamingDataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> StreamingDataLoader:
        return self._loader("predict")

    # ---- checkpoint state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._train_loader is not None:
            return {"train_loader": self._train_loader.state_dict()}
        return {"train_loader": self._restore} if self._restore is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._restore = state
