"""The typed client: errors, retries and pagination, over real HTTP.

Retry behaviour is checked against a scripted ASGI server (real uvicorn,
real sockets) that answers from a list and records what it was sent;
everything else runs against the real API.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from live_server import serving
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fibric import client, errors, store

Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Script:
    replies: list[Reply]
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def answer(request: Request) -> Response:
            self.seen.append((request.method, request.url.path, dict(request.headers)))
            status, body, headers = self.replies.pop(0) if self.replies else (200, {}, {})
            if isinstance(body, str):
                return Response(body, status_code=status, headers=headers)
            return JSONResponse(body, status_code=status, headers=headers)

        return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "DELETE"])])


@pytest.fixture
def script() -> Script:
    return Script([])


@pytest.fixture
def scripted_url(script: Script) -> Iterator[str]:
    with serving(script.app()) as url:
        yield url


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": "req_1",
                      "docs": f"https://api.fibric.io/docs/errors#{code}", **extra}}


def test_429_is_retried_after_retry_after_with_the_same_idempotency_key(
    script: Script, scripted_url: str
) -> None:
    script.replies = [
        (429, error_body("rate_limited", "slow down"), {"Retry-After": "7"}),
        (500, error_body("internal_error", "oops"), {}),
        (200, {"object": "apply_result", "changes": []}, {}),
    ]
    slept: list[float] = []
    with client.Client(scripted_url, "sk_live_abc", sleep=slept.append) as api:
        assert api.apply([{"kind": "Policy"}]) == {"object": "apply_result", "changes": []}
    assert len(script.seen) == 3
    assert slept[0] == 7.0 and 0 <= slept[1] <= 1.0
    keys = {headers["idempotency-key"] for _, _, headers in script.seen}
    assert len(keys) == 1  # one logical request, one key across its retries
    assert all(h["authorization"] == "Bearer sk_live_abc" for _, _, h in script.seen)


def test_each_post_gets_its_own_idempotency_key(script: Script, scripted_url: str) -> None:
    with client.Client(scripted_url, "sk_live_abc") as api:
        api.create_webhook("https://x.example/h", ["plan.proposed"])
        api.create_webhook("https://x.example/h", ["plan.proposed"])
    first, second = (h["idempotency-key"] for _, _, h in script.seen)
    assert first != second


def test_a_409_for_a_key_still_running_is_retried_with_the_same_key(
    script: Script, scripted_url: str
) -> None:
    script.replies = [
        (409, error_body("conflict", "still being processed"), {"Retry-After": "1"}),
        (200, {"id": "pl_1", "object": "execution_plan", "status": "executed"}, {}),
    ]
    slept: list[float] = []
    with client.Client(scripted_url, "sk_live_abc", sleep=slept.append) as api:
        assert api.approve_plan("pl_1")["status"] == "executed"
    assert slept == [1.0] and len(script.seen) == 2
    assert len({headers["idempotency-key"] for _, _, headers in script.seen}) == 1


def test_a_409_conflict_without_retry_after_is_final(script: Script, scripted_url: str) -> None:
    script.replies = [(409, error_body("plan_not_approvable", "already executed"), {})]
    with client.Client(scripted_url, "sk_live_abc", sleep=lambda s: None) as api,\
            pytest.raises(client.ApiError) as caught:
        api.approve_plan("pl_1")
    assert (caught.value.status, caught.value.code) == (409, "plan_not_approvable")
    assert len(script.seen) == 1


def test_retries_give_up_with_the_last_error(script: Script, scripted_url: str) -> None:
    script.replies = [(500, error_body("internal_error", "down"), {})] * 4
    slept: list[float] = []
    with client.Client(scripted_url, "sk_live_abc", retries=3, sleep=slept.append) as api,\
            pytest.raises(client.ApiError) as caught:
        api.get_operator("x")
    assert (caught.value.status, caught.value.code) == (500, "internal_error")
    assert len(script.seen) == 4 and len(slept) == 3


def test_client_errors_are_not_retried(script: Script, scripted_url: str) -> None:
    fields = [{"field": "documents[0].spec.policy", "message": "policy 'nope' does not exist"}]
    script.replies = [(400, error_body("invalid_request", "documents[0].spec.policy: bad", fields=fields),
                       {})]
    with client.Client(scripted_url, "sk_live_abc", sleep=lambda s: None) as api,\
            pytest.raises(client.ApiError) as caught:
        api.apply([])
    error = caught.value
    assert (error.status, error.code, error.request_id, error.fields) == (
        400, "invalid_request", "req_1", fields)
    assert error.message == "documents[0].spec.policy: bad"
    assert len(script.seen) == 1


def test_a_non_api_error_page_still_becomes_an_api_error(script: Script, scripted_url: str) -> None:
    script.replies = [(502, "<html>Bad gateway</html>", {})] * 4
    with client.Client(scripted_url, "sk_live_abc", sleep=lambda s: None) as api,\
            pytest.raises(client.ApiError) as caught:
        api.list_webhooks()
    assert caught.value.code == "http_502"
    assert "Bad gateway" in caught.value.message


def test_an_unreachable_server_is_named_and_retried() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    slept: list[float] = []
    url = f"http://127.0.0.1:{port}"
    with client.Client(url, "sk_live_secretvalue", sleep=slept.append) as api,\
            pytest.raises(client.Unreachable) as caught:
        api.apply([])  # a refused connection never reached the server: safe to retry even a POST
    assert f"cannot reach the Fibric API at {url}" in str(caught.value)
    assert isinstance(caught.value, errors.TemporaryError)
    assert len(slept) == 3
    assert "sk_live_secretvalue" not in str(caught.value)


def test_the_key_is_never_in_the_repr() -> None:
    api = client.Client("http://127.0.0.1:9", "sk_live_secretvalue")
    try:
        assert "sk_live_secretvalue" not in repr(api)
    finally:
        api.close()


def test_pagination_follows_next_cursor_across_pages(
    api_url: str, state: store.StateStore, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    documents = [{"apiVersion": "fibric.io/v1", "kind": "Webhook", "metadata": {"name": f"hook-{n:03d}"},
                  "spec": {"url": "https://acme.example/h", "events": ["plan.proposed"]}}
                 for n in range(client.PAGE_SIZE + 5)]
    with client.Client(api_url, secret) as api:
        result = api.apply(documents, apply_set="bulk")
        assert len(result["changes"]) == client.PAGE_SIZE + 5
        hooks = api.list_webhooks()
        specs = api.specs("webhooks")
        assert api.specs("Operator") == []
    names = [h["name"] for h in hooks]
    assert names == [f"hook-{n:03d}" for n in reversed(range(client.PAGE_SIZE + 5))]  # newest first
    assert [s["metadata"]["name"] for s in specs] == names
    assert specs[0]["metadata"]["labels"] == {"fibric.io/apply-set": "bulk"}


def test_typed_methods_against_the_real_api(
    api_url: str, state: store.StateStore, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    policy = {"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": "guard"},
              "spec": {"rego": "package fibric.guard\n"}}
    with client.Client(api_url, secret) as api:
        api.apply([policy])
        policy_id = api.get_policy("guard")["id"]
        assert [p["id"] for p in api.list_policies()] == [policy_id]
        created = api.create_operator("ship-risk", ["orders.hold"], policy_id, schedule="*/5 * * * *")
        assert created["policy_id"] == policy_id and created["schedule"] == "*/5 * * * *"
        assert api.get_operator(created["id"])["name"] == "ship-risk"
        assert [o["name"] for o in api.list_operators(status="active")] == ["ship-risk"]
        assert api.list_operators(status="paused") == []
        hook = api.create_webhook("https://acme.example/h", ["receipt.created"], description="d",
                                  name="audit")
        assert hook["signing_secret"].startswith("whsec_")
        assert "signing_secret" not in api.list_webhooks()[0]
        assert api.list_connectors() == []
        with pytest.raises(client.ApiError) as caught:
            api.get_connector("magento")
        assert (caught.value.status, caught.value.code) == (404, "not_found")
        assert api.delete("operators", "ship-risk") == {
            "id": created["id"], "object": "operator", "deleted": True}
        with pytest.raises(client.ApiError) as odd:
            api.get_policy("../operators")  # escaped: cannot address another route
        assert odd.value.status == 404


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'gadgets'"):
        client.resource_of("gadgets")
    assert client.resource_of("Policy") == client.resource_of("policies") == "policies"


def test_event_plan_and_receipt_methods_against_the_real_api(
    api_url: str, state: store.StateStore, tenant: store.Tenant
) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with client.Client(api_url, secret) as api:
        data = {"status": "open", "carrier_scanned": False}
        first = api.ingest_event("order.updated", "order:SO-10884", "magento:SO-10884:v7", data)
        again = api.ingest_event("order.updated", "order:SO-10884", "magento:SO-10884:v7", data)
        assert first["id"].startswith("ev_") and first["dedup"] is False
        assert again["dedup"] is True and again["id"] == first["id"]
        assert first["tenant_id"] == tenant.id
        assert api.list_plans(status="proposed") == []
        assert api.list_receipts(decision="ALLOW") == []
        for call in (lambda: api.get_plan("pl_missing"), lambda: api.approve_plan("pl_missing"),
                     lambda: api.get_receipt("rc_missing")):
            with pytest.raises(client.ApiError) as caught:
                call()
            assert (caught.value.status, caught.value.code) == (404, "not_found")
