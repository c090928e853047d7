"""Helpers for the trust-boundary tests: spec documents an attacker would send, and API clients."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fibric import settings, store, trust
from fibric.api import create_app
from fibric.store import receipt_store

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def connector(name: str, transport: dict[str, Any]) -> dict[str, Any]:
    return doc("Connector", name, {"transport": transport, "capabilities": {"orders.hold": "orders.hold"}})


def webhook(name: str, url: str = "https://hooks.example/h", **spec: Any) -> dict[str, Any]:
    return doc("Webhook", name, {"url": url, "events": ["plan.proposed"], **spec})


@contextmanager
def api(
    state: store.StateStore, ledger: receipt_store.Ledger, tenant: store.Tenant, scopes: frozenset[str],
    boundary: trust.Boundary | None = None, controller: Any = None,
) -> Iterator[TestClient]:
    """A client of a real app over `state`, with a key of `tenant` carrying `scopes`."""
    app = create_app(settings.Settings(), state, controller, receipts=ledger, boundary=boundary)
    _, secret = state.create_api_key(tenant.id, scopes)
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client


def error(response: Any, status: int) -> dict[str, Any]:
    """The reference's error object, after checking the status and that a request id came back."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert response.headers["Request-Id"] == body["request_id"]
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [f["field"] for f in body.get("fields", [])]
