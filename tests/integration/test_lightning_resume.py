"""Exact resume through Lightning checkpoints, single process.

One uninterrupted reference fit per setting saves checkpoints at several points (mid-epoch, on the epoch's
last batch, after validation, at the epoch's end); a fresh Trainer, model and StreamingDataModule resumed from
each with ``ckpt_path=`` must then train on exactly the reference's remaining batches, in order, through the
following epochs: none repeated, none skipped, the next epoch with the next epoch's shuffle.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from support.lightning import IdRecorder, SaveAt, other_sample, read_records, sample, steps, write_ids
from support.resume import assert_resumed

from lit_streaming import StreamingDataLoader
from lit_streaming.datamodule import DatasetOptions, StreamingDataModule

N, OTHER, BATCH, EPOCHS = 46, 23, 4, 3
STEPS_PER_EPOCH = -(-N // BATCH)  # 12: the last batch is partial (drop_last resolves to False on one device)
MID = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning_resume")
    return {
        "train": write_ids(sample, N, root / "train", chunk_size=5),
        "other": write_ids(other_sample, OTHER, root / "other", chunk_size=4),
        "val": write_ids(sample, 10, root / "val", chunk_size=4),
    }


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|callbacks used to create).*")
        yield


@dataclass(frozen=True)
class Case:
    workers: int = 0
    combined: bool = False  # a mix of two datasets (CombinedStreamingDataset; weighted when not mix_all)
    mix_all: bool = True  # iterate_over_all; False: each epoch's draw stops when a dataset runs out
    seed: int = 7
    persistent: bool = False
    stepping: bool = False  # configure_optimizers reads trainer.estimated_stepping_batches
    trainer: dict = field(default_factory=dict)
    # checkpoints to resume from, under the reference run's folders: "mid", "last" (an epoch's last batch,
    # before validation), "val" (after validation: the default ModelCheckpoint), "end" (on_train_epoch_end)
    points: tuple[str, ...] = ("mid/step=5", "last/step={per_epoch}", "end/epoch0-end")

    def epoch_steps(self, data) -> tuple[list[int], list[int]]:
        """Batches drawn per epoch, and the steps Lightning runs: it cuts every epoch at the first epoch's length
        (read once) or at ``limit_train_batches``; an epoch whose draw is shorter ends early."""
        loader = StreamingDataLoader(_datamodule(data, self)._build("train"), batch_size=BATCH)
        drawn = [sum(1 for _ in loader) for _ in range(EPOCHS)]
        cut = min(drawn[0], self.trainer.get("limit_train_batches", drawn[0]))
        return drawn, [min(n, cut) for n in drawn]


CASES = {
    "workers0": Case(points=("mid/step=5", "last/step=12", "val/step=12", "end/epoch0-end", "mid/step=25")),
    "workers2": Case(workers=2),
    "persistent-workers2": Case(workers=2, persistent=True, points=("mid/step=5", "val/step=12")),
    "combined-workers2": Case(
        workers=2, combined=True, points=("mid/step=5", "last/step=18", "end/epoch1-end")
    ),
    # a mix that ends when the first dataset runs out (a new order each epoch, the same length)
    "combined-first-exhausted": Case(
        workers=2,
        combined=True,
        mix_all=False,
        seed=2,
        points=("mid/step=5", "last/step={per_epoch}", "end/epoch1-end"),
    ),
    "stepping-batches": Case(stepping=True),
    # epochs cut short by the Trainer: the state after the last allowed batch must point at the next epoch
    "limit-train-batches": Case(trainer={"limit_train_batches": 7}, points=("mid/step=5", "val/step=7")),
    # validation (and the default checkpoint) in the middle of the epoch
    "mid-epoch-validation": Case(trainer={"val_check_interval": 5}, points=("val/step=5", "val/step=22")),
    # a fresh loader every epoch must go on with the next epoch, not replay epoch 0
    "reload-every-epoch": Case(
        workers=2, trainer={"reload_dataloaders_every_n_epochs": 1}, points=("mid/step=5", "end/epoch0-end")
    ),
}


def _datamodule(data, case: Case) -> StreamingDataModule:
    return StreamingDataModule(
        train=[data["train"], data["other"]] if case.combined else data["train"],
        val=data["val"],
        batch_size=BATCH,
        num_workers=case.workers,
        persistent_workers=case.persistent,
        weights=[0.6, 0.4] if case.combined and not case.mix_all else None,  # need iterate_over_all=False
        iterate_over_all=case.mix_all,
        dataset=DatasetOptions(seed=case.seed),
    )


def _fit(root: Path, name: str, data, case: Case, callbacks=(), ckpt_path=None):
    record = root / name
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        default_root_dir=root,
        **case.trainer,
    )
    model = IdRecorder(str(record), read_stepping_batches=case.stepping)
    trainer.fit(model, datamodule=_datamodule(data, case), ckpt_path=ckpt_path)
    return trainer, steps(read_records(record)), read_records(record, kind="val")


def _checkpointers(folder: Path, per_epoch: int) -> list:
    kw = dict(save_top_k=-1, save_last=False, enable_version_counter=False)
    return [
        ModelCheckpoint(folder / "mid", filename="{step}", every_n_train_steps=MID, **kw),
        ModelCheckpoint(folder / "last", filename="{step}", every_n_train_steps=per_epoch, **kw),
        ModelCheckpoint(folder / "val", filename="{step}", **kw),
        # after the epoch's end: Lightning does not restore the loader itself, the DataModule's state does
        SaveAt(str(folder / "end"), at_epoch_ends=(0, 1)),
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_resume_matches_uninterrupted_run(data, tmp_path, name):
    case = CASES[name]
    drawn, epoch_steps = case.epoch_steps(data)
    if not case.mix_all:
        assert (
            len(set(drawn)) == 1
        ), f"a mix ending at the first exhausted dataset has a fixed length: {drawn}"
    per_epoch = epoch_steps[0]
    _, reference, ref_val = _fit(tmp_path, "reference", data, case, _checkpointers(tmp_path, per_epoch))
    assert [r[0] for r in reference] == [e for e in range(EPOCHS) for _ in range(epoch_steps[e])]
    epoch_ids = [sorted(i for r in reference if r[0] == e for i in r[2]) for e in range(EPOCHS)]
    assert all(len(ids) == len(set(ids)) for ids in epoch_ids), "a sample repeated within an epoch"
    if case.mix_all and "limit_train_batches" not in case.trainer:
        everything = list(range(N)) + ([10_000 + i for i in range(OTHER)] if case.combined else [])
        assert all(ids == everything for ids in epoch_ids), "each epoch sees every sample once"
    orders = {tuple(i for r in reference if r[0] == e for i in r[2]) for e in range(EPOCHS)}
    assert len(orders) == EPOCHS, "every epoch has its own shuffle"
    checks = per_epoch // case.trainer.get("val_check_interval", per_epoch)
    assert [v["epoch"] for v in ref_val] == [e for e in range(EPOCHS) for _ in range(checks)]

    for point in case.points:
        ckpt = tmp_path / (point.format(per_epoch=per_epoch) + ".ckpt")
        assert ckpt.exists(), sorted(p.name for p in ckpt.parent.iterdir())
        done = torch.load(ckpt, weights_only=True)["global_step"]
        trainer, resumed, _ = _fit(
            tmp_path, f"resumed-{point.replace('/', '-')}", data, case, ckpt_path=str(ckpt)
        )
        assert_resumed(reference, done, resumed, f"from {point}")
        assert trainer.current_epoch == EPOCHS and trainer.global_step == len(reference)


def test_stopped_run_resumes_exactly(data, tmp_path):
    """A run that really stops right after a mid-epoch checkpoint (workers still prefetching), then resumes."""
    case = Case(workers=2)
    _, reference, _ = _fit(tmp_path, "reference", data, case)
    stop = SaveAt(str(tmp_path), at_steps=(STEPS_PER_EPOCH + 3,), stop=True)
    _, first, _ = _fit(tmp_path, "first", data, case, callbacks=[stop])
    assert first == reference[: STEPS_PER_EPOCH + 3]
    ckpt = tmp_path / f"step{STEPS_PER_EPOCH + 3}.ckpt"
    _, resumed, _ = _fit(tmp_path, "resumed", data, case, ckpt_path=str(ckpt))
    assert_resumed(reference, STEPS_PER_EPOCH + 3, resumed, "a stopped run")


def test_checkpoint_holds_plain_loader_state(data, tmp_path):
    """The loader position sits where Lightning keeps it and in the DataModule's own entry, as plain Python, and
    loads with ``weights_only=True``."""
    _fit(tmp_path, "run", data, Case(), [SaveAt(str(tmp_path), at_steps=(MID,))])
    ckpt = torch.load(tmp_path / f"step{MID}.ckpt", weights_only=True)
    loop_states = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    dm_state = ckpt[StreamingDataModule.__qualname__]["train_loader"]
    assert loop_states == [dm_state]
    assert dm_state["consumed"] == MID * BATCH and dm_state["epoch"] == 0
    loader = StreamingDataLoader(_datamodule(data, Case())._build("train"), batch_size=BATCH)
    loader.load_state_dict(dm_state)
    assert len(list(loader)) == STEPS_PER_EPOCH - MID
