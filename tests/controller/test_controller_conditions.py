"""Conditions follow the Kubernetes rule: the transition time moves only when the status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fibric.controller import conditions

T0 = datetime(2026, 6, 14, 9, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_a_new_condition_is_appended_with_the_time_it_appeared() -> None:
    result = conditions.set_condition([], "Ready", "True", "Stored", "ok", T0)
    assert result == [{"type": "Ready", "status": "True", "reason": "Stored", "message": "ok",
                       "last_transition_time": "2026-06-14T09:00:00Z"}]


def test_same_status_keeps_the_transition_time_but_updates_reason_and_message() -> None:
    first = conditions.set_condition([], "Ready", "False", "PolicyNotFound", "policy 'a'", T0)
    second = conditions.set_condition(first, "Ready", "False", "SecretMissing", "no secret", T1)
    assert second[0]["last_transition_time"] == "2026-06-14T09:00:00Z"
    assert (second[0]["reason"], second[0]["message"]) == ("SecretMissing", "no secret")


def test_a_status_change_moves_the_transition_time() -> None:
    first = conditions.set_condition([], "Ready", "False", "PolicyNotFound", "", T0)
    second = conditions.set_condition(first, "Ready", "True", "Reconciled", "", T1)
    assert second[0]["status"] == "True"
    assert second[0]["last_transition_time"] == "2026-06-14T09:05:00Z"


def test_setting_one_condition_leaves_the_others_and_their_order_alone() -> None:
    conds = conditions.set_condition([], "Ready", "True", "Reconciled", "", T0)
    conds = conditions.set_condition(conds, "PolicyResolved", "True", "Resolved", "", T0)
    before = [dict(c) for c in conds]
    after = conditions.set_condition(conds, "Ready", "False", "ReconcileError", "boom", T1)
    assert conds == before  # the input list is not modified
    assert [c["type"] for c in after] == ["Ready", "PolicyResolved"]
    assert after[1] == before[1]


def test_reading_conditions() -> None:
    conds = conditions.set_condition([], "Ready", "True", "Reconciled", "", T0)
    assert conditions.is_true(conds, "Ready")
    assert conditions.status_of(conds, "Connected") == "Unknown"
    assert conditions.get_condition(conds, "Connected") is None
    assert not conditions.is_true(conds, "Connected")
    assert conditions.of({}) == []
    assert conditions.of({"conditions": conds}) == conds


def test_an_invalid_status_is_refused() -> None:
    with pytest.raises(ValueError, match="True, False, Unknown"):
        conditions.set_condition([], "Ready", "yes", "Because", "", T0)
