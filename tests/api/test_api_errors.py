"""Every error, FastAPI's own included, has the reference's body and a Request-Id; none is a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import MAX_BODY, TestClient, error_of, fields_of, policy_doc

from fibric import errors


def test_an_unknown_route_is_404_not_found(client: TestClient) -> None:
    error = error_of(client.get("/v1/nothing-here"), 404, "not_found")
    assert "/v1/nothing-here" in error["message"]


def test_a_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.put("/v1/operators")
    error = error_of(response, 405, "invalid_request")
    assert "PUT" in error["message"]
    assert "GET" in response.headers["Allow"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/v1/policies", content=b'{"name": "guard",',
                           headers={"Content-Type": "application/json"})
    assert "Malformed JSON" in error_of(response, 400, "invalid_request")["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_400(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"name": "guard", "rego": "package x"}).encode()
    response = client.post("/v1/policies", content=body, headers=headers)
    assert "Content-Type: application/json" in error_of(response, 400, "invalid_request")["message"]
    assert client.get("/v1/policies").json()["data"] == []


def test_a_missing_body_is_400(client: TestClient) -> None:
    response = client.post("/v1/policies")
    assert "body is required" in error_of(response, 400, "invalid_request")["message"]


def test_a_body_over_the_limit_is_413_invalid_request(client: TestClient) -> None:
    huge = {"name": "guard", "rego": "package x\n" + "#" * MAX_BODY}
    response = client.post("/v1/policies", json=huge)
    assert str(MAX_BODY) in error_of(response, 413, "invalid_request")["message"]
    assert client.get("/v1/policies").json()["data"] == []


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "guard", "rego": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"#" * 1024
        yield b'"}'

    response = client.post("/v1/policies", content=chunks(),
                           headers={"Content-Type": "application/json"})
    error_of(response, 413, "invalid_request")


def test_a_chunked_body_under_the_limit_is_read(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "guard", '
        yield b'"rego": "package fibric.guard"}'

    response = client.post("/v1/policies", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 5, "rego": "package x"}, "name"),
        ({"name": "guard", "rego": ["package x"]}, "rego"),
        ({"name": "guard"}, "rego"),
        ({"name": "guard", "rego": "package x", "test_rego": "not a list"}, "test_rego"),
        ({"name": "guard", "rego": "package x", "colour": "red"}, "colour"),
        ({"name": "Not A Slug", "rego": "package x"}, "name"),
        ({"name": "guard", "rego": "package x", "query": "nope"}, "query"),
        ({"name": "guard", "rego": "package x", "labels": {"fibric.io/x": "y"}}, "labels"),
    ],
)
def test_a_bad_field_is_400_naming_it(client: TestClient, body: dict[str, Any], field: str) -> None:
    error = error_of(client.post("/v1/policies", json=body), 400, "invalid_request")
    assert error["message"].startswith(field)
    assert field in fields_of(error)


@pytest.mark.parametrize("field", ["tenant_id", "reseller_id"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/policies", {"name": "guard", "rego": "package x"}),
        ("/v1/webhooks", {"url": "https://a.example/h", "events": ["plan.proposed"]}),
        ("/v1/operators", {"name": "op", "capabilities": ["a.b"], "policy_id": "pol_1"}),
        ("/v1/apply", {"documents": [policy_doc()]}),
    ],
)
def test_a_body_naming_the_tenant_is_400(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path, json={**body, field: "t_someone_else"})
    error = error_of(response, 400, "invalid_request")
    assert fields_of(error) == [field]
    assert "API key" in error["fields"][0]["message"]


def test_a_document_naming_the_tenant_is_400(client: TestClient) -> None:
    document = {**policy_doc(), "tenant_id": "t_x"}
    error = error_of(client.post("/v1/apply", json={"documents": [document]}), 400, "invalid_request")
    assert fields_of(error) == ["documents[0].tenant_id"]


def test_request_ids_are_unique_and_on_every_response(client: TestClient) -> None:
    responses = [
        client.get("/v1/operators"),
        client.get("/v1/operators/op_missing"),
        client.get("/nowhere"),
        client.get("/v1/openapi.json"),
        client.post("/v1/policies", content=b"{"),
    ]
    ids = [r.headers["Request-Id"] for r in responses]
    assert all(i.startswith("req_") for i in ids)
    assert len(set(ids)) == len(ids)
    for response in responses[1:2] + responses[2:3] + responses[4:]:
        assert response.json()["error"]["request_id"] == response.headers["Request-Id"]


def test_an_unhandled_exception_is_500_without_the_traceback(app: Any) -> None:
    def boom() -> None:
        raise RuntimeError("secret detail at /srv/fibric/internal.py")

    app.add_api_route("/v1/boom", boom)
    response = TestClient(app, raise_server_exceptions=False).get("/v1/boom")
    error = error_of(response, 500, "internal_error")
    assert "secret detail" not in response.text
    assert "Traceback" not in response.text
    assert error["request_id"] in error["message"]


def test_a_temporary_failure_is_500_with_retry_after(app: Any) -> None:
    def flaky() -> None:
        raise errors.TemporaryError("state store unavailable: postgres://user@db", delay=2.5)

    app.add_api_route("/v1/flaky", flaky)
    response = TestClient(app).get("/v1/flaky")
    error_of(response, 500, "internal_error")
    assert response.headers["Retry-After"] == "3"
    assert "postgres://" not in response.text


def test_a_policy_block_is_422_policy_blocked(app: Any) -> None:
    def blocked() -> None:
        raise errors.PolicyBlocked("orders.hold refused by rule no-weekend-holds")

    app.add_api_route("/v1/blocked", blocked)
    error = error_of(TestClient(app).get("/v1/blocked"), 422, "policy_blocked")
    assert "no-weekend-holds" in error["message"]


def test_openapi_and_docs_are_served_under_v1(client: TestClient) -> None:
    schema = client.get("/v1/openapi.json").json()
    for path in ("/v1/operators", "/v1/operators/{operator_id}", "/v1/connectors",
                 "/v1/connectors/{connector_id}", "/v1/webhooks", "/v1/policies",
                 "/v1/policies/{policy_id}", "/v1/specs", "/v1/apply"):
        assert path in schema["paths"], path
    assert "post" in schema["paths"]["/v1/operators"]
    docs = client.get("/v1/docs")
    assert docs.status_code == 200
    assert "/v1/openapi.json" in docs.text
