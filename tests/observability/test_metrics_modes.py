"""FIBRIC_METRICS: on (no tenant in any label), tenants (the installation's opt-in), off (no /metrics).

And each app counts into a registry of its own: two apps in one process never
see each other's requests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from observability_support import TestClient, label_values, total

from fibric import metrics, settings, store
from fibric.api import create_app

EVENT = {"type": "order.updated", "entity_key": "order:1", "idempotency_key": "k-1", "data": {}}


def client(state: store.StateStore, tenant: store.Tenant, tmp_path: Path,
           counts: metrics.Metrics | None = None) -> TestClient:
    config = settings.Settings(store=settings.StoreSettings(data_dir=tmp_path / "ledger"))
    _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return TestClient(create_app(config, state, metrics=counts), headers={"Authorization": f"Bearer {key}"})


def test_by_default_no_label_names_a_tenant(state: store.StateStore, tenant: store.Tenant,
                                            tmp_path: Path) -> None:
    with client(state, tenant, tmp_path) as c:
        assert c.post("/v1/events", json=EVENT).status_code == 202
        assert c.get("/v1/no-such-route").status_code == 404
        scrape = c.get("/metrics").text

    assert total(scrape, "fibric_events_ingested_total", result="new") == 1
    assert total(scrape, "fibric_http_request_duration_seconds_count", route="unmatched", status="4xx") == 1
    assert not label_values(scrape, "tenant_id") and tenant.id not in scrape and "acme" not in scrape
    assert "/v1/no-such-route" not in scrape  # an unknown path is not a label value: it is any string


def test_per_tenant_labels_are_the_installations_opt_in(state: store.StateStore, tenant: store.Tenant,
                                                        other_tenant: store.Tenant, tmp_path: Path) -> None:
    counts = metrics.Metrics(metrics.Mode.from_env({"FIBRIC_METRICS": "tenants"}))
    with client(state, tenant, tmp_path, counts) as c, client(state, other_tenant, tmp_path, counts) as o:
        assert c.post("/v1/events", json=EVENT).status_code == 202
        assert o.post("/v1/events", json=EVENT).status_code == 202
        scrape = c.get("/metrics").text

    assert label_values(scrape, "tenant_id") >= {tenant.id, other_tenant.id}
    assert total(scrape, "fibric_events_ingested_total", tenant_id=tenant.id) == 1
    assert total(scrape, "fibric_events_ingested_total", tenant_id=other_tenant.id) == 1
    assert total(scrape, "fibric_webhook_backlog", tenant_id=tenant.id, stage="outbox") >= 0


def test_off_serves_no_metrics(state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> None:
    counts = metrics.Metrics(metrics.Mode.from_env({"FIBRIC_METRICS": "off"}))
    with client(state, tenant, tmp_path, counts) as c:
        assert c.post("/v1/events", json=EVENT).status_code == 202
        assert c.get("/metrics").status_code == 404
    assert total(counts.exposition().decode(), "fibric_http_request_duration_seconds_count") == 0


def test_each_app_counts_into_its_own_registry(state: store.StateStore, tenant: store.Tenant,
                                               tmp_path: Path) -> None:
    with client(state, tenant, tmp_path) as first, client(state, tenant, tmp_path) as second:
        for _ in range(3):
            first.get("/v1/operators")
        scrape = second.get("/metrics").text
    assert total(scrape, "fibric_http_request_duration_seconds_count", route="/v1/operators") == 0


@pytest.mark.parametrize("value", ["yes", "tenant", "1"])
def test_an_unknown_mode_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="FIBRIC_METRICS must be one of on, off, tenants"):
        metrics.Mode.from_env({"FIBRIC_METRICS": value})
    assert metrics.Mode.from_env({}) is metrics.Mode.ON
