""""Did you mean ...?": the closest known name to a misspelt one, for spec fields, rules and routes.

A problem that names what was probably meant is fixed in one edit; one that
says only "unknown field" sends the reader to the docs. Suggestions come from
difflib and only when a name is close, so an unrelated word gets none.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel


def closest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest of `choices`, or "" when none is close."""
    match = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def field_names(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The fields (by their YAML names) of the object at `path` below `model`; [] if it is no model."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue  # an item of a list: the list's item type is already `current`
        found = _model_in(current)
        fields = found.model_fields if found is not None else {}
        if part not in {info.alias or name for name, info in fields.items()}:
            return []
        current = next(info.annotation for name, info in fields.items() if (info.alias or name) == part)
    found = _model_in(current)
    return [info.alias or name for name, info in found.model_fields.items()] if found else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation: itself, `X | None`, `list[X]`, `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
