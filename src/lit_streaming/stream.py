"""The declared protocol every dataset kind implements, and the one iteration loop they all share.

``StreamingDataLoader`` and ``StreamingDataModule`` talk to datasets only through :class:`Stream`: a length
for (world size, batch size), a lazy rank plan for (epoch, world size, rank, batch size), the settings that fix
the order, and the leaf datasets that read keys. A new kind (a mix of mixes, another format) implements the
abstract methods and gets exactly-once sharding, the worker split, elastic resume and prefetching from here.
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import IterableDataset

from lit_streaming import sampling
from lit_streaming.engine import profiling
from lit_streaming.engine.iteration import IterationContext, IterationControl
from lit_streaming.sampling import KeySequence

if TYPE_CHECKING:
    from lit_streaming.dataset import StreamingDataset


class Stream(IterableDataset, ABC):
    """A dataset kind the loader can shard, resume and prefetch.

    Keys: every leaf dataset numbers its stored samples 0..num_samples-1; a stream's key space is its leaves'
    key spaces one after the other, so a plan is a sequence of int64 keys whatever the nesting.
    """

    def __init__(self) -> None:
        self._control = IterationControl()
        self._resume_chain: tuple[tuple[int, int], ...] = ()
        self._profile: profiling.WorkerProfile | None = None

    # ---- what a kind implements ------------------------------------------------------------------------------
    @abstractmethod
    def leaves(self) -> list[StreamingDataset]:
        """The datasets that read keys, in key-space order (iteration reads key k as ``leaf[k]``, so a subclass
        that overrides ``__getitem__`` changes what iteration yields too)."""

    @abstractmethod
    def drop_last_for(self, world_size: int) -> bool:
        """Whether ranks drop their tail (True) or are padded with repeats (False) at this world size."""

    @abstractmethod
    def native_length(self, world_size: int, batch_size: int) -> int:
        """Samples each rank's plan holds in an epoch (equal on every rank, the same every epoch)."""

    @abstractmethod
    def rank_plan(self, epoch: int, world_size: int, rank: int, batch_size: int) -> KeySequence:
        """Rank ``rank``'s keys for ``epoch``, lazily; a pure function of the order settings and arguments."""

    @abstractmethod
    def order_settings(self) -> dict[str, Any]:
        """Every setting that changes which samples come in which order (a resume state must match it)."""

    @abstractmethod
    def _apply_options(self, shuffle: bool | None, drop_last: bool | None) -> None:
        """Set loader overrides on this (already copied) stream and its children."""

    # ---- shared behaviour ------------------------------------------------------------------------------------
    def with_options(self, shuffle: bool | None = None, drop_last: bool | None = None) -> Stream:
        """A copy for one loader: its own iteration state, ``shuffle``/``drop_last`` overridden when given.

        The copy shares what is expensive and immutable (index, storage) and nothing a loader mutates, so two
        loaders over one dataset iterate independently and the user's dataset is left as it was.
        """
        clone = copy.copy(self)
        clone._fresh_state()
        clone._apply_options(shuffle, drop_last)
        return clone

    def _fresh_state(self) -> None:
        self._control = IterationControl()
        self._resume_chain = ()
        self._profile = None

    def key_offsets(self) -> np.ndarray:
        """First key of each leaf, plus the key-space size at the end."""
        sizes = [leaf.num_samples for leaf in self.leaves()]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    def epoch_length(
        self, world_size: int, batch_size: int, resume_chain: Sequence[Sequence[int]] | None = None
    ) -> int:
        """Samples each rank yields this epoch, after the elastic resume ``resume_chain`` (default: the current
        one); equal on every rank."""
        return sampling.resumed_length(
            lambda w: self.native_length(w, batch_size),
            world_size=world_size,
            batch_size=batch_size,
            drop_last=self.drop_last_for(world_size),
            resume_chain=self._resume_chain if resume_chain is None else resume_chain,
        )

    def plan(self, epoch: int, world_size: int, rank: int, batch_size: int) -> KeySequence:
        """The rank's keys this epoch, after any elastic resume (computed once per iteration)."""
        return sampling.resumed_plan(
            lambda w, r: self.rank_plan(epoch, w, r, batch_size),
            world_size=world_size,
            rank=rank,
            batch_size=batch_size,
            drop_last=self.drop_last_for(world_size),
            resume_chain=self._resume_chain,
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch that plain iteration (without StreamingDataLoader) uses for shuffling."""
        self._control.epoch = int(epoch)

    def configure_iteration(
        self, epoch: int, start: int, batch_size: int, world_size: int, rank: int, num_workers: int
    ) -> None:
        """Main process: who iterates next; worker processes read it when their iterator starts."""
        self._control.epoch = int(epoch)
        self._control.configure(epoch, start, batch_size, world_size, rank, num_workers)

    @property
    def resume_chain(self) -> tuple[tuple[int, int], ...]:
        """Elastic resume segments (world_size, consumed) that shape the current epoch's remainder."""
        return self._resume_chain

    def set_resume_chain(self, chain: Sequence[Sequence[int]]) -> None:
        self._resume_chain = tuple(sampling.check_chain(chain))

    def enable_profiling(
        self, profile_dir: str | None, batches: int | None, skip: int = 0, cprofile: bool = False
    ) -> None:
        """Record fetch/decode spans for batches [skip, skip + batches) of each epoch (``batches=None``: every
        batch from ``skip`` on), and with ``cprofile`` run worker 0 of rank 0 under cProfile (see profiling.py).
        ``profile_dir=None`` turns profiling off."""
        self._profile = profiling.WorkerProfile(profile_dir, skip, batches, cprofile) if profile_dir else None

    def prefetch(self, plan: KeySequence, lo: int, hi: int) -> None:
        """Tell each leaf which chunks reading positions [lo, hi) of ``plan`` needs, in order."""
        runs: dict[int, list[np.ndarray]] = defaultdict(list)
        for leaf, chunks in plan.chunk_runs(lo, hi):
            runs[leaf].append(chunks)
        leaves = self.leaves()
        for leaf, chunk_lists in runs.items():
            leaves[leaf].prefetch_chunks(sampling.first_use_order(chunk_lists))

    def fit_cache(self, world_size: int, num_workers: int) -> list[int]:
        """Size every leaf's shuffle window to what its cache budget holds for the readers on this machine (the
        ranks on the node times their workers); returns the windows, which fix the order (a resume compares
        them)."""
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        readers = max(1, local_ranks) * max(1, num_workers)
        return [leaf.fit_window(readers) for leaf in self.leaves()]

    def _start(self, ctx: IterationContext) -> KeySequence:
        """The rank's plan for the configured iteration, with every leaf's window fitted and its chunks hinted."""
        self.fit_cache(ctx.world_size, ctx.num_workers)
        plan = self.plan(ctx.epoch, ctx.world_size, ctx.rank, ctx.batch_size)
        self.prefetch(plan, min(ctx.start, plan.length), plan.length)
        return plan

    def batch_reader(self) -> Callable[[np.ndarray], Any] | None:
        """A function reading a whole batch of keys as one collated batch, for kinds whose samples need no
        per-sample Python (token blocks are one gather); None where batches are made sample by sample."""
        return None

    def inline_batches(self) -> Iterator[Any]:
        """The configured iteration's batches, each read by ``batch_reader()`` in this process: positions
        ``start..`` of the plan in order, which is the order the loader hands out for any number of workers."""
        read = self.batch_reader()
        if read is None:
            raise RuntimeError(f"{type(self).__name__} has no batch reader")
        ctx = self._control.current()
        plan = self._start(ctx)
        for lo, hi in sampling.worker_batches(plan.length, ctx.start, ctx.batch_size, 1, 0):
            yield read(plan.keys(lo, hi))

    def __iter__(self) -> Iterator[Any]:
        ctx = self._control.current()
        plan = self._start(ctx)
        batches = sampling.worker_batches(
            plan.length, ctx.start, ctx.batch_size, ctx.num_workers, ctx.worker_id
        )
        if self._profile is None:
            yield from self._read(plan, batches)
        else:
            yield from self._profiled(plan, batches, ctx)

    def _read(self, plan: KeySequence, batches: Iterator[tuple[int, int]]) -> Iterator[Any]:
        leaves, offsets = self.leaves(), self.key_offsets()
        single = len(leaves) == 1
        for lo, hi in batches:
            keys = plan.keys(lo, hi)
            if single:
                for key in keys.tolist():
                    yield leaves[0][key]
                continue
            which = np.searchsorted(offsets, keys, side="right") - 1
            for leaf, key in zip(which.tolist(), (keys - offsets[which]).tolist()):
                yield leaves[leaf][key]

    def _profiled(
        self, plan: KeySequence, batches: Iterator[tuple[int, int]], ctx: IterationContext
    ) -> Iterator[Any]:
        """``_read`` with spans recorded for the traced batches; the worker's trace file is written before the
        last sample of its last traced batch leaves (so the main process's merge finds it)."""
        profile: profiling.WorkerProfile = self._profile  # type: ignore[assignment]
        workers = max(1, ctx.num_workers)
        recorder = profiling.TraceRecorder(f"rank {ctx.rank} worker {ctx.worker_id}")
        path = profiling.worker_trace_path(profile.profile_dir, ctx.epoch, ctx.rank, ctx.worker_id)
        leaves = self.leaves()
        profiler = profile.start_cprofile(ctx.rank, ctx.worker_id, ctx.num_workers)
        written = False
        try:
            for lo, hi in batches:
                g = (lo - ctx.start) // ctx.batch_size  # the batch's number in this iteration
                traced = profile.traces(g)
                for leaf in leaves:
                    leaf.set_recorder(recorder if traced else None)
                nxt = g + workers
                last = traced and not (profile.traces(nxt) and ctx.start + nxt * ctx.batch_size < plan.length)
                samples = list(self._read(plan, iter([(lo, hi)])))
                for n, sample in enumerate(samples):
                    if last and n == len(samples) - 1 and not written:
                        recorder.dump(path)
                        written = True
                    yield sample
        finally:
            for leaf in leaves:
                leaf.set_recorder(None)
            profile.stop_cprofile(profiler, worker=True)
