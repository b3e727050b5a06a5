"""Trainer DDP on the CPU over gloo, two processes.

- ``ddp_spawn`` (in this process): no DistributedSampler, equal steps on every rank, every sample exactly once
  per epoch across ranks, validation every epoch on every validation sample.
- ``ddp`` (this file run as a script, Lightning re-launching it for rank 1), with two loader workers per rank: a
  mid-epoch checkpoint resumes each rank exactly where the uninterrupted run went on. (DataLoader workers inside
  ``ddp_spawn`` processes are themselves spawned, ~25 s each on 2 cores, so workers are exercised under ``ddp``.)

Each process appends what it trained on to ``rank{r}.jsonl`` (see ``support.lightning``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from support import subprocess_env
from support.lightning import IdRecorder, read_records, sample, steps, write_ids
from support.resume import assert_resumed

from lit_streaming.datamodule import DatasetOptions, StreamingDataModule

N, VAL, BATCH, WORLD, EPOCHS = 48, 11, 4, 2, 3
STEPS = N // (WORLD * BATCH)  # 6 per rank per epoch
CKPT_STEP = 4  # mid epoch 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning_ddp")
    return {
        "train": write_ids(sample, N, root / "train", chunk_size=5),
        "val": write_ids(sample, VAL, root / "val", chunk_size=4),
    }


def fit(
    train: str,
    val: str,
    root: Path,
    strategy: str,
    workers: int,
    ckpt_path: str | None = None,
    devices: int = WORLD,
) -> None:
    dm = StreamingDataModule(
        train=train, val=val, batch_size=BATCH, num_workers=workers, dataset=DatasetOptions(seed=3)
    )
    callbacks = []
    if ckpt_path is None:
        callbacks.append(
            ModelCheckpoint(root / "ckpt", filename="{step}", every_n_train_steps=CKPT_STEP, save_top_k=-1)
        )
    if strategy == "ddp" and devices > 1:
        # A rank that fails or stalls must end the job with its error, not leave the other waiting 30 minutes.
        strategy = DDPStrategy(timeout=timedelta(seconds=90))
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy if devices > 1 else "auto",
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(callbacks),
        callbacks=callbacks,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|callbacks used to create).*")
        trainer.fit(IdRecorder(str(root / "ids")), datamodule=dm, ckpt_path=ckpt_path)


def _per_rank(root: Path, world: int = WORLD) -> list[list[tuple[int, int, list[int]]]]:
    return [steps(read_records(root / "ids", rank)) for rank in range(world)]


def test_ddp_spawn_exactly_once_equal_steps_and_validation(data, tmp_path):
    fit(data["train"], data["val"], tmp_path, "ddp_spawn", workers=0)
    per_rank = _per_rank(tmp_path)
    for rank in range(WORLD):
        (loader,) = read_records(tmp_path / "ids", rank, kind="loader")
        assert loader["loader"] == "StreamingDataLoader" and loader["world_size"] == WORLD
        assert "Distributed" not in loader["sampler"], "Lightning injected a DistributedSampler"
        assert loader["batches"] == STEPS
    assert [len(s) for s in per_rank] == [STEPS * EPOCHS] * WORLD, "ranks ran different numbers of steps"
    for epoch in range(EPOCHS):
        seen = [i for s in per_rank for (e, _, ids) in s if e == epoch for i in ids]
        assert sorted(seen) == list(range(N)), f"epoch {epoch}: not every sample exactly once across ranks"
    orders = {tuple(i for (e, _, ids) in per_rank[0] if e == epoch for i in ids) for epoch in range(EPOCHS)}
    assert len(orders) == EPOCHS, "every epoch has its own shuffle"

    val = [read_records(tmp_path / "ids", rank, kind="val") for rank in range(WORLD)]
    for rank in range(WORLD):
        assert [v["epoch"] for v in val[rank]] == list(range(EPOCHS)), "validation did not run every epoch"
    for epoch in range(EPOCHS):
        ids = [val[rank][epoch]["ids"] for rank in range(WORLD)]
        assert len({len(v) for v in ids}) == 1, "ranks validated on different numbers of samples"
        counts = Counter(i for v in ids for i in v)
        # every validation sample; the few that even out the ranks are repeats
        assert set(counts) == set(range(VAL)) and sum(counts.values()) - VAL < WORLD


def _other_ranks_first(log: str) -> str:
    """A stalled run's log: rank 0's traceback is the long wait for a peer that died, so what the other rank
    printed comes first, then the end of rank 0's."""
    lines = log.splitlines()
    rank0 = [line for line in lines if line.startswith("[rank0]")]
    others = [line for line in lines if not line.startswith("[rank0]")]
    return "\n".join(others)[-8000:] + "\n...\n" + "\n".join(rank0[-5:])


def _script(mode: str, data: dict, root: Path, *extra: str) -> None:
    env = subprocess_env(PYTHONWARNINGS="ignore")  # this script and its rank-1 copy import ``support``
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(name, None)
    cmd = [sys.executable, __file__, mode, data["train"], data["val"], str(root), *extra]
    # Its own session, so that a timeout kills rank 1 (Lightning's child) with it instead of leaving it behind.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        out = stdout[-3000:] + _other_ranks_first(stderr)
        raise AssertionError(f"{mode} run timed out; its output:\n{out}") from None
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One uninterrupted 2-process ``ddp`` run with 2 workers per rank, checkpointing every CKPT_STEP steps."""
    root = tmp_path_factory.mktemp("ddp_reference")
    _script("reference", data, root)
    return root


def test_ddp_resume_with_workers_from_mid_epoch_checkpoint(data, reference, tmp_path):
    resumed = tmp_path / "resumed"
    ckpt = reference / "ckpt" / f"step={CKPT_STEP}.ckpt"
    state = torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state[0]["consumed"] == CKPT_STEP * BATCH and state[0]["world_size"] == WORLD
    _script("resume", data, resumed, str(ckpt))

    ref = _per_rank(reference)
    assert [len(s) for s in ref] == [STEPS * EPOCHS] * WORLD
    for epoch in range(EPOCHS):
        assert sorted(i for s in ref for (e, _, ids) in s if e == epoch for i in ids) == list(range(N))
    for rank, got in enumerate(_per_rank(resumed)):
        assert_resumed(ref[rank], CKPT_STEP, got, f"rank {rank}, mid-epoch checkpoint")
        assert len({e for e, _, _ in got}) == EPOCHS  # the rest of epoch 0, then two more epochs


def test_ddp_resume_from_epoch_end_checkpoint(data, reference, tmp_path):
    end = 2 * STEPS  # step 12: saved right after the last batch of epoch 1
    assert end % CKPT_STEP == 0
    _script("resume", data, tmp_path, str(reference / "ckpt" / f"step={end}.ckpt"))
    ref = _per_rank(reference)
    for rank, got in enumerate(_per_rank(tmp_path)):
        assert_resumed(ref[rank], end, got, f"rank {rank}, epoch-end checkpoint")
        assert {e for e, _, _ in got} == {2}


def _check_elastic(
    before: list[list[tuple[int, int, list[int]]]], after: list[list[tuple[int, int, list[int]]]]
):
    """Epoch 0 = the old ranks' first CKPT_STEP steps + the new ranks' epoch 0: every sample exactly once; every
    later epoch exactly once on the new world, with equal steps per rank."""
    head = [i for s in before for (e, _, ids) in s[:CKPT_STEP] for i in ids]
    for epoch in range(EPOCHS):
        rest = [i for s in after for (e, _, ids) in s if e == epoch for i in ids]
        seen = head + rest if epoch == 0 else rest
        assert sorted(seen) == list(range(N)), f"epoch {epoch}: not every sample exactly once"
        counts = {sum(1 for (e, _, _) in s if e == epoch) for s in after}
        assert len(counts) == 1, f"epoch {epoch}: ranks ran different numbers of steps"


def test_ddp_resume_on_one_device_continues_the_epoch_exactly_once(data, reference, tmp_path):
    _script("resume", data, tmp_path, str(reference / "ckpt" / f"step={CKPT_STEP}.ckpt"), "1")
    _check_elastic(_per_rank(reference), _per_rank(tmp_path, 1))


def test_one_device_resume_on_two_ddp_processes_continues_the_epoch_exactly_once(data, tmp_path):
    single, resumed = tmp_path / "single", tmp_path / "resumed"
    _script("reference", data, single, "", "1")
    _script("resume", data, resumed, str(single / "ckpt" / f"step={CKPT_STEP}.ckpt"), str(WORLD))
    _check_elastic(_per_rank(single, 1), _per_rank(resumed))


if __name__ == "__main__":
    # python test_lightning_ddp.py reference|resume TRAIN VAL OUT [CKPT [DEVICES]]: a `ddp` fit with 2 workers per
    # rank (one process when DEVICES is 1)
    mode, train, val, out = sys.argv[1:5]
    ckpt = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    devices = int(sys.argv[6]) if len(sys.argv) > 6 else WORLD
    fit(
        train, val, Path(out), "ddp", workers=2, ckpt_path=ckpt if mode == "resume" else None, devices=devices
    )
