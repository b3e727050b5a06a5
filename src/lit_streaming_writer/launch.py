"""Where a job's workers come from. Whatever the call style, every worker runs ``coordinate.run_rank``.

1. Inside an existing world (a script started by ``torchrun`` or ``fabric run``, a script after
   ``fabric.launch()``, a function run by ``fabric.launch(fn)``, ``srun`` with several tasks): every process
   of that world is one worker (every rank must call); rank r takes the r-th share of the inputs and rank 0
   merges. Rank, world size and the rendezvous address come from torch.distributed when it is initialized,
   else from Fabric's cluster environments (TorchElastic, SLURM, LSF); a process group created here is
   destroyed before returning.
2. A plain process asking for one worker: the job runs in this process (debuggable; lambdas fine).
3. A plain process asking for more: ``Fabric(accelerator="cpu", devices=num_workers, num_nodes=num_nodes)``
   launches them with ``DDPStrategy(start_method="fork")``. Fork rather than spawn: workers inherit ``fn`` and
   ``inputs`` instead of receiving pickled copies (a million inputs are not copied per worker; lambdas and
   ``functools.partial`` work) and start in milliseconds. Not Fabric's ``ddp``: it re-runs the calling script,
   which a library call cannot ask for. The start method applies to this launch only; the environment
   variables and Lightning's rank-zero state that Fabric touches are restored afterwards. For several nodes,
   run the same script on every node with ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` set (Lightning's
   variables) and the same ``num_nodes``.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from lit_streaming.errors import LitStreamingValueError
from lit_streaming_writer.coordinate import Job, Outcome, run_rank
from lit_streaming_writer.errors import WorkerError

_CALLS = itertools.count()  # names this process's successive rendezvous in a shared store (all ranks agree)
# Variables that Fabric's TorchElastic, SLURM and LSF environments need in order to detect a world. Checked
# first, so that a plain process does not pay the seconds that importing Lightning takes.
_CLUSTER_MARKERS = {"TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "LSB_JOBID"}


def default_num_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run(
    job: Job,
    num_workers: int | None,
    num_nodes: int | None,
    timeout: float,
    start_method: str | None = None,
) -> Any:
    """Run ``job`` on its workers and return rank 0's result, or raise the first failure.

    ``start_method`` is how launched workers start (``"fork"`` when None; ``"spawn"`` / ``"forkserver"``
    pickle ``fn`` and the inputs to every worker instead of inheriting them); an existing world's processes
    and a single in-process worker are not started here, so it does not apply to them."""
    for name, value in (("num_workers", num_workers), ("num_nodes", num_nodes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LitStreamingValueError(f"`{name}` must be a positive int or None, got {value!r}")
    if not timeout > 0:
        raise LitStreamingValueError(f"`timeout` must be a positive number of seconds, got {timeout!r}")
    world = _existing_world()
    if world is not None:
        _check_world_matches(world, num_workers, num_nodes)
        if world.size == 1:
            return _unwrap(run_rank(job, 0, 1, None, stall_timeout=timeout))
        with _gloo_group(world, timeout) as group:
            return _unwrap(run_rank(job, world.rank, world.size, group, stall_timeout=timeout))
    nodes = num_nodes or 1
    workers = num_workers or default_num_workers()
    if nodes == 1 and job.total is not None:
        workers = max(1, min(workers, job.total))
    if workers * nodes == 1:
        return _unwrap(run_rank(job, 0, 1, None, stall_timeout=timeout))
    return _unwrap(_launch(job, workers, nodes, timeout, start_method or "fork"))


def _unwrap(outcome: Outcome) -> Any:
    kind, value = outcome
    if kind == "error":
        raise value
    return value


@dataclass
class _World:
    rank: int
    size: int
    env: Any  # the Fabric ClusterEnvironment to rendezvous with; None when torch.distributed is initialized


def _existing_world() -> _World | None:
    if dist.is_available() and dist.is_initialized():
        return _World(dist.get_rank(), dist.get_world_size(), None)
    if not _CLUSTER_MARKERS & set(os.environ):
        return None
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    # Fabric's order. Not MPIEnvironment: detecting it initializes MPI in the calling process.
    for env_type in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment):
        if env_type.detect():
            env = env_type()
            if env.world_size() > 1:
                return _World(env.global_rank(), env.world_size(), env)
    return None


def _check_world_matches(world: _World, num_workers: int | None, num_nodes: int | None) -> None:
    """The world decides the workers; refuse counts that contradict it instead of silently ignoring them."""
    wanted = (num_workers or 1) * (num_nodes or 1)
    if (num_workers and num_nodes and wanted != world.size) or world.size % wanted:
        raise LitStreamingValueError(
            f"This process is rank {world.rank} of a distributed world of {world.size} processes, and every "
            f"process of that world is one worker; num_workers={num_workers} x num_nodes={num_nodes} does "
            "not match it. Pass num_workers=None and num_nodes=None (or counts whose product is the world "
            "size)."
        )


@contextmanager
def _gloo_group(world: _World, timeout: float) -> Iterator[Any]:
    """A gloo group over the whole world (works beside an NCCL default group), with this job's timeout."""
    created = not dist.is_initialized()
    if created:
        _init_default_group(world, timeout)
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
    try:
        yield group
    finally:
        dist.destroy_process_group(group)
        if created:
            dist.destroy_process_group()


def _init_default_group(world: _World, timeout: float) -> None:
    """Rendezvous through the launcher's store (torchrun's agent hosts one) or one hosted by rank 0, under a
    key prefix unique to this call, so that a second call in the same job never reads the first one's keys."""
    env = world.env
    address, port = env.main_address, env.main_port
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and (address, str(port)) == (
        os.environ.get("MASTER_ADDR"),
        os.environ.get("MASTER_PORT"),
    )
    store = dist.TCPStore(
        address,
        port,
        world.size,
        is_master=world.rank == 0 and not agent_store,
        timeout=timedelta(seconds=timeout),
        wait_for_workers=False,
        multi_tenant=True,
    )
    attempt = (
        f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    )
    prefixed = dist.PrefixStore(f"lit_streaming_writer/{attempt}/{next(_CALLS)}", store)
    dist.init_process_group(
        "gloo", store=prefixed, rank=world.rank, world_size=world.size, timeout=timedelta(seconds=timeout)
    )


def _launch(job: Job, workers: int, nodes: int, timeout: float, start_method: str) -> Outcome:
    from lightning.fabric import Fabric
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.strategies import DDPStrategy
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    strategy = DDPStrategy(
        start_method=start_method,
        process_group_backend="gloo",
        timeout=timedelta(seconds=timeout),
        cluster_environment=LightningEnvironment(),
    )
    with _caller_state_restored(nodes):
        fabric = Fabric(accelerator="cpu", devices=workers, num_nodes=nodes, strategy=strategy)
        try:
            with _frozen_heap():  # the workers fork inside
                return fabric.launch(_launched_rank, job, timeout)
        except ProcessExitedException as err:
            raise WorkerError(
                f"Worker process {err.error_index} on this node died ({err}). No index was published; rerun "
                "the same call to resume from the workers' checkpoints."
            ) from None
        except ProcessRaisedException as err:
            raise WorkerError(f"A worker process failed outside the job: {err}") from None


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Workers forked inside this block leave the objects they inherit out of their cyclic GC.

    A forked worker shares the parent's pages until it writes to them, and a full collection writes to every
    tracked object. After torch and Lightning are imported, the first collection in each fresh worker took
    0.3-0.9 s here (the pages it writes are copied, at ~5 us a page), so a 2-worker call on a few inputs took
    0.4-0.7 s where 0.11-0.14 s is the launch itself. ``gc.freeze`` moves the existing objects to the permanent
    generation, which collections skip (Python's documented recipe for pre-fork servers); the workers inherit
    them there, and the caller gets its collections back when the block ends. A caller that froze objects
    itself keeps its freeze as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _launched_rank(fabric: Any, job: Job, timeout: float) -> Outcome:
    world = _World(fabric.global_rank, fabric.world_size, None)
    with _gloo_group(world, timeout) as group:
        return run_rank(job, world.rank, world.size, group, stall_timeout=timeout)


@contextmanager
def _caller_state_restored(nodes: int) -> Iterator[None]:
    """Fabric's launcher writes environment variables and Lightning's global rank-zero rank in the calling
    process: put them back. Single-node jobs meet on a fresh local port, whatever the environment says."""
    from lightning.fabric.plugins.environments.lightning import find_free_network_port
    from lightning_utilities.core.rank_zero import rank_zero_only

    if nodes > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing or not ({"NODE_RANK", "GROUP_RANK"} & set(os.environ)):
            raise LitStreamingValueError(
                f"num_nodes={nodes}: run the same script on every node with MASTER_ADDR and MASTER_PORT "
                "(node 0's address and a free port on it) and NODE_RANK (0..num_nodes-1) set in the "
                "environment, or launch it with torchrun / `fabric run` and leave num_nodes=None"
            )
    environ = dict(os.environ)
    rank = getattr(rank_zero_only, "rank", 0)
    loggers = [logging.getLogger(name) for name in ("lightning.fabric", "lightning.pytorch")]
    levels = [logger.level for logger in loggers]
    if nodes == 1:
        for key in ("NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
            os.environ.pop(key, None)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(find_free_network_port()))
    for logger in loggers:  # workers inherit this: no "Initializing distributed" banner from every worker
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        rank_zero_only.rank = rank
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
