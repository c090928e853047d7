"""Checks that need the whole set of documents: duplicates and references.

A single document can be valid on its own and still be wrong in company: two
operators with one name, or an operator bound to a policy that does not exist.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from fibric import errors
from fibric.specs import models, suggest
from fibric.specs.loader import Loaded, Source


@dataclass
class Report:
    problems: list[errors.SpecProblem] = field(default_factory=list)
    warnings: list[errors.SpecProblem] = field(default_factory=list)

    def raise_for_problems(self) -> None:
        if self.problems:
            raise errors.SpecInvalid(self.problems)


def check_set(
    loaded: Iterable[Loaded],
    live_policies: Iterable[str] = (),
    live_capabilities: Iterable[str] = (),
) -> Report:
    """Duplicates and dangling references across `loaded` plus what is already live.

    `live_policies` and `live_capabilities` describe objects in the store that the
    set does not replace (pass nothing for an offline check of files alone).
    """
    report = Report()
    items = list(loaded)
    first_seen: dict[tuple[str, str], Source] = {}
    for item in items:
        key = (item.document.kind, item.document.name)  # type: ignore[attr-defined]
        if key in first_seen:
            earlier = first_seen[key]
            report.problems.append(
                item.source.problem(
                    f"duplicate {key[0]} '{key[1]}' (first defined at {_where(earlier)})",
                    ("metadata", "name"),
                )
            )
        else:
            first_seen[key] = item.source

    policies = set(live_policies) | {
        i.document.name for i in items if isinstance(i.document, models.Policy)
    }
    capabilities = set(live_capabilities)
    for i in items:
        if isinstance(i.document, models.Connector):
            capabilities.update(i.document.spec.capabilities)

    for i in items:
        doc = i.document
        if not isinstance(doc, models.Operator):
            continue
        if doc.spec.policy not in policies:
            report.problems.append(
                i.source.problem(f"policy '{doc.spec.policy}' does not exist", ("spec", "policy"))
            )
        for n, capability in enumerate(doc.spec.capabilities):
            if capability not in capabilities:
                report.warnings.append(
                    i.source.problem(
                        f"no connector fulfils capability '{capability}'",
                        ("spec", "capabilities", n),
                    )
                )
    return report


def _where(source: Source) -> str:
    return f"{source.file}:{source.line}" if source.line is not None else source.file


def check_models(loaded: Iterable[Loaded], models_known: Collection[str]) -> list[errors.SpecProblem]:
    """Operators whose `model` is none of `models_known` ('rules' and the server's LLM route names)."""
    problems = []
    for item in loaded:
        doc = item.document
        if isinstance(doc, models.Operator) and doc.spec.model not in models_known:
            problems.append(item.source.problem(
                f"model '{doc.spec.model}' is neither 'rules' nor a route of the LLM routes file"
                f"{suggest.closest(doc.spec.model, models_known)}", ("spec", "model")))
    return problems
