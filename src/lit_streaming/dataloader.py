"""StreamingDataLoader: a torch DataLoader that knows its exact position and can resume from it.

The position is counted here, in the main process, at the moment a batch is handed to the caller, so a
checkpoint taken while training on batch k says "k batches consumed" whatever the workers have prefetched.
"""

from __future__ import annotations

import contextlib
import cProfile
import itertools
import os
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from lit_streaming import sampling
from lit_streaming.engine import distributed, profiling
from lit_streaming.engine.batching import PooledCollate
from lit_streaming.engine.resume_state import STATE_VERSION, ResumeError, check_state, settings_diff
from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming.stream import Stream

__all__ = ["STATE_VERSION", "ResumeError", "StreamingDataLoader"]


def _check_profile_args(profile_batches: Any, skip: Any, cprofile: Any) -> tuple[int | None, bool]:
    """(batches to trace, None for the whole run; whether to trace), naming the bad argument otherwise."""
    if not isinstance(profile_batches, (bool, int)) or (
        not isinstance(profile_batches, bool) and profile_batches < 0
    ):
        raise LitStreamingValueError(
            f"`profile_batches` must be a bool or an int >= 0, got {profile_batches!r}"
        )
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise LitStreamingValueError(f"`profile_skip_batches` must be an int >= 0, got {skip!r}")
    if not isinstance(cprofile, bool):
        raise LitStreamingValueError(f"`profile_cprofile` must be a bool, got {cprofile!r}")
    if profile_batches is True:
        return None, True
    return int(profile_batches), int(profile_batches) > 0


class StreamingDataLoader(DataLoader):
    """Batches any streaming dataset (a :class:`~lit_streaming.stream.Stream`); ``state_dict()`` /
    ``load_state_dict()`` resume mid-epoch exactly. ``shuffle`` / ``drop_last`` override the dataset's
    settings for this loader only: ``loader.dataset`` is the loader's own copy, the dataset passed in is left
    unchanged, and two loaders over one dataset iterate independently.

    Every rank yields the same number of batches and ``len(loader)`` is that number. The state is small, plain
    Python, and identical on every rank (Lightning saves rank 0's).

    ``limit_batches`` (attribute, default ``None``): end every epoch after this many batches, as
    ``Trainer(limit_train_batches=...)`` does (StreamingDataModule sets it from the Trainer), so that a state
    saved after the last of them resumes into the next epoch. ``len(loader)`` stays the full epoch's length.
    """

    def __init__(
        self,
        dataset: Stream,
        batch_size: int = 1,
        num_workers: int = 0,
        profile_batches: bool | int = False,
        profile_dir: str | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        collate_fn: Any = None,
        profile_skip_batches: int = 0,
        profile_cprofile: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dataset, Stream):
            raise LitStreamingTypeError(
                f"StreamingDataLoader needs a streaming dataset (StreamingDataset, CombinedStreamingDataset, ...), "
                f"got {type(dataset).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LitStreamingValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        stream = dataset.with_options(shuffle=shuffle, drop_last=drop_last)
        self.shuffle = shuffle
        # Profiling as LitData's README has it (see profiling.py): result.json in profile_dir or the cwd.
        self.profile_batches = profile_batches
        self.profile_dir = profile_dir
        self.profile_skip_batches = profile_skip_batches
        self.profile_cprofile = profile_cprofile
        self._trace_count, self._tracing = _check_profile_args(
            profile_batches, profile_skip_batches, profile_cprofile
        )
        profiling_on = self._tracing or profile_cprofile
        self._profile_out = os.path.abspath(profile_dir or os.getcwd()) if profiling_on else None
        if self._profile_out:
            os.makedirs(self._profile_out, exist_ok=True)
            if self._tracing:  # as LitData, a stale trace from an earlier run is removed before this one
                with contextlib.suppress(FileNotFoundError):
                    os.remove(profiling.trace_path(self._profile_out, distributed.world()[0]))
        stream.enable_profiling(
            self._profile_out,
            self._trace_count if self._tracing else 0,
            profile_skip_batches,
            profile_cprofile,
        )
        self._trace_events: list[dict[str, Any]] = []  # the whole run's events, rewritten to result.json
        self._cprofile: cProfile.Profile | None = cProfile.Profile() if profile_cprofile else None
        kwargs.pop("sampler", None)
        kwargs.pop("batch_sampler", None)
        # Batches that are one gather (token blocks, no transform) are read here, in this process: no worker
        # needs to touch each block, and the order is the one the workers would give (see Stream.inline_batches).
        default_batches = collate_fn is None and not kwargs.get("pin_memory", False)
        self._inline = (
            default_batches
            and not profiling_on
            and kwargs.get("worker_init_fn") is None
            and stream.batch_reader() is not None
        )
        if default_batches and not self._inline and num_workers > 0:
            # Reused shared-memory batch slots (see batching.py). pin_memory copies batches on a torch thread we
            # cannot observe, so slots could not be recycled: it keeps torch's default path.
            collate_fn = PooledCollate(num_workers)
        self.stream: Stream = stream
        super().__init__(
            stream,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_fn,
            drop_last=False,
            **kwargs,
        )
        self._epoch = 0
        self._consumed = 0
        self._started = False
        self._pending: dict[str, Any] | None = None
        self._world = (0, 1)
        self._workers_chain: tuple[tuple[int, int], ...] = ()
        self.limit_batches: int | None = None

    # ---- position --------------------------------------------------------------------------------------------
    def _epoch_length(self, world_size: int) -> int:
        return self.stream.epoch_length(world_size, self.batch_size)

    def _epoch_end(self, world_size: int) -> int:
        """Samples this rank yields before its epoch ends: the epoch's length, or ``limit_batches`` batches."""
        m = self._epoch_length(world_size)
        return m if self.limit_batches is None else min(m, self.limit_batches * self.batch_size)

    def _limit_reached(self) -> bool:
        return self.limit_batches is not None and self._consumed >= self._epoch_end(self._world[1])

    def __len__(self) -> int:
        """Batches this rank yields in a full epoch (the same on every rank).

        Right after ``load_state_dict`` of a state saved with another world size, the epoch being resumed
        counts as the batches each old rank had taken plus the new ranks' share of the rest, when that is
        more: Lightning reads the length once and restores its own batch counter from the checkpoint, so a
        shorter length would end the resumed epoch before every sample was seen. (A loader that runs out
        first simply ends the epoch.)"""
        _, world_size = distributed.world()
        state = self._pending
        if state is None and self._started and self._consumed >= self._epoch_end(self._world[1]):
            # This epoch is over: the next iteration starts a fresh one, whatever resume shaped this one.
            fresh = self.stream.epoch_length(world_size, self.batch_size, ())
            return sampling.num_batches(fresh, 0, self.batch_size)
        full = sampling.num_batches(self._epoch_length(world_size), 0, self.batch_size)
        if (
            state is None
            or not state["started"]
            or state["world_size"] == world_size
            or state["consumed"] >= state["epoch_length"]
        ):
            return full  # not an elastic resume in the middle of an epoch
        chain = [*state["resume_chain"], [state["world_size"], state["consumed"]]]
        try:
            rest = self.stream.epoch_length(world_size, self.batch_size, chain)
        except ValueError:
            return full  # the state does not fit; iteration raises ResumeError with the details
        done = sampling.num_batches(state["consumed"], 0, self.batch_size)
        return max(full, done + sampling.num_batches(rest, 0, self.batch_size))

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at ``epoch`` (a fresh epoch, position 0)."""
        self._epoch = int(epoch)
        self._consumed = 0
        self._started = False
        self._pending = None
        self.stream.set_resume_chain(())

    def __iter__(self) -> Iterator[Any]:
        rank, world_size = distributed.world()
        self._world = (rank, world_size)
        if self._pending is not None:
            start = self._apply_pending(world_size)
        else:
            self._epoch += 1 if self._started else 0
            self.stream.set_resume_chain(())
            start = 0
        if self.stream.resume_chain != self._workers_chain:
            self._iterator = None  # persistent workers hold the old plan: start fresh ones
            self._workers_chain = self.stream.resume_chain
        self._started = True
        self._consumed = start
        m = self._epoch_length(world_size)
        self.stream.configure_iteration(
            self._epoch, start, self.batch_size, world_size, rank, self.num_workers
        )
        if start >= self._epoch_end(world_size):
            return
        # Profiling records how long the consumer waits for each traced batch (see profiling.py).
        recorder = profiling.TraceRecorder(f"rank {rank} main") if self._tracing else None
        in_epoch = sampling.num_batches(min(m, self._epoch_end(world_size)), start, self.batch_size)
        traced = profiling.traced_range(self.profile_skip_batches, self._trace_count, in_epoch)
        # Workers write their spans when their plan reaches the last traced batch; a limit_batches end comes
        # earlier, and then the merge takes what is there without waiting.
        cut_short = traced.stop < sampling.num_batches(m, start, self.batch_size) and (
            self._trace_count is None or traced.stop < self.profile_skip_batches + self._trace_count
        )
        iterator = self.stream.inline_batches() if self._inline else super().__iter__()
        if self._cprofile is not None and rank == 0:
            self._cprofile.enable()  # after the workers started, so they do not inherit it
        try:
            for n in itertools.count():
                waited_from = profiling.now_us()
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                if recorder is not None and n in traced:
                    recorder.span("wait_for_batch", "loader", waited_from, profiling.now_us(), batch=n)
                    if n == traced.stop - 1:
                        expected = 0 if cut_short else min(max(1, self.num_workers), len(traced))
                        self._write_trace(recorder, rank, expected)
                        recorder = None
                self._consumed = min(self._consumed + self.batch_size, m)
                self._watch(batch)
                yield batch
                if self._limit_reached():
                    return
        finally:
            if recorder is not None and len(recorder.events) > 1:
                self._write_trace(recorder, rank, 0)  # the iteration stopped early: keep what was recorded
            if self._cprofile is not None and rank == 0:
                profiling.dump_cprofile(
                    self._cprofile,
                    os.path.join(self._profile_out, profiling.CPROFILE_MAIN),  # type: ignore[arg-type]
                )

    def _write_trace(self, recorder: profiling.TraceRecorder, rank: int, expected_workers: int) -> None:
        """Add this iteration's main and worker events to the run's and rewrite the trace file."""
        out: str = self._profile_out  # type: ignore[assignment]
        workers = profiling.collect(out, self._epoch, rank, expected_workers, timeout=30.0)
        room = max(0, profiling.MAX_EVENTS * (1 + self.num_workers) - len(self._trace_events))
        self._trace_events.extend((recorder.all_events() + workers)[:room])  # bounded over a long run
        self.profile_trace = profiling.write_trace(profiling.trace_path(out, rank), self._trace_events)

    def _watch(self, batch: Any) -> None:
        if isinstance(self.collate_fn, PooledCollate):
            self.collate_fn.watch(batch)

    # ---- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            return dict(self._pending)
        _, world_size = self._world
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "consumed": self._consumed,
            "epoch_length": self._epoch_end(world_size),
            "started": self._started,
            "world_size": world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "resume_chain": [list(seg) for seg in self.stream.resume_chain],
            "settings": self.stream.order_settings(),
            "cache_windows": self.stream.fit_cache(world_size, self.num_workers),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` at the next ``iter()``. Refuses states whose order cannot be reproduced."""
        state = check_state(state)
        settings = self.stream.order_settings()
        if state["settings"] != settings:
            raise ResumeError(
                f"Cannot resume: settings that change the sample order differ: {settings_diff(state['settings'], settings)}"
            )
        if state["batch_size"] != self.batch_size:
            raise ResumeError(
                f"Cannot resume: saved with batch_size={state['batch_size']}, loader has {self.batch_size}"
            )
        _, world_size = distributed.world()
        windows = self.stream.fit_cache(world_size, self.num_workers)
        if state["cache_windows"] != windows:
            raise ResumeError(
                f"Cannot resume: the cache budget gave shuffle windows of {state['cache_windows']} chunks when "
                f"this state was saved and gives {windows} now (another max_cache_size, or another number of "
                "ranks or workers on the machine); the sample order would differ"
            )
        self._pending = dict(state)
        self._iterator = None  # persistent workers restart with the restored plan

    def _apply_pending(self, world_size: int) -> int:
        state, self._pending = self._pending, None
        assert state is not None
        self._epoch = state["epoch"]
        chain = tuple(tuple(seg) for seg in state["resume_chain"])
        if not state["started"]:
            self.stream.set_resume_chain(())
            return 0
        if state["consumed"] >= state["epoch_length"]:
            self._epoch += 1
            self.stream.set_resume_chain(())
            return 0
        if state["world_size"] == world_size:
            length = self._set_chain(chain, world_size)
            if state["consumed"] > length:
                raise ResumeError(
                    f"Cannot resume: `consumed` ({state['consumed']}) exceeds this epoch's {length} samples per rank"
                )
            return state["consumed"]
        self._set_chain(chain + ((state["world_size"], state["consumed"]),), world_size)
        return 0

    def _set_chain(self, chain: tuple[tuple[int, ...], ...], world_size: int) -> int:
        """Set the elastic chain and return the epoch length it gives; ResumeError when it does not fit."""
        try:
            self.stream.set_resume_chain(chain)
            return self._epoch_length(world_size)
        except ValueError as err:
            self.stream.set_resume_chain(())
            raise ResumeError(
                f"Cannot resume: the saved `resume_chain` does not fit this dataset ({err})"
            ) from err
