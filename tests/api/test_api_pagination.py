"""Cursor pagination: limit bounds, newest first, a full walk with no duplicates or gaps."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from api_support import TestClient, apply, error_of, fields_of, operator_doc, policy_doc


def walk(client: TestClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        body = client.get(path, params=query).json()
        pages.append(body["data"])
        assert body["has_more"] == (body["next_cursor"] is not None)
        if not body["has_more"]:
            return pages
        cursor = body["next_cursor"]
        assert cursor.startswith("cur_")


def test_default_page_is_20_and_newest_first(client: TestClient) -> None:
    apply(client, [policy_doc(f"p{n}") for n in range(25)])
    body = client.get("/v1/policies").json()
    assert [p["name"] for p in body["data"]] == [f"p{n}" for n in range(24, 4, -1)]
    assert body["has_more"] is True


def test_a_walk_over_45_objects_sees_each_once_in_order(client: TestClient) -> None:
    apply(client, [policy_doc(f"p{n}") for n in range(45)])
    pages = walk(client, "/v1/policies", limit=10)
    assert [len(p) for p in pages] == [10, 10, 10, 10, 5]
    names = [p["name"] for page in pages for p in page]
    assert names == [f"p{n}" for n in range(44, -1, -1)]


def test_an_exact_last_page_has_no_more(client: TestClient) -> None:
    apply(client, [policy_doc(f"p{n}") for n in range(20)])
    body = client.get("/v1/policies", params={"limit": 20}).json()
    assert len(body["data"]) == 20
    assert body["has_more"] is False and body["next_cursor"] is None


def test_objects_created_during_a_walk_do_not_shift_it(client: TestClient) -> None:
    apply(client, [policy_doc(f"p{n}") for n in range(30)])
    first = client.get("/v1/policies", params={"limit": 10}).json()
    apply(client, [policy_doc(f"late{n}") for n in range(5)])
    client.delete("/v1/policies/p29")  # already seen: deleting it must not skip anything
    rest = walk(client, "/v1/policies", limit=10, cursor=first["next_cursor"])
    names = [p["name"] for p in first["data"]] + [p["name"] for page in rest for p in page]
    assert names == [f"p{n}" for n in range(29, -1, -1)]


def test_a_filtered_walk_is_exact(client: TestClient) -> None:
    # 45 operators, every third paused: the filter runs over store pages, not in SQL.
    docs = [policy_doc("guard")] + [
        operator_doc(f"op{n}", lifecycle="paused" if n % 3 == 0 else "active") for n in range(45)
    ]
    apply(client, docs)
    pages = walk(client, "/v1/operators", status="paused", limit=4)
    names = [o["name"] for page in pages for o in page]
    assert names == [f"op{n}" for n in range(42, -1, -3)]
    assert all(len(page) == 4 for page in pages[:-1])
    active = [o["name"] for page in walk(client, "/v1/operators", status="active", limit=7)
              for o in page]
    assert len(active) == 30 and len(set(active)) == 30


def test_the_specs_walk_spans_kinds(client: TestClient) -> None:
    apply(client, [policy_doc("guard")] + [operator_doc(f"op{n}") for n in range(12)])
    pages = walk(client, "/v1/specs", limit=5)
    seen = [(d["kind"], d["metadata"]["name"]) for page in pages for d in page]
    assert len(seen) == 13 and len(set(seen)) == 13
    assert seen[-1] == ("Policy", "guard")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
def test_a_limit_out_of_range_is_400_naming_it(client: TestClient, limit: str) -> None:
    error = error_of(client.get("/v1/policies", params={"limit": limit}), 400, "invalid_request")
    assert fields_of(error) == ["limit"]


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_inclusive(client: TestClient, limit: str) -> None:
    apply(client, [policy_doc("a"), policy_doc("b")])
    body = client.get("/v1/policies", params={"limit": limit}).json()
    assert len(body["data"]) == min(int(limit), 2)


def _cursor(payload: bytes) -> str:
    return "cur_" + base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "cur_",
        "cur_!!!",
        _cursor(b"not json"),
        _cursor(json.dumps([1]).encode()),
        _cursor(json.dumps({"seq": "5"}).encode()),
        _cursor(json.dumps({"seq": -3}).encode()),
        _cursor(json.dumps({"seq": True}).encode()),
        _cursor(json.dumps({"id": "op_1"}).encode()),
        "cur_" + "A" * 1000,
    ],
)
def test_a_bad_cursor_is_400_naming_it(client: TestClient, cursor: str) -> None:
    for path in ("/v1/policies", "/v1/operators", "/v1/connectors", "/v1/webhooks", "/v1/specs",
                 "/v1/events", "/v1/plans", "/v1/receipts"):
        error = error_of(client.get(path, params={"cursor": cursor}), 400, "invalid_request")
        assert fields_of(error) == ["cursor"]
