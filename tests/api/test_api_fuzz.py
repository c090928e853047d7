"""Property-based fuzz of the whole OpenAPI surface (schemathesis): no 5xx, and every answer conforms.

Schemathesis reads /v1/openapi.json from the app and, for every operation,
generates requests that fit the schema and requests that break it, sent with
a valid all-scopes key over ASGI to the real app on each store backend.
Every response must not be a 5xx and must conform to the document: a
documented status code, content type, headers and body schema. Bounded by
MAX_EXAMPLES per operation and mode, so a backend runs in well under a minute.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from api_support import (
    MAX_BODY,
    Executor,
    TestClient,
    action,
    apply,
    connector_doc,
    operator_doc,
    policy_doc,
)
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fibric import settings, store
from fibric.api import create_app
from fibric.store import plan_store, receipt_store

MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture
def fuzzed(state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger) -> tuple[Any, str]:
    """An app with budgets the fuzz cannot exhaust, some objects to find, and an all-scopes key."""
    config = settings.Settings(
        server=settings.ServerSettings(max_body_bytes=MAX_BODY),
        rate_limits=settings.RateLimitSettings(reads_per_minute=10**6, writes_per_minute=10**6,
                                               events_per_minute=10**6),
    )
    app = create_app(config, state, receipts=ledger, executor=Executor(state, ledger))
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    client = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    apply(client, [policy_doc("guard"), connector_doc("magento"), operator_doc("ship-risk", "guard")])
    operator = client.get("/v1/operators/ship-risk").json()["id"]
    plan_store.propose(state, tenant.id, operator_id=operator, actions=[action("orders.hold", "k1")],
                       policy_id=None)
    ledger.append(receipt_store.NewReceipt(
        reseller_id=tenant.reseller_id, tenant_id=tenant.id, operator_id=operator, operator="ship-risk",
        capability="orders.hold", entity_key="order:1", idempotency_key="k1", decision="ALLOW",
        outcome="applied"))
    return app, secret


def test_no_operation_answers_5xx_or_off_schema(fuzzed: tuple[Any, str]) -> None:
    app, secret = fuzzed
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                                 suppress_health_check=list(HealthCheck), print_blob=True)
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers={"Authorization": f"Bearer {secret}"}, checks=CHECKS)

            try:
                check()
            except Exception as e:
                e.add_note(f"while fuzzing {operation.label} ({mode})")
                raise
