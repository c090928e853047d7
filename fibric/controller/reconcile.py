"""Reconcile one object: observe the world, write what was observed into its status.

The contract is controller-runtime's. A reconcile is level-based: it ignores
what triggered it, reads the full current state every time and computes the
whole status from it, so running it twice, late, or after a missed event
gives the same answer. It writes only when the status changed, which makes an
idle resync free. It returns a `Result` (optionally asking to be run again
later) or raises; deciding whether and when to retry belongs to the loop alone
(see loop.py).

Today a reconcile records bindings and readiness; connecting MCP servers,
compiling Rego and scheduling runs arrive with their own issues and will fill
in the same statuses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from fibric import errors, store
from fibric.controller import conditions

NOT_CONNECTED_MESSAGE = "MCP connection is handled by the connector runtime"


def connector_defaults() -> dict[str, Any]:
    """What a connector's status says before the connector runtime has observed it."""
    return {"connection": "disconnected", "tools": [], "last_synced_at": None, "last_error": None}


@dataclass(frozen=True)
class Result:
    """What a successful reconcile asks of the loop: nothing, or to run again after a delay."""

    requeue_after: float | None = None


Reconciler = Callable[[store.StateStore, store.StoredObject, datetime], Result]


def reconcile(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """Bring `obj`'s status up to date with the current state; raise to be retried."""
    reconciler = RECONCILERS.get(obj.kind)
    if reconciler is None:
        raise errors.PermanentError(f"no reconciler for kind '{obj.kind}'")
    return reconciler(state, obj, now)


def reconcile_operator(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """An operator is ready when its policy exists; unmapped capabilities are only a warning."""
    policy = obj.spec.get("policy", "")
    conds = conditions.of(obj.status)
    if _exists(state, obj.tenant_id, "Policy", policy):
        conds = conditions.set_condition(
            conds, conditions.READY, conditions.TRUE, "Reconciled", "", now
        )
        conds = conditions.set_condition(
            conds, conditions.POLICY_RESOLVED, conditions.TRUE, "Resolved",
            f"policy '{policy}' exists", now,
        )
    else:
        message = f"policy '{policy}' does not exist"
        conds = conditions.set_condition(
            conds, conditions.READY, conditions.FALSE, "PolicyNotFound", message, now
        )
        conds = conditions.set_condition(
            conds, conditions.POLICY_RESOLVED, conditions.FALSE, "PolicyNotFound", message, now
        )

    mapped = {
        capability
        for connector in state.list_objects(obj.tenant_id, "Connector")
        for capability in connector.spec.get("capabilities", {})
    }
    # `sense` capabilities are called through connectors too, on scheduled runs.
    wanted = list(dict.fromkeys([*obj.spec.get("capabilities", []), *obj.spec.get("sense", [])]))
    missing = [c for c in wanted if c not in mapped]
    if missing:
        conds = conditions.set_condition(
            conds, conditions.CAPABILITIES_FULFILLED, conditions.FALSE, "UnfulfilledCapabilities",
            f"no connector maps capability {', '.join(repr(c) for c in missing)}", now,
        )
    else:
        conds = conditions.set_condition(
            conds, conditions.CAPABILITIES_FULFILLED, conditions.TRUE, "Fulfilled",
            "every capability is mapped by a connector", now,
        )
    return _record(state, obj, conds)


def reconcile_connector(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """Report what the connector runtime observed; until it runs, a connector is disconnected."""
    observed = {key: obj.status.get(key, default) for key, default in connector_defaults().items()}
    connection = observed["connection"]
    last_error = observed["last_error"]
    if connection in ("connected", "degraded"):
        # Degraded still serves calls; last_error says what is wrong.
        status = conditions.TRUE
        reason = "Connected" if connection == "connected" else "Degraded"
        message = "" if connection == "connected" else str(last_error or "")
    else:
        status, reason, message = conditions.FALSE, "NotConnected", str(last_error or NOT_CONNECTED_MESSAGE)
    conds = conditions.of(obj.status)
    conds = conditions.set_condition(conds, conditions.READY, status, reason, message, now)
    conds = conditions.set_condition(conds, conditions.CONNECTED, status, reason, message, now)
    return _record(state, obj, conds, extra=observed)


def reconcile_policy(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """A stored policy is ready; compiling its Rego belongs to the policy engine."""
    conds = conditions.set_condition(
        conditions.of(obj.status), conditions.READY, conditions.TRUE, "Stored",
        "policy source stored", now,
    )
    return _record(state, obj, conds)


def reconcile_webhook(state: store.StateStore, obj: store.StoredObject, now: datetime) -> Result:
    """A webhook is ready when enabled and its signing secret is available to this process."""
    secret_env = obj.spec.get("secret_env")
    if not obj.spec.get("enabled", True):
        ready, reason, message = conditions.FALSE, "Disabled", "spec.enabled is false"
    elif secret_env and not os.environ.get(secret_env):
        # The dispatcher signs with this variable's value; without it no delivery can be signed.
        ready, reason = conditions.FALSE, "SecretMissing"
        message = f"environment variable {secret_env} (spec.secret_env) is not set in the controller"
    else:
        ready, reason, message = conditions.TRUE, "Enabled", ""
    conds = conditions.set_condition(
        conditions.of(obj.status), conditions.READY, ready, reason, message, now
    )
    return _record(state, obj, conds)


RECONCILERS: Mapping[str, Reconciler] = MappingProxyType(
    {
        "Operator": reconcile_operator,
        "Connector": reconcile_connector,
        "Policy": reconcile_policy,
        "Webhook": reconcile_webhook,
    }
)


def _exists(state: store.StateStore, tenant_id: str, kind: str, name: str) -> bool:
    if not name:
        return False
    try:
        state.get_object(tenant_id, kind, name)
    except errors.NotFound:
        return False
    return True


def _record(
    state: store.StateStore,
    obj: store.StoredObject,
    conds: list[conditions.Condition],
    extra: Mapping[str, Any] | None = None,
) -> Result:
    """Write the new status only if it differs, keeping fields other components own."""
    status = {**obj.status, **(extra or {}), "observed_generation": obj.generation, "conditions": conds}
    if status != obj.status:
        state.set_status(obj, status)
    return Result()
