"""Inline the files a spec points at, so the server stores self-contained specs.

A Policy in Git names `rego_file` and `tests` (and its shadow's `rego_file`) relative to its spec file; the
server cannot read the client's disk, so the client reads them and sends the
source inline (`rego`, `test_rego`). The stored form is what `export` prints,
and it re-applies with no diff.
"""

from __future__ import annotations

from pathlib import Path

from fibric import errors
from fibric.specs import models
from fibric.specs.loader import Loaded


def resolve(item: Loaded) -> Loaded:
    """The same document with file references replaced by their contents."""
    doc = item.document
    if not isinstance(doc, models.Policy) or doc.spec.resolved:
        return item
    base = Path(item.source.file).parent
    problems: list[errors.SpecProblem] = []

    def read(relative: str, path: tuple[str | int, ...]) -> str:
        target = base / relative
        try:
            return target.read_text(encoding="utf-8")
        except OSError as e:
            problems.append(item.source.problem(f"cannot read '{target}': {e.strerror or e}", path))
            return ""
        except UnicodeDecodeError:
            problems.append(item.source.problem(f"cannot read '{target}': not UTF-8 text", path))
            return ""

    spec = doc.spec
    rego = read(spec.rego_file, ("spec", "rego_file")) if spec.rego_file else spec.rego
    tests = list(spec.test_rego) + [
        read(p, ("spec", "tests", n)) for n, p in enumerate(spec.tests)
    ]
    shadow = spec.shadow
    if shadow is not None and shadow.rego_file:
        shadow_rego = read(shadow.rego_file, ("spec", "shadow", "rego_file"))
        shadow = shadow.model_copy(update={"rego": shadow_rego, "rego_file": None})
    if problems:
        raise errors.SpecInvalid(problems)
    new_spec = spec.model_copy(update={"rego": rego, "rego_file": None, "tests": [], "test_rego": tests,
                                       "shadow": shadow})
    return Loaded(document=doc.model_copy(update={"spec": new_spec}), source=item.source)
