"""optimize on the CPU: one worker in-process, two Fabric worker processes, partial and generator fns, modes,
errors naming the input, determinism, and a million inputs handed to workers without copying them."""

from __future__ import annotations

import functools
import gc
import json
import os

import pytest
from support.writer import chunk_files, fail_at, read_samples, sample, samples_of

from lit_streaming_writer import DatasetExistsError, WorkerError, optimize


@pytest.mark.parametrize("workers", [1, 2])
def test_partial_fn_order_and_ranks(tmp_path, workers):
    out = optimize(
        functools.partial(sample, scale=3), range(50), str(tmp_path), chunk_size=4, num_workers=workers
    )
    assert out == str(tmp_path)
    assert read_samples(tmp_path) == [sample(i, 3) for i in range(50)]
    ranks = {name.split("-")[1] for name in chunk_files(tmp_path)}
    assert ranks == {str(r) for r in range(workers)}
    assert sorted(os.listdir(tmp_path)) == sorted([*chunk_files(tmp_path), "index.json"])  # no leftovers


def test_generator_fn_two_workers(tmp_path):
    optimize(samples_of, list(range(21)), str(tmp_path), chunk_size=5, num_workers=2)
    assert read_samples(tmp_path) == [{"id": i, "k": k} for i in range(21) for k in range(3)]


def test_lambda_and_none_skip_with_two_workers(tmp_path):
    optimize(
        lambda i: None if i % 2 else {"id": i}, list(range(30)), str(tmp_path), chunk_size=4, num_workers=2
    )
    assert read_samples(tmp_path) == [{"id": i} for i in range(0, 30, 2)]


def test_same_inputs_and_workers_give_the_same_chunks(tmp_path):
    for name in ("a", "b"):
        optimize(samples_of, list(range(40)), str(tmp_path / name), chunk_bytes="300B", num_workers=2)
    assert chunk_files(tmp_path / "a") == chunk_files(tmp_path / "b")


def test_million_inputs(tmp_path):
    """Workers inherit the inputs by fork and read only their share; the parent pickles nothing."""
    inputs = list(range(1_000_000))
    optimize(_every_10000th, inputs, str(tmp_path), chunk_size=10, num_workers=2)
    assert [s["id"] for s in read_samples(tmp_path)] == list(range(0, 1_000_000, 10_000))


def _every_10000th(i):
    return {"id": i} if i % 10_000 == 0 else None


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_fn_names_its_input_and_publishes_nothing(tmp_path, workers):
    with pytest.raises(WorkerError, match=r"input #37 \(37\): ValueError: cannot handle 37") as info:
        optimize(
            functools.partial(fail_at, at=37), range(60), str(tmp_path), chunk_size=4, num_workers=workers
        )
    assert info.value.index == 37
    assert info.value.rank == (1 if workers == 2 else 0)
    assert not (tmp_path / "index.json").exists()


def test_inconsistent_samples_name_the_input(tmp_path):
    with pytest.raises(WorkerError, match=r"input #5 \(5\): sample structure differs") as info:
        optimize(
            lambda i: {"other": i} if i == 5 else {"id": i},
            range(10),
            str(tmp_path),
            chunk_size=2,
            num_workers=1,
        )
    assert info.value.index == 5


def test_workers_with_different_structures_publish_nothing(tmp_path):
    with pytest.raises(ValueError, match="disagree"):
        optimize(
            lambda i: {"other": i} if i >= 5 else {"id": i},
            range(10),
            str(tmp_path),
            chunk_size=2,
            num_workers=2,
        )
    assert not (tmp_path / "index.json").exists()


def test_mode_none_refuses_an_existing_dataset(tmp_path):
    optimize(sample, range(10), str(tmp_path), chunk_size=4, num_workers=2)
    with pytest.raises(DatasetExistsError, match="mode='overwrite'"):  # another call (a rerun of the same
        optimize(sample, range(11), str(tmp_path), chunk_size=4, num_workers=2)  # one finds it done)


def test_mode_overwrite_replaces_everything(tmp_path):
    optimize(sample, range(30), str(tmp_path), chunk_size=2, num_workers=2)
    optimize(
        functools.partial(sample, scale=5),
        range(7),
        str(tmp_path),
        chunk_size=4,
        num_workers=2,
        mode="overwrite",
    )
    assert read_samples(tmp_path) == [sample(i, 5) for i in range(7)]
    assert sorted(os.listdir(tmp_path)) == sorted([*chunk_files(tmp_path), "index.json"])


def test_mode_append_adds_after_the_existing_samples(tmp_path):
    optimize(sample, range(10), str(tmp_path), chunk_size=4, num_workers=2)
    optimize(sample, range(10, 25), str(tmp_path), chunk_size=4, num_workers=2, mode="append")
    assert read_samples(tmp_path) == [sample(i) for i in range(25)]
    names = list(chunk_files(tmp_path))
    assert len(set(names)) == len(names)


def test_mode_append_refuses_other_settings_or_structure(tmp_path):
    optimize(sample, range(10), str(tmp_path), chunk_size=4)
    with pytest.raises(ValueError, match="settings differ"):
        optimize(sample, range(10), str(tmp_path), chunk_size=5, mode="append")
    with pytest.raises(WorkerError, match="input #0"):
        optimize(lambda i: {"other": i}, range(3), str(tmp_path), chunk_size=4, mode="append")
    assert read_samples(tmp_path) == [sample(i) for i in range(10)]


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        optimize(sample, range(3), str(tmp_path))
    with pytest.raises(ValueError, match="mode"):
        optimize(sample, range(3), str(tmp_path), chunk_size=1, mode="replace")
    with pytest.raises(ValueError, match="num_workers"):  # 0 means one worker, as in LitData
        optimize(sample, range(3), str(tmp_path), chunk_size=1, num_workers=-1)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        optimize(sample, range(3), str(tmp_path), chunk_size=1, num_workers=1, num_nodes=2)
    with pytest.raises(ValueError, match="empty"):
        optimize(sample, [], str(tmp_path), chunk_size=1)
    assert not (tmp_path / "index.json").exists()


def test_caller_state_is_left_as_found(tmp_path, monkeypatch):
    import multiprocessing

    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setenv("NODE_RANK", "1")  # a stray value must not leak into a single-node job
    environ = dict(os.environ)
    optimize(sample, range(10), str(tmp_path), chunk_size=4, num_workers=2)
    assert dict(os.environ) == environ
    assert rank_zero_only.rank == 0
    # never switched to spawn (tqdm's lock may pin the platform default, as any tqdm bar or DataLoader does)
    assert multiprocessing.get_start_method(allow_none=True) in (None, "fork")
    import torch.distributed as dist

    assert not dist.is_initialized()
    assert json.loads((tmp_path / "index.json").read_text())["chunks"]
    assert gc.get_freeze_count() == 0  # the workers forked from a frozen heap; the caller's GC is as it was


def test_a_callers_own_gc_freeze_is_kept(tmp_path):
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        optimize(sample, range(10), str(tmp_path), chunk_size=4, num_workers=2)
        assert 0 < gc.get_freeze_count() <= frozen  # still frozen, nothing added (freed objects leave it)
    finally:
        gc.unfreeze()
    assert read_samples(str(tmp_path))
