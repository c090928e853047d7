"""Specs on the local disk: load, inline policy files, check the set, and map server errors back.

`validate`, `apply` and `diff` all start here, so a spec that `validate`
rejects is never sent, and a problem the server finds in `documents[N]`
is reported at the line of the N-th document's file, like a local one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from fibric import errors, specs
from fibric.specs import loader

_DOCUMENT_FIELD = re.compile(r"^documents\[(\d+)\](?:\.(.*))?$")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def load(paths: Sequence[str], *, offline: bool = True) -> tuple[list[specs.Loaded], specs.Report]:
    """Every document under `paths`, policy files inlined, checked as a set; SpecInvalid otherwise.

    Offline (validate), the files must be complete: a policy or capability
    they name must be in them. Otherwise (apply, diff) what they name may
    already be live, so references are left to the server, which knows; its
    problems come back located by `locate`.
    """
    problems: list[errors.SpecProblem] = []
    loaded: list[specs.Loaded] = []
    for file in loader.expand_paths(paths):  # file by file, so every file's problems are reported
        try:
            loaded.extend(specs.load_paths([file]))
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
    resolved: list[specs.Loaded] = []
    for item in loaded:
        try:
            resolved.append(specs.resolve(item))
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
    if problems:
        raise errors.SpecInvalid(problems)
    if not resolved:
        raise errors.SpecInvalid(
            errors.SpecProblem(f"no spec documents found in {', '.join(paths)}")
        )
    report = specs.check_set(resolved) if offline else specs.check_set(
        resolved,
        live_policies=[i.document.spec.policy for i in resolved if isinstance(i.document, specs.Operator)],
        live_capabilities=[c for i in resolved if isinstance(i.document, specs.Operator)
                           for c in i.document.spec.capabilities],
    )
    report.raise_for_problems()
    return resolved, report


def wire(loaded: Sequence[specs.Loaded]) -> list[dict[str, Any]]:
    """The documents as POST /v1/apply takes them (policy Rego inline)."""
    return [specs.document_data(item.document) for item in loaded]


def parse_path(dotted: str) -> tuple[str | int, ...]:
    """'spec.capabilities[1]' -> ('spec', 'capabilities', 1)."""
    return tuple(
        int(index) if index else name for name, index in _PART.findall(dotted)
    )


def locate(fields: Iterable[dict[str, str]], loaded: Sequence[specs.Loaded]) -> list[errors.SpecProblem]:
    """Server `fields` entries (`documents[N].path`) as problems at the N-th document's file:line:col."""
    problems = []
    for entry in fields:
        field, message = str(entry.get("field", "")), str(entry.get("message", ""))
        match = _DOCUMENT_FIELD.match(field)
        index = int(match.group(1)) if match else -1
        if match and index < len(loaded):
            problems.append(loaded[index].source.problem(message, parse_path(match.group(2) or "")))
        else:
            problems.append(errors.SpecProblem(message, path=field))
    return problems
