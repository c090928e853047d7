"""Helpers for the controller tests: specs as YAML, writes that bypass apply, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fibric import specs, store, trust
from fibric.controller import applier

T = TypeVar("T")

POLICY = """\
apiVersion: fibric.io/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  rego: |
    package fibric.guard
    default decision := {{"decision": "BLOCK"}}
"""

OPERATOR = """\
apiVersion: fibric.io/v1
kind: Operator
metadata: {{name: {name}}}
spec:
  capabilities: [{capabilities}]
  policy: {policy}
"""

CONNECTOR = """\
apiVersion: fibric.io/v1
kind: Connector
metadata: {{name: {name}}}
spec:
  transport: {{http: {{url: "https://orders.example/mcp"}}}}
  capabilities: {{{capabilities}}}
"""

WEBHOOK = """\
apiVersion: fibric.io/v1
kind: Webhook
metadata: {{name: {name}}}
spec:
  url: https://acme.example/hooks
  events: [plan.proposed]
{extra}"""


def policy(name: str = "guard") -> str:
    return POLICY.format(name=name)


def operator(name: str = "ship-risk", policy: str = "guard", capabilities: str = "orders.hold") -> str:
    return OPERATOR.format(name=name, policy=policy, capabilities=capabilities)


def connector(name: str = "magento", capabilities: tuple[str, ...] = ("orders.hold",)) -> str:
    return CONNECTOR.format(name=name, capabilities=", ".join(f"{c}: {c}" for c in capabilities))


def webhook(name: str = "ops-channel", **spec: str) -> str:
    return WEBHOOK.format(name=name, extra="".join(f"  {k}: {v}\n" for k, v in spec.items()))


def apply_yaml(
    state: store.StateStore, tenant_id: str, *documents: str, origin: trust.Origin = trust.Origin.TENANT
) -> applier.ApplyResult:
    """Apply YAML documents the way `fibric apply` does (a tenant), or `serve --specs` (the installation)."""
    loaded = specs.load_text("---\n".join(documents), "test.yaml")
    return applier.apply(state, tenant_id, loaded, origin=origin)


def insert(state: store.StateStore, tenant_id: str, document: str) -> store.StoredObject:
    """Write one spec straight into the store, skipping apply's reference checks.

    This is how an object can end up dangling: written by an older replica or
    racing a delete. The controller must still report it truthfully.
    """
    (item,) = specs.load_text(document, "direct.yaml")
    doc = item.document
    with state.tenant_transaction(tenant_id) as tx:
        return tx.insert(doc.kind, doc.name, doc.spec_dict(), {})  # type: ignore[attr-defined]


def condition(obj: store.StoredObject, type: str) -> dict[str, Any]:
    """The condition of `type` on a stored object; fails the test if it is missing."""
    for c in obj.status.get("conditions", []):
        if c["type"] == type:
            return dict(c)
    raise AssertionError(f"{obj.kind} '{obj.name}' has no {type} condition: {obj.status}")


def run(coro: Awaitable[T], timeout: float = 10.0) -> T:
    """Run a coroutine on a fresh event loop, failing rather than hanging."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(check: Callable[[], T | None], timeout: float = 3.0, what: str = "") -> T:
    """Poll `check` (run in a thread: it reads the store) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)
