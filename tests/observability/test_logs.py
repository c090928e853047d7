"""FIBRIC_LOG_FORMAT=json: one JSON object per line, with the call's fields; never a key or a secret."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from observability_support import TestClient, json_lines

from fibric import logs, settings, store
from fibric.api import create_app


def test_a_record_is_one_json_line_with_its_extra_fields(json_logs: io.StringIO) -> None:
    logging.getLogger("fibric.test").info("plan %s\nnext line", "pl_1", extra={"plan_id": "pl_1", "n": 3})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("fibric.test").exception("it failed")

    first, second = json_lines(json_logs.getvalue())
    assert first["message"] == "plan pl_1\nnext line" and first["logger"] == "fibric.test"
    assert (first["level"], first["plan_id"], first["n"]) == ("INFO", "pl_1", 3)
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


def test_anything_shaped_like_a_key_or_a_secret_is_blanked(json_logs: io.StringIO) -> None:
    key = store.KEY_PREFIX + "ab12" * 12
    logging.getLogger("fibric.test").warning("bad key %s", key, extra={"header": f"Bearer {key}",
                                                                        "secret": "whsec_c2VjcmV0"})
    text = json_logs.getvalue()
    assert key not in text and "whsec_c2VjcmV0" not in text
    [line] = json_lines(text)
    assert line["message"] == "bad key sk_live_[redacted]" and line["secret"] == "whsec_[redacted]"


def test_the_text_format_stays_the_default() -> None:
    assert logs.LogSettings.from_env({}).format == "text"
    record = logging.LogRecord("fibric.x", logging.INFO, "", 0, "key %s", ("sk_live_0123abcd",), None)
    assert logs.formatter(logs.LogSettings()).format(record) == "INFO:     fibric.x: key sk_live_[redacted]"
    with pytest.raises(ValueError, match="FIBRIC_LOG_FORMAT must be text or json"):
        logs.LogSettings.from_env({"FIBRIC_LOG_FORMAT": "xml"})


def test_every_request_has_an_access_line_without_the_key_or_the_body(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, json_logs: io.StringIO
) -> None:
    config = settings.Settings(store=settings.StoreSettings(data_dir=tmp_path / "ledger"))
    _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    body = {"type": "order.updated", "entity_key": "customer:jane@example.com", "idempotency_key": "k-1",
            "data": {"card": "4111 1111 1111 1111"}}
    with TestClient(create_app(config, state), headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.post("/v1/events", json=body).status_code == 202
        assert c.get("/v1/operators", headers={"Authorization": "Bearer sk_live_nope"}).status_code == 401

    lines = [line for line in json_lines(json_logs.getvalue()) if line["logger"] == "fibric.access"]
    assert [(line["method"], line["route"], line["status"]) for line in lines] == [
        ("POST", "/v1/events", 202), ("GET", "/v1/operators", 401)]
    assert lines[0]["tenant_id"] == tenant.id and lines[1]["tenant_id"] is None
    assert all(line["request_id"].startswith("req_") and line["duration_ms"] >= 0 for line in lines)
    text = json_logs.getvalue()
    assert key not in text and "jane@example.com" not in text and "4111 1111" not in text
