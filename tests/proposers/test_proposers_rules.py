"""The rules proposer: CEL conditions over events and sensed data, `{{ }}` templates, keys, errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from proposer_support import event, situation, spec

from fibric import proposers
from fibric.settings import LlmSettings

SHIP_RISK_RULES = [
    {
        "when": "event.data.carrier_scanned == false && event.data.status == 'open'",
        "actions": [
            {"capability": "orders.hold", "args": {"reason": "will miss ship-by date"}},
            {"capability": "orders.notify", "args": {"to": "owner"}},
        ],
    }
]
NOW = datetime(2026, 6, 14, 9, 0, tzinfo=UTC)


def propose(operator_spec: Any, events: list[dict[str, Any]] | None = None, **kw: Any) -> list[Any]:
    proposer = proposers.RulesProposer(clock=lambda: NOW)
    return asyncio.run(proposer.propose(situation(operator_spec, events, **kw)))


def test_for_model_rules_is_the_rules_proposer() -> None:
    proposer = proposers.for_model("rules", "t_acme", LlmSettings())

    assert isinstance(proposer, proposers.RulesProposer)
    assert proposer.name == "rules"


def test_matching_event_proposes_the_rule_actions_with_the_event_entity_and_derived_keys() -> None:
    actions = propose(spec(rules=SHIP_RISK_RULES), [event(carrier_scanned=False, status="open")])

    assert [(a.capability, a.entity_key, a.args) for a in actions] == [
        ("orders.hold", "order:SO-1", {"reason": "will miss ship-by date"}),
        ("orders.notify", "order:SO-1", {"to": "owner"}),
    ]
    assert actions[0].idempotency_key == proposers.derive_idempotency_key(
        "op_1", "order:SO-1", "orders.hold", {"reason": "will miss ship-by date"})
    assert actions[0].idempotency_key.startswith("ik_") and len(actions[0].idempotency_key) == 35


def test_a_false_condition_proposes_nothing() -> None:
    assert propose(spec(rules=SHIP_RISK_RULES), [event(carrier_scanned=True, status="open")]) == []


def test_no_rules_proposes_nothing() -> None:
    assert propose(spec(), [event(status="open")]) == []


def test_each_event_is_evaluated_and_duplicate_proposals_appear_once() -> None:
    events = [
        event(1, "order:SO-1", carrier_scanned=False, status="open"),
        event(2, "order:SO-2", carrier_scanned=True, status="open"),
        event(3, "order:SO-1", carrier_scanned=False, status="open"),  # same entity again: same actions
        event(4, "order:SO-3", carrier_scanned=False, status="open"),
    ]

    actions = propose(spec(rules=SHIP_RISK_RULES), events)

    assert [(a.capability, a.entity_key) for a in actions] == [
        ("orders.hold", "order:SO-1"), ("orders.notify", "order:SO-1"),
        ("orders.hold", "order:SO-3"), ("orders.notify", "order:SO-3"),
    ]


def test_single_template_keeps_its_type_and_mixed_text_interpolates() -> None:
    rules = [{
        "when": "true",
        "actions": [{
            "capability": "orders.hold",
            "args": {
                "order_id": "{{ event.data.order.id }}",
                "count": "{{ size(event.data.lines) + 1 }}",
                "late": "{{ event.data.late }}",
                "lines": "{{ event.data.lines }}",
                "reason": "late by {{ event.data.days }} days, scanned={{ event.data.late }}",
                "nested": {"at": "{{ now }}", "items": ["{{ event.data.days * 2 }}", "plain"]},
                "untouched": 3,
            },
        }],
    }]
    data = {"order": {"id": "SO-9"}, "lines": [1, 2], "late": True, "days": 2}

    [action] = propose(spec(rules=rules), [event(**data)])

    assert action.args == {
        "order_id": "SO-9",
        "count": 3,
        "late": True,
        "lines": [1, 2],
        "reason": "late by 2 days, scanned=true",
        "nested": {"at": "2026-06-14T09:00:00Z", "items": [4, "plain"]},
        "untouched": 3,
    }


def test_entity_and_idempotency_key_templates() -> None:
    rules = [{
        "when": "event.type == 'order.updated'",
        "actions": [{
            "capability": "orders.hold",
            "entity_key": "order:{{ event.data.number }}",
            "idempotency_key": "{{ operator.name }}:{{ event.data.number }}:hold",
            "args": {"reason": "x"},
        }],
    }]

    [action] = propose(spec(rules=rules), [event(entity=None, number=10884)])

    assert action.entity_key == "order:10884"
    assert action.idempotency_key == "ship-risk:10884:hold"


def test_sensed_data_and_events_are_variables_and_has_tests_for_a_missing_field() -> None:
    rules = [{
        "when": "has(event.data.priority) && event.data.priority == 'high'"
                " && sensed['orders.read'].open > 2 && size(events) == 2",
        "actions": [{"capability": "orders.notify", "args": {"to": "ops"}}],
    }]
    events = [event(1, status="open"), event(2, priority="high")]

    actions = propose(spec(rules=rules), events, sensed={"orders.read": {"open": 3}})

    assert [(a.capability, a.entity_key) for a in actions] == [("orders.notify", "order:SO-1")]


def test_scheduled_run_evaluates_once_with_a_null_event() -> None:
    rules = [{
        "when": "event == null",
        "actions": [{
            "capability": "orders.notify",
            "entity_key": "{{ sensed['orders.read'].orders[0].id }}",
            "args": {"to": "ops", "order_id": "{{ sensed['orders.read'].orders[0].id }}"},
        }],
    }]

    actions = propose(spec(rules=rules), [], sensed={"orders.read": {"orders": [{"id": "SO-7"}]}})

    assert [(a.entity_key, a.args) for a in actions] == [("SO-7", {"to": "ops", "order_id": "SO-7"})]


def test_scheduled_run_without_an_entity_key_template_is_an_error_naming_the_rule() -> None:
    rules = [{"when": "true", "actions": [{"capability": "orders.notify", "args": {"to": "ops"}}]}]

    with pytest.raises(proposers.ProposalError, match=r"rules\[0\]: a scheduled run has no event"):
        propose(spec(rules=rules), [])


def test_missing_field_at_run_time_is_an_error_naming_rule_and_event() -> None:
    hold = SHIP_RISK_RULES[0]["actions"][0]
    rules = [SHIP_RISK_RULES[0], {"when": "event.data.nope == 1", "actions": [hold]}]

    with pytest.raises(proposers.ProposalError) as caught:
        propose(spec(rules=rules), [event(7, carrier_scanned=False, status="open")])

    assert str(caught.value).startswith("rules[1].when (event ev_7): CEL error: no such key 'nope'")


def test_type_errors_and_non_bool_conditions_are_errors_never_actions() -> None:
    not_bool = [{"when": "event.data.status", "actions": [{"capability": "orders.hold"}]}]
    with pytest.raises(proposers.ProposalError,
                       match=r"rules\[0\].when \(event ev_1\): must be a bool, got string"):
        propose(spec(rules=not_bool), [event(status="open")])

    bad_arg = [{"when": "true", "actions": [{"capability": "orders.hold",
                                              "args": {"reason": "{{ 'x' + event.data.n }}"}}]}]
    with pytest.raises(proposers.ProposalError,
                       match=r"rules\[0\].actions\[0\].args.reason \(event ev_1\): CEL"):
        propose(spec(rules=bad_arg), [event(n=1)])


def test_event_without_entity_key_needs_a_template() -> None:
    with pytest.raises(proposers.ProposalError, match="the event has no entity_key"):
        propose(spec(rules=SHIP_RISK_RULES), [event(entity=None, carrier_scanned=False, status="open")])


def test_operator_and_now_variables() -> None:
    rules = [{
        "when": "operator.name == 'ship-risk' && 'orders.hold' in operator.capabilities"
                " && now > timestamp(event.occurred_at) - duration('24h')",
        "actions": [{"capability": "orders.hold", "args": {"reason": "{{ operator.tenant_id }}"}}],
    }]

    [action] = propose(spec(rules=rules), [event()])

    assert action.args == {"reason": "t_acme"}


def test_the_same_proposal_twice_has_the_same_key_and_args_order_does_not_matter() -> None:
    first = propose(spec(rules=SHIP_RISK_RULES), [event(carrier_scanned=False, status="open")])
    again = propose(spec(rules=SHIP_RISK_RULES), [event(9, carrier_scanned=False, status="open")])

    assert [a.idempotency_key for a in first] == [a.idempotency_key for a in again]
    assert proposers.derive_idempotency_key("op", "e", "c", {"a": 1, "b": [1, 2]}) == \
        proposers.derive_idempotency_key("op", "e", "c", {"b": [1, 2], "a": 1})
    assert proposers.derive_idempotency_key("op", "e", "c", {"a": 1}) != \
        proposers.derive_idempotency_key("op", "e", "c", {"a": 2})
    assert proposers.derive_idempotency_key("op2", "e", "c", {"a": 1}) != \
        proposers.derive_idempotency_key("op", "e", "c", {"a": 1})


def test_the_extended_function_library_is_available() -> None:
    rules = [{
        "when": "event.data.status.lowerAscii() == 'open' && math.greatest(event.data.delays) > 2",
        "actions": [{"capability": "orders.hold",
                     "args": {"reason": "{{ event.data.tags.join(', ') }}",
                              "order_id": "{{ 'so-1'.upperAscii() }}"}}],
    }]

    [action] = propose(spec(rules=rules), [event(status="OPEN", delays=[1, 3], tags=["late", "vip"])])

    assert action.args == {"reason": "late, vip", "order_id": "SO-1"}


def test_an_event_rule_on_a_scheduled_run_fails_with_a_hint_and_a_guard_makes_it_skip() -> None:
    with pytest.raises(proposers.ProposalError) as caught:
        propose(spec(rules=SHIP_RISK_RULES), [])
    assert str(caught.value).startswith("rules[0].when (scheduled run): CEL error: ")
    assert str(caught.value).endswith("guard the rule with `event != null && ...`)")

    guarded = [{**SHIP_RISK_RULES[0], "when": "event != null && " + str(SHIP_RISK_RULES[0]["when"])}]
    assert propose(spec(rules=guarded), []) == []
    assert len(propose(spec(rules=guarded), [event(carrier_scanned=False, status="open")])) == 2


def test_the_example_ship_risk_operator_proposes_hold_and_notify() -> None:
    from pathlib import Path

    from fibric import specs
    from fibric.specs import models

    path = Path(__file__).resolve().parents[2] / "examples" / "specs" / "operators.yaml"
    [operator] = [i.document for i in specs.load_paths([path]) if isinstance(i.document, models.Operator)]

    actions = propose(operator.spec, [event(carrier_scanned=False, status="open")])

    assert [(a.capability, a.args) for a in actions] == [
        ("orders.hold", {"reason": "will miss ship-by date"}), ("orders.notify", {"to": "owner"})]
