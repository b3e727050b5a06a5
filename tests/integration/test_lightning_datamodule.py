"""StreamingDataModule in Lightning's other entry points: predict (Lightning rebuilds the loader), validate,
test, missing sources, ready-made datasets, and its checkpoint state outside a Trainer."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from support.lightning import IdRecorder, other_sample, sample, write_ids
from support.resume import check_resume

from lit_streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
from lit_streaming.datamodule import DatasetOptions, StreamingDataModule

N = 23


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning_dm")
    return {
        "a": write_ids(sample, N, root / "a", chunk_size=5),
        "b": write_ids(other_sample, 9, root / "b", chunk_size=4),
        "arrays": write_ids(array_sample, 14, root / "arrays", chunk_size=4),
    }


def array_sample(i: int) -> dict:
    return {
        "id": i,
        "x": float(i),
        "arr": np.full((128, 128), i, np.float32),
    }  # 64 kB: batches use pooled slots


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers).*")
        yield


class Predictor(IdRecorder):
    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return batch["id"]

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record(kind="test", ids=batch["id"].tolist())


class KeepsLoaders(StreamingDataModule):
    def predict_dataloader(self) -> StreamingDataLoader:
        self.returned = super().predict_dataloader()
        return self.returned


def _trainer(tmp_path, **kw) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **kw,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_through_rebuilt_loader(data, tmp_path, workers):
    dm = KeepsLoaders(predict=data["a"], batch_size=4, num_workers=workers)
    trainer = _trainer(tmp_path)
    predictions = trainer.predict(Predictor(str(tmp_path / "ids")), datamodule=dm)
    used = trainer.predict_dataloaders
    assert isinstance(used, StreamingDataLoader) and used is not dm.returned  # Lightning re-instantiated it
    assert used.batch_size == 4 and used.num_workers == workers
    # the loader streams its own copy of the DataModule's dataset (loaders never mutate or share a dataset)
    assert used.dataset.order_settings() == dm.datasets["predict"].order_settings()
    assert [i for p in predictions for i in p.tolist()] == list(range(N))  # in order, each once


def test_predict_with_a_loader_passed_directly(data, tmp_path):
    """A StreamingDataLoader built outside any hook is rebuilt by Lightning from its attributes; predictions that
    keep views into (pooled) batch tensors stay intact."""

    class Views(Predictor):
        def predict_step(self, batch: dict, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
            return batch["id"], batch["arr"][:, 0, 0]

    loader = StreamingDataLoader(StreamingDataset(data["arrays"]), batch_size=4, num_workers=2)
    trainer = _trainer(tmp_path)
    predictions = trainer.predict(Views(str(tmp_path / "ids")), dataloaders=loader)
    assert isinstance(trainer.predict_dataloaders, StreamingDataLoader)
    ids = [i for p, _ in predictions for i in p.tolist()]
    values = [int(v) for _, p in predictions for v in p.tolist()]
    assert ids == values == list(range(14))


def test_validate_and_test_see_every_sample_unshuffled(data, tmp_path):
    dm = StreamingDataModule(
        val=data["a"], test=[data["a"], data["b"]], batch_size=4, dataset=DatasetOptions(shuffle=True)
    )
    trainer = _trainer(tmp_path)
    model = Predictor(str(tmp_path / "ids"))
    trainer.validate(model, datamodule=dm)
    assert model.val_ids == list(range(N))
    trainer.test(model, datamodule=dm)
    assert isinstance(dm.datasets["test"], CombinedStreamingDataset)
    assert not any(d.shuffle for d in dm.datasets["test"].datasets)


def test_fit_without_val_source_skips_validation(data, tmp_path):
    dm = StreamingDataModule(train=data["a"], batch_size=4)
    model = IdRecorder(str(tmp_path / "ids"))  # has a validation_step
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == -(-N // 4) and model.val_ids == []
    with pytest.raises(ValueError, match="no `test` source"):
        trainer.test(Predictor(str(tmp_path / "ids")), datamodule=dm)


def test_ready_made_datasets_and_mappings(data, tmp_path):
    ready = StreamingDataset(data["a"], shuffle=True)
    dm = StreamingDataModule(train=ready, val={data["a"]: 1.0, data["b"]: 3.0}, batch_size=4)
    dm.setup("fit")
    assert dm.datasets["train"] is ready
    assert dm.datasets["val"].weights == [0.25, 0.75]
    trainer = _trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(IdRecorder(str(tmp_path / "ids")), datamodule=dm)
    assert trainer.global_step == -(-N // 4)


@pytest.mark.parametrize("train", ["a", "mix"])
def test_its_train_loader_resumes_exactly(data, train):
    source = data["a"] if train == "a" else {data["a"]: 1.0, data["b"]: 1.0}

    def make():
        return StreamingDataModule(train=source, batch_size=4, num_workers=0).train_dataloader()

    check_resume(make, break_epoch=0, break_after=3)
    check_resume(make, break_epoch=1, break_after=1)


def test_state_outside_a_trainer(data):
    dm = StreamingDataModule(train=data["a"], batch_size=4, num_workers=0)
    assert dm.state_dict() == {}
    loader = dm.train_dataloader()
    it = iter(loader)
    head = [next(it)["id"].tolist() for _ in range(2)]
    state = dm.state_dict()
    assert state["train_loader"]["consumed"] == 8
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=True) == state  # plain Python only

    fresh = StreamingDataModule(train=data["a"], batch_size=4, num_workers=0)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state  # still pending: saved again unchanged before the loader exists
    rest = [b["id"].tolist() for b in fresh.train_dataloader()]
    whole = [b["id"].tolist() for b in StreamingDataModule(train=data["a"], batch_size=4).train_dataloader()]
    assert head + rest == whole
