"""The app under a real uvicorn on a loopback port: what a client on the wire sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_support import MAX_BODY, Recorder, connector_doc, operator_doc, policy_doc, webhook_doc
from live_server import serving

from fibric import store


@pytest.fixture
def server(app: Any, recorder: Recorder) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 and a free port; yields the base URL."""
    with serving(app) as url:
        yield url
    assert recorder.events == ["start", "stop"]


@pytest.fixture
def http(server: str, state: store.StateStore, tenant: store.Tenant) -> Iterator[httpx.Client]:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {secret}"},
                      timeout=20) as client:
        yield client


def test_apply_and_read_back_over_http(http: httpx.Client, recorder: Recorder) -> None:
    documents = [policy_doc("guard"), connector_doc("magento"), operator_doc("ship-risk", "guard"),
                 webhook_doc("ops-channel")]
    response = http.post("/v1/apply", json={"documents": documents, "apply_set": "prod"})
    assert response.status_code == 200, response.text
    assert response.headers["Request-Id"].startswith("req_")
    assert {c["action"] for c in response.json()["changes"]} == {"created"}
    assert len(recorder.notified) == 4
    operator = http.get("/v1/operators/ship-risk").json()
    assert operator["policy_id"] == http.get("/v1/policies/guard").json()["id"]
    again = http.post("/v1/apply", json={"documents": documents, "apply_set": "prod"}).json()
    assert {c["action"] for c in again["changes"]} == {"unchanged"}


def test_oversized_bodies_are_refused_on_the_wire(http: httpx.Client) -> None:
    declared = http.post("/v1/policies", json={"name": "g", "rego": "#" * (MAX_BODY + 1)})
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "invalid_request"

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "g", "rego": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"#" * 4096
        yield b'"}'

    chunked = http.post("/v1/policies", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert chunked.json()["error"]["request_id"] == chunked.headers["Request-Id"]
    assert http.get("/v1/policies").json()["data"] == []


def test_errors_on_the_wire_have_the_reference_body(server: str) -> None:
    response = httpx.get(server + "/v1/operators", timeout=20)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "unauthenticated"
    assert error["request_id"] == response.headers["Request-Id"]
    assert set(error) == {"code", "message", "request_id", "docs"}
