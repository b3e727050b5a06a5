"""Sample structure as torch's pytree spec, stored as LitData does (``data_spec``: protocol-1 JSON string).

torch's pytree lives in a private module; it is the encoding LitData writes, so this is the one place that
touches it.
"""

from __future__ import annotations

from typing import Any

from torch.utils import _pytree

TreeSpec = _pytree.TreeSpec


def flatten(sample: Any) -> tuple[list[Any], TreeSpec]:
    return _pytree.tree_flatten(sample)


def leaves(sample: Any) -> list[Any]:
    return _pytree.tree_leaves(sample)


def unflatten(values: list[Any], spec: TreeSpec) -> Any:
    return _pytree.tree_unflatten(values, spec)


def dumps(spec: TreeSpec) -> str:
    return _pytree.treespec_dumps(spec)


def loads(text: str) -> TreeSpec:
    return _pytree.treespec_loads(text)


def describe_mismatch(expected: TreeSpec, got: TreeSpec) -> str:
    """A short human description of how two sample structures differ."""
    return f"expected structure {expected}, got {got}"


def leaf_path(sample: Any, leaf_number: int) -> str:
    """Where leaf ``leaf_number`` sits in ``sample`` (e.g. ``['image']``), for error messages."""
    paths, _ = _pytree.tree_flatten_with_path(sample)
    return _pytree.keystr(paths[leaf_number][0]) or "<root>"
