"""Decision records: the input a policy decided on, as a receipt keeps it, with sensitive fields masked.

A Policy's `mask` lists JSON pointers into its input document
(fibric/specs/pointers.py); the record replaces the value at each with
MASKED, like OPA's decision-log masking. The policy always evaluates the
real document: masking only touches the copy that is stored, and copies
just the objects on each masked path, so the live document is never changed.
A pointer that leads nowhere in this document masks nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fibric.specs import pointers

MASKED = "**masked**"  # what a decision record keeps of a masked value


def record(input_doc: Mapping[str, Any], mask: Iterable[str] = ()) -> dict[str, Any]:
    """The decision record of `input_doc`: a copy with every value at a `mask` pointer replaced."""
    doc = dict(input_doc)
    for pointer in mask:
        _mask(doc, pointers.parse(pointer))
    return doc


def has_masked(value: Any) -> bool:
    """Whether a decision record had any field masked (replay reports how many did)."""
    if value == MASKED:
        return True
    if isinstance(value, Mapping):
        return any(has_masked(v) for v in value.values())
    if isinstance(value, list):
        return any(has_masked(v) for v in value)
    return False


def _mask(doc: dict[str, Any], path: tuple[str, ...]) -> None:
    """Replace the value at `path` in `doc`, copying each container on the way (never the caller's)."""
    node: Any = doc
    for n, segment in enumerate(path):
        last = n == len(path) - 1
        if isinstance(node, dict):
            if segment not in node:
                return
            if last:
                node[segment] = MASKED
                return
            child = node[segment]
            copied = _copy(child)
            if copied is None:
                return
            node[segment] = copied
            node = copied
        elif isinstance(node, list):
            if not segment.isdigit() or int(segment) >= len(node):
                return
            index = int(segment)
            if last:
                node[index] = MASKED
                return
            copied = _copy(node[index])
            if copied is None:
                return
            node[index] = copied
            node = copied
        else:
            return


def _copy(value: Any) -> dict[str, Any] | list[Any] | None:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return None
