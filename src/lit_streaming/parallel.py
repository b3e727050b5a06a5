"""ParallelStreamingDataset: one sample from each of several streams per position, as LitData 0.2.76 has it.

The Stream protocol's one extension is here: a parallel dataset's plan keys are not leaf keys but *positions*
``g`` of an endless zipped sequence, and it overrides ``_read`` (and the prefetch hint) to turn a position into
one key per child. Child ``c`` reads, at position ``g``, item ``g % P_c`` of its own single-process epoch plan
for epoch ``g // P_c`` (``P_c`` = the shortest child's length without ``length``, the child's own length when
cycling). Ranks take contiguous shares of the positions, so they read disjoint, contiguous stretches of every
child (exactly once, few chunks open), and the shared loop, worker split, elastic resume and loader state work
unchanged on positions. Epoch ``e`` holds positions ``[e * N, (e + 1) * N)`` (``N`` = ``length`` or the shortest
child's length); ``length`` with ``resume=False`` restarts at position 0 every epoch.
"""

from __future__ import annotations

import inspect
import math
import random
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from lit_streaming import sampling
from lit_streaming.dataset import StreamingDataset
from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming.sampling import KeySequence
from lit_streaming.stream import Stream

#: ``length=float("inf")``: positions an epoch holds (never reached; int64 arithmetic stays exact).
INFINITE = 2**62
#: a batch's keys for one child are read as one range when it spans at most this many positions
_RANGE_READ = 1 << 16


class Positions(KeySequence):
    """Positions ``base .. base + length - 1`` (the keys of a parallel dataset's epoch)."""

    def __init__(self, base: int, length: int) -> None:
        self.base, self.length = int(base), int(length)

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        return np.arange(self.base + lo, self.base + hi, dtype=np.int64)

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        return []  # ParallelStreamingDataset.prefetch maps positions to the children's chunks


class ParallelStreamingDataset(Stream):
    """Yield a tuple with one sample of each of ``datasets`` per position (or ``transform``'s result).

    Args:
        datasets: streams to zip (StreamingDataset, CombinedStreamingDataset, subsets, splits).
        length: ``None`` stops with the shortest dataset; an int cycles every dataset (each cycle in a new
            shuffle of it) until ``length`` samples per epoch; ``float("inf")`` never stops.
        force_override_state_dict: accepted for LitData: a state whose order settings differ is refused
            (``ResumeError``), as resuming it could not be exactly-once.
        transform: ``f(samples)`` or ``f(samples, rngs)``, where ``rngs`` holds ``"random"``, ``"numpy"`` and
            ``"torch"`` generators seeded from (``seed``, position), so a resumed run draws the same numbers.
        seed: seed of the generators handed to ``transform``.
        resume: with ``length``, each epoch continues where the previous one stopped (``True``) or repeats the
            same ``length`` samples (``False``).
        reset_rngs: the generators restart every epoch (seeded from the position within the epoch).
    """

    def __init__(
        self,
        datasets: Sequence[Stream],
        length: int | float | None = None,
        force_override_state_dict: bool = False,
        transform: Callable[..., Any] | None = None,
        seed: int = 42,
        resume: bool = True,
        reset_rngs: bool = False,
    ) -> None:
        super().__init__()
        if not datasets:
            raise LitStreamingValueError("`datasets` is empty")
        for i, ds in enumerate(datasets):
            if not isinstance(ds, Stream) or isinstance(ds, ParallelStreamingDataset):
                raise LitStreamingTypeError(
                    f"datasets[{i}] is a {type(ds).__name__}; ParallelStreamingDataset zips StreamingDataset or "
                    "CombinedStreamingDataset instances"
                )
        if length is not None and (isinstance(length, bool) or not isinstance(length, (int, float))):
            raise LitStreamingValueError(f"`length` must be None, an int or float('inf'), got {length!r}")
        if isinstance(length, float) and length != math.inf:
            raise LitStreamingValueError(f"`length` must be None, an int or float('inf'), got {length!r}")
        if isinstance(length, int) and length < 0:
            raise LitStreamingValueError(f"`length` must be >= 0, got {length}")
        self._transform_nargs = None
        if transform is not None:
            params = inspect.signature(transform).parameters.values()
            self._transform_nargs = sum(
                p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
                for p in params
            )
            if self._transform_nargs not in (1, 2):
                raise LitStreamingValueError(
                    f"`transform` must take 1 or 2 arguments, got {self._transform_nargs}"
                )
        if not isinstance(force_override_state_dict, bool):
            raise LitStreamingValueError(
                f"`force_override_state_dict` must be a bool, got {force_override_state_dict!r}"
            )
        self.datasets = list(datasets)
        self.length = length
        self.force_override_state_dict = force_override_state_dict
        self.parallel_transform = transform
        self.seed = int(seed)
        self.resume = bool(resume)
        self.reset_rngs = bool(reset_rngs)
        self._plans: dict[int, OrderedDict[int, KeySequence]] = defaultdict(OrderedDict)

    # ---- shape of the zipped sequence ------------------------------------------------------------------------
    def is_cycling(self) -> bool:
        return self.length is not None

    def is_infinite(self) -> bool:
        return self.length == math.inf

    def child_lengths(self) -> list[int]:
        """Each child's samples in one single-process epoch (the period it cycles with)."""
        return [d.native_length(1, 1) for d in self.datasets]

    def epoch_positions(self) -> int:
        """Positions in one epoch: ``length``, or the shortest child's length."""
        if self.length is None:
            return min(self.child_lengths())
        return INFINITE if self.is_infinite() else int(self.length)

    def _periods(self) -> list[int]:
        lengths = self.child_lengths()
        if self.length is None:
            return [min(lengths)] * len(lengths)
        for d, n in zip(self.datasets, lengths):
            if n == 0 and self.epoch_positions() > 0:
                raise LitStreamingValueError(f"cannot cycle the empty dataset {d!r} to length={self.length}")
        return lengths

    def _base(self, epoch: int) -> int:
        if self.is_infinite() or (self.is_cycling() and not self.resume):
            return 0
        return epoch * self.epoch_positions()

    # ---- the Stream protocol -------------------------------------------------------------------------------
    def leaves(self) -> list[StreamingDataset]:
        return [leaf for d in self.datasets for leaf in d.leaves()]

    def drop_last_for(self, world_size: int) -> bool:
        return any(d.drop_last_for(world_size) for d in self.datasets)

    def native_length(self, world_size: int, batch_size: int) -> int:
        return sampling.rank_length(
            self.epoch_positions(), world_size, batch_size, self.drop_last_for(world_size)
        )

    def rank_plan(self, epoch: int, world_size: int, rank: int, batch_size: int) -> KeySequence:
        seq = Positions(self._base(epoch), self.epoch_positions())
        return sampling.partition(seq, world_size, rank, batch_size, self.drop_last_for(world_size))

    def order_settings(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "length": "inf" if self.is_infinite() else self.length,
            "resume": self.resume,
            "datasets": [d.order_settings() for d in self.datasets],
        }

    def _apply_options(self, shuffle: bool | None, drop_last: bool | None) -> None:
        self.datasets = [d.with_options(shuffle, drop_last) for d in self.datasets]
        self._plans = defaultdict(OrderedDict)

    def __len__(self) -> int:
        """Samples in one epoch on a single process (LitData: ``len`` of an infinite dataset fails)."""
        if self.is_infinite():
            raise LitStreamingTypeError("a ParallelStreamingDataset with length=float('inf') has no length")
        return self.native_length(1, 1)

    # ---- positions -> one key per child --------------------------------------------------------------------
    def _child_plan(self, c: int, epoch: int) -> KeySequence:
        cache = self._plans[c]
        plan = cache.get(epoch)
        if plan is None:
            plan = cache[epoch] = self.datasets[c].rank_plan(epoch, 1, 0, 1)
            while len(cache) > 2:
                cache.popitem(last=False)
        return plan

    def child_keys(self, c: int, positions: np.ndarray, period: int) -> np.ndarray:
        """Child ``c``'s keys at ``positions`` (item ``g % period`` of its epoch ``g // period``)."""
        epochs, items = np.divmod(positions, period)
        out = np.empty(positions.size, dtype=np.int64)
        for e in np.unique(epochs).tolist():
            sel = epochs == e
            want = items[sel]
            plan = self._child_plan(c, int(e))
            lo, hi = int(want.min()), int(want.max()) + 1
            if hi - lo <= max(_RANGE_READ, 4 * want.size):
                out[sel] = plan.keys(lo, hi)[want - lo]
            else:
                out[sel] = [int(plan.keys(i, i + 1)[0]) for i in want.tolist()]
        return out

    def _read(self, plan: KeySequence, batches: Iterator[tuple[int, int]]) -> Iterator[Any]:
        periods = self._periods()
        readers = [(d.leaves(), d.key_offsets()) for d in self.datasets]
        epoch_len = self.epoch_positions()
        for lo, hi in batches:
            positions = plan.keys(lo, hi)
            columns = []
            for c, (leaves, offsets) in enumerate(readers):
                keys = self.child_keys(c, positions, periods[c])
                which = np.searchsorted(offsets, keys, side="right") - 1
                columns.append(
                    [leaves[w][k] for w, k in zip(which.tolist(), (keys - offsets[which]).tolist())]
                )
            for j, samples in enumerate(zip(*columns)):
                yield self._apply(samples, int(positions[j]), epoch_len)

    def _apply(self, samples: tuple[Any, ...], position: int, epoch_len: int) -> Any:
        if self.parallel_transform is None:
            return samples
        if self._transform_nargs == 1:
            return self.parallel_transform(samples)
        key = position % epoch_len if self.reset_rngs and epoch_len else position
        return self.parallel_transform(samples, rngs(self.seed, key))

    def prefetch(self, plan: KeySequence, lo: int, hi: int) -> None:
        """Name each child's chunks for positions [lo, hi) of ``plan`` (its first stretch when it is long)."""
        if hi <= lo:
            return
        hi = min(hi, lo + _RANGE_READ)
        positions = plan.keys(lo, hi)
        first_leaf = 0
        leaves = self.leaves()
        for c, period in enumerate(self._periods()):
            epochs, items = np.divmod(positions, period)
            runs: dict[int, list[np.ndarray]] = defaultdict(list)
            for e in np.unique(epochs)[:2].tolist():
                want = items[epochs == e]
                for leaf, chunks in self._child_plan(c, int(e)).chunk_runs(
                    int(want.min()), int(want.max()) + 1
                ):
                    runs[first_leaf + leaf].append(chunks)
            for leaf, chunk_lists in runs.items():
                leaves[leaf].prefetch_chunks(sampling.first_use_order(chunk_lists))
            first_leaf += len(self.datasets[c].leaves())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.datasets)} datasets, length={self.length})"


def rngs(seed: int, key: int) -> dict[str, Any]:
    """``random``, ``numpy`` and ``torch`` generators seeded from (seed, key): the same numbers on resume."""
    state = np.random.SeedSequence([int(seed), int(key)]).generate_state(2, dtype=np.uint32)
    value = int(state[0]) << 32 | int(state[1])
    return {
        "random": random.Random(value),
        "numpy": np.random.default_rng(value),
        "torch": torch.Generator().manual_seed(value & (2**63 - 1)),
    }
