"""The `rules` proposer: deterministic CEL conditions and `{{ cel }}` templates.

For each event of the run (once, with `event` = null, on a scheduled run), every
rule whose `when` is true contributes its actions. CEL variables, documented in
docs/operators.md#cel-variables:

  event     the event envelope {id, type, entity_key, idempotency_key, occurred_at, data}, or null
  events    every event of this run, oldest first ([] on a scheduled run)
  sensed    sense capability -> the tool's result
  operator  {id, name, tenant_id, capabilities, policy, purpose}
  now       the run's time, a CEL timestamp

Expressions come compiled from `specs.expressions`, cached by source, so a spec
version compiles once. Evaluating is microseconds of CPU per rule, so it runs
inline on the caller's loop. The `cel` extension converts every variable of a
context again on the first evaluation after any variable changes, so only the
variables (and the extended function library) the rules reference are bound:
a rule that never mentions `events` does not pay for converting all of them
once per event (bench/bench_proposers.py).
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import cel
from cel import stdlib

from fibric import timefmt
from fibric.proposers import base, keys
from fibric.specs import expressions, models


class RulesProposer:
    """Turns rules + events + sensed data into actions, with no model in the loop."""

    name = "rules"

    def __init__(self, clock: Callable[[], datetime] = timefmt.now) -> None:
        self._clock = clock

    async def propose(self, situation: base.Situation) -> list[base.ProposedAction]:
        return self.propose_now(situation)

    def propose_now(self, situation: base.Situation) -> list[base.ProposedAction]:
        """The same as `propose`, synchronously (what benchmarks and sync callers use)."""
        spec = situation.spec
        if not spec.rules:
            return []
        used, library = _references(tuple(p.source for p in expressions.programs(spec.rules)))
        context = cel.Context()
        if library:
            stdlib.add_stdlib_to_context(context)
        if "events" in used:
            _bind(context, "events", situation.events)
        if "sensed" in used:
            _bind(context, "sensed", situation.sensed)
        if "operator" in used:
            _bind(context, "operator", {
                "id": situation.operator_id,
                "name": situation.operator_name,
                "tenant_id": situation.tenant_id,
                "capabilities": list(spec.capabilities),
                "policy": spec.policy,
                "purpose": spec.purpose,
            })
        if "now" in used:
            _bind(context, "now", self._clock())
        actions: list[base.ProposedAction] = []
        runs: list[dict[str, Any] | None] = list(situation.events) or [None]
        for event in runs:
            if "event" in used:
                _bind(context, "event", event)
            for i, rule in enumerate(spec.rules):
                if _condition(rule, i, context, event):
                    actions.extend(
                        _action(action, (i, j), context, event, situation.operator_id,
                                _why(i, rule.when, event))
                        for j, action in enumerate(rule.actions)
                    )
        return keys.dedup(actions)


@functools.lru_cache(maxsize=1024)
def _references(sources: tuple[str, ...]) -> tuple[frozenset[str], bool]:
    """The variables these expressions use, and whether any calls the extended library."""
    used: set[str] = set()
    library = False
    for source in sources:
        program = expressions.compile_expression(source)
        names = set(program.variables())
        used |= names
        library = library or bool(names & expressions.LIBRARY_NAMESPACES) or bool(
            set(program.functions()) & expressions.LIBRARY_FUNCTIONS)
    return frozenset(used), library


def _bind(context: cel.Context, name: str, value: Any) -> None:
    """Set a CEL variable; data CEL cannot represent is a run error, not a crash."""
    try:
        context.add_variable(name, value)
    except Exception as e:  # the extension raises ValueError for unconvertible Python values
        raise base.ProposalError(f"`{name}` cannot be given to CEL: {e}") from e


def _condition(rule: models.Rule, i: int, context: cel.Context, event: Mapping[str, Any] | None) -> bool:
    where = f"rules[{i}].when"
    result = _run(expressions.compile_expression(rule.when), context, where, event)
    if not isinstance(result, bool):
        raise base.ProposalError(f"{where}{_on(event)}: must be a bool, got {_cel_type(result)}")
    return result


def _action(
    action: models.RuleAction, at: tuple[int, int], context: cel.Context,
    event: Mapping[str, Any] | None, operator_id: str, why: str,
) -> base.ProposedAction:
    where = f"rules[{at[0]}].actions[{at[1]}]"
    args = _render(action.args, context, f"{where}.args", event)
    if action.entity_key is not None:
        entity_key = _key(action.entity_key, context, f"{where}.entity_key", event)
    elif event is not None and isinstance(event.get("entity_key"), str) and event["entity_key"]:
        entity_key = event["entity_key"]
    elif event is None:
        raise base.ProposalError(
            f"rules[{at[0]}]: a scheduled run has no event, so {where} needs an entity_key template")
    else:
        raise base.ProposalError(f"rules[{at[0]}]{_on(event)}: the event has no entity_key, "
                                 f"so {where} needs an entity_key template")
    if action.idempotency_key is not None:
        idempotency_key = _key(action.idempotency_key, context, f"{where}.idempotency_key", event)
    else:
        idempotency_key = keys.derive_idempotency_key(operator_id, entity_key, action.capability, args)
    return base.ProposedAction(
        capability=action.capability, entity_key=entity_key, args=args, idempotency_key=idempotency_key,
        rationale=why,
    )


def _why(i: int, when: str, event: Mapping[str, Any] | None) -> str:
    """What an approver reads: which rule matched on which event, with its condition as written."""
    on = "a scheduled run" if event is None else f"event {event.get('id', '?')} ({event.get('type', '?')})"
    return f"rules[{i}] matched {on}: {when}"[:base.RATIONALE_MAX]


def _render(value: Any, context: cel.Context, where: str, event: Mapping[str, Any] | None) -> Any:
    """Args with every string template evaluated; other values unchanged."""
    if isinstance(value, str):
        return _template(value, context, where, event, typed=True)
    if isinstance(value, dict):
        return {k: _render(v, context, f"{where}.{k}", event) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{where}[{n}]", event) for n, v in enumerate(value)]
    return value


def _key(text: str, context: cel.Context, where: str, event: Mapping[str, Any] | None) -> str:
    value = _template(text, context, where, event, typed=False)
    if not value:
        raise base.ProposalError(f"{where}{_on(event)}: evaluates to an empty string")
    return str(value)


def _template(
    text: str, context: cel.Context, where: str, event: Mapping[str, Any] | None, *, typed: bool
) -> Any:
    """A string that is exactly one `{{ }}` keeps its value's type when `typed`; otherwise interpolate."""
    template = expressions.parse_template(text)
    if template.is_literal:
        return text
    single = template.single
    if typed and single is not None:
        return _json_value(_run(single, context, where, event), where, event)
    out = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
        else:
            out.append(_as_text(_json_value(_run(part, context, where, event), where, event)))
    return "".join(out)


def _run(program: cel.Program, context: cel.Context, where: str, event: Mapping[str, Any] | None) -> Any:
    try:
        return program.execute(context)
    except Exception as e:  # the extension raises KeyError, TypeError, RuntimeError, ZeroDivisionError...
        detail = str(e) if not isinstance(e, KeyError) else f"no such key {e}"
        if event is None and "event" in program.variables():
            detail += " (`event` is null on a scheduled run: guard the rule with `event != null && ...`)"
        raise base.ProposalError(f"{where}{_on(event)}: CEL error: {detail}") from e


def _json_value(value: Any, where: str, event: Mapping[str, Any] | None) -> Any:
    """A CEL result as plain JSON data: timestamps as RFC 3339, durations as '<seconds>s'."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise base.ProposalError(f"{where}{_on(event)}: {value} is not a finite number")
        return value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where, event) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, where, event) for k, v in value.items()}
    raise base.ProposalError(f"{where}{_on(event)}: a {_cel_type(value)} cannot be an argument")


def _as_text(value: Any) -> str:
    """How a value reads inside a larger string: CEL's spelling for scalars, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, (int, float)):
        return str(value)
    return keys.canonical_json(value)


def _cel_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "double", str: "string", list: "list", dict: "map",
            type(None): "null", datetime: "timestamp", timedelta: "duration", bytes: "bytes"}.get(
        type(value), type(value).__name__)


def _on(event: Mapping[str, Any] | None) -> str:
    return f" (event {event.get('id')})" if event is not None else " (scheduled run)"
