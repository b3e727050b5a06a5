"""One generic save/load/resume check (DESIGN.md §10): ``check_resume`` drives any stateful loader;
``assert_resumed`` is its verdict, also used where a Trainer checkpoint does the saving (Lightning, DDP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def as_plain(batch: Any) -> Any:
    """Batches as nested Python lists, so runs compare with ==."""
    if isinstance(batch, torch.Tensor):
        return batch.tolist()
    if isinstance(batch, dict):
        return {k: as_plain(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [as_plain(v) for v in batch]
    return batch


def run_epochs(loader: Any, epochs: int) -> list[list[Any]]:
    return [[as_plain(b) for b in loader] for _ in range(epochs)]


def assert_resumed(reference: list[Any], done: int, resumed: list[Any], where: str) -> None:
    """What a run resumed after ``done`` steps produced must be exactly the uninterrupted ``reference`` run's
    steps from there on, in order."""
    assert resumed == reference[done:], f"resume diverged from the uninterrupted run ({where})"


def check_resume(make_loader: Callable[[], Any], break_epoch: int, break_after: int, epochs: int = 2) -> None:
    """Iterate ``break_after`` batches into epoch ``break_epoch``, save, rebuild, load, finish: the batches seen
    after the break must equal the uninterrupted run's, in order, through ``epochs`` epochs."""
    reference = run_epochs(make_loader(), epochs)

    first = make_loader()
    seen: list[Any] = []
    for _ in range(break_epoch):
        seen.extend(as_plain(b) for b in first)
    it = iter(first)
    for _ in range(break_after):
        seen.append(as_plain(next(it)))
    state = first.state_dict()
    del it

    resumed = make_loader()
    resumed.load_state_dict(state)
    flat_reference = [b for epoch in reference for b in epoch]
    rest: list[Any] = []
    for _ in range(epochs + 1):  # a state saved after an epoch's last batch resumes into the next epoch
        if len(seen) + len(rest) >= len(flat_reference):
            break
        rest.extend(as_plain(b) for b in resumed)
    where = f"epoch {break_epoch}, after {break_after} batches"
    assert seen == flat_reference[: len(seen)], f"the run before the save diverged ({where})"
    assert_resumed(flat_reference, len(seen), rest, where)
