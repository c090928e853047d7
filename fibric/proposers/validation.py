"""Static checks of an operator's rules, for callers that hold a spec built without validation."""

from __future__ import annotations

from fibric.specs import expressions, models


def check_rules(spec: models.OperatorSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path relative to spec, message) for every invalid CEL `when` or `{{ }}` template; [] when fine.

    Validated specs never have any (the models run the same checks, so `fibric
    validate` and apply reject them with file:line); this also covers specs made
    with `model_construct`, and lists every problem, where validation stops at
    the first per field.
    """
    return expressions.check_rules(spec.rules)
