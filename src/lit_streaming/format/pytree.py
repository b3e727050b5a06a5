"""Sample structure as torch's pytree spec, stored as LitData does (``data_spec``: protocol-1 JSON string).

torch's pytree lives in a private module; it is the encoding LitData writes, so this is the one place that
touches it.
"""

from __future__ import annotations

from typing import Any

from torch.utils import _pytree

from lit_streaming.format.serializers import JsonLeaf, is_json_value

TreeSpec = _pytree.TreeSpec


def wrap_json_lists(sample: Any) -> Any:
    """In a dict sample, make every list of JSON values (in the dict or its nested dicts) one ``JsonLeaf``.

    This is how LitData 0.2.76 writes dict samples: a list field is one ``json`` leaf instead of one leaf per
    element, so samples whose lists differ in length share one structure. Other samples, tuples and lists
    holding arrays or images are left to the pytree as before.
    """
    if not isinstance(sample, dict):
        return sample
    return {key: _wrap_field(value) for key, value in sample.items()}


def _wrap_field(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _wrap_field(item) for key, item in value.items()}
    if isinstance(value, list) and is_json_value(value):
        return JsonLeaf(value)
    return value


_FLAT_SPECS: dict[tuple[Any, ...], TreeSpec] = {}  # specs of flat dict samples, by their keys


def flatten(sample: Any) -> tuple[list[Any], TreeSpec]:
    """Leaves and structure of a sample as the writer stores it (JSON lists of dict samples are one leaf).

    A dict of plain leaves (the common ``{"image": ..., "label": ...}``) skips torch's generic walk: its spec
    depends only on its keys and is made once (the walk was a tenth of writing a JPEG sample)."""
    if type(sample) is dict and not any(_is_node(value) for value in sample.values()):
        keys = tuple(sample)
        spec = _FLAT_SPECS.get(keys)
        if spec is None:
            spec = _pytree.tree_flatten(sample)[1]
            if len(_FLAT_SPECS) < 64:
                _FLAT_SPECS[keys] = spec
        return list(sample.values()), spec
    return _pytree.tree_flatten(wrap_json_lists(sample))


def _is_node(value: Any) -> bool:
    """Whether torch's pytree would walk into ``value`` (or the writer would wrap it as a JSON list)."""
    return type(value) in _pytree.SUPPORTED_NODES or isinstance(value, (tuple, list, dict))


def leaves(sample: Any) -> list[Any]:
    return _pytree.tree_leaves(wrap_json_lists(sample))


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
    paths, _ = _pytree.tree_flatten_with_path(wrap_json_lists(sample))
    return _pytree.keystr(paths[leaf_number][0]) or "<root>"


class _Mark:
    __slots__ = ()


def spec_leaf_paths(spec: TreeSpec) -> list[str]:
    """The path of every leaf of ``spec`` (e.g. ``['image']``), in leaf order, for error messages."""
    marks = [_Mark() for _ in range(spec.num_leaves)]  # leaves the pytree cannot mistake for nodes
    paths, _ = _pytree.tree_flatten_with_path(_pytree.tree_unflatten(marks, spec))
    return [_pytree.keystr(path) or "<root>" for path, _ in paths]
