"""The test-only crash switch and the executor's settings: parsed once, refused when wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fibric import settings
from fibric.controller import crashpoints


def test_a_crashpoint_is_armed_for_its_point_and_capability_only() -> None:
    anywhere = crashpoints.Crashpoints({"FIBRIC_CRASHPOINT": "after_lease"})
    assert anywhere.armed("after_lease") and anywhere.armed("after_lease", "orders.hold")
    assert not anywhere.armed("after_receipt")
    one = crashpoints.Crashpoints({"FIBRIC_CRASHPOINT": "after_response@orders.notify"})
    assert one.armed("after_response", "orders.notify") and not one.armed("after_response", "orders.hold")
    unset = crashpoints.Crashpoints({})
    assert not any(unset.armed(p) for p in crashpoints.POINTS)
    unset.hit("after_lease")  # a no-op when nothing is armed: this test is still alive


def test_an_unknown_crashpoint_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="FIBRIC_CRASHPOINT must be one of after_lease"):
        crashpoints.Crashpoints({"FIBRIC_CRASHPOINT": "after_lunch"})


def test_executor_settings_come_from_the_environment() -> None:
    config = settings.Settings.from_env({"FIBRIC_EXECUTOR_LEASE_SECONDS": "2.5",
                                         "FIBRIC_EXECUTOR_RECOVERY_SECONDS": "0.5"})
    assert (config.executor.lease_seconds, config.executor.recovery_interval_seconds) == (2.5, 0.5)
    assert settings.Settings.from_env({}).executor == settings.ExecutorSettings(30.0, 5.0)
    with pytest.raises(ValueError, match="must be positive"):
        settings.Settings.from_env({"FIBRIC_EXECUTOR_LEASE_SECONDS": "0"})


def test_plans_expire_after_the_installations_ttl_unless_the_operator_says_otherwise() -> None:
    default = settings.Settings.from_env({}).executor
    assert default.plan_ttl(None) == timedelta(days=7) and default.plan_ttl(3600) == timedelta(hours=1)
    never = settings.Settings.from_env({"FIBRIC_PLAN_TTL_SECONDS": "0"}).executor
    assert never.plan_ttl(None) is None and never.plan_ttl(600) == timedelta(minutes=10)
    with pytest.raises(ValueError, match="FIBRIC_PLAN_TTL_SECONDS"):
        settings.Settings.from_env({"FIBRIC_PLAN_TTL_SECONDS": "-1"})
