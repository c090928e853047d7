"""auth.py's key checks: the owed revocation check of a remembered key, shared by the requests that
arrived before it began, and a revoked key read as 401 wherever a request meets it."""

from __future__ import annotations

import os

import pytest
from api_support import TestClient, error_of, policy_doc

from fibric import errors, settings, store
from fibric.api import auth, create_app
from fibric.store import receipt_store

REDIS_URL = os.environ.get("FIBRIC_TEST_REDIS_URL")


@pytest.fixture
def keys(state: store.StateStore) -> auth.Keys:
    return auth.Keys(state)


@pytest.fixture
def admitted(
    keys: auth.Keys, state: store.StateStore, tenant: store.Tenant
) -> tuple[store.ApiKey, str, store.Principal]:
    """A key looked up once and now remembered: (key, secret, principal)."""
    key, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    principal = keys.authenticate(f"Bearer {secret}")
    return key, secret, principal


def arrival(keys: auth.Keys, secret: str, principal: store.Principal) -> auth.Verification:
    """The check a request with this key owes, as admission leaves it when the request arrives."""
    recalled = keys.recall(f"Bearer {secret}")
    assert recalled is not None and recalled[0] == principal
    return recalled[1]


def test_a_key_not_seen_valid_is_not_recalled(keys: auth.Keys, state: store.StateStore,
                                              tenant: store.Tenant) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    assert keys.recall(f"Bearer {secret}") is None
    assert keys.recall("Basic abc") is None
    assert keys.recall(None) is None


def test_a_request_arriving_after_a_revocation_is_refused(
    keys: auth.Keys, state: store.StateStore, admitted: tuple[store.ApiKey, str, store.Principal]
) -> None:
    key, secret, principal = admitted

    state.revoke_api_key(key.id)
    after = arrival(keys, secret, principal)

    with pytest.raises(errors.Unauthenticated, match="revoked"):
        after()
    assert keys.recall(f"Bearer {secret}") is None  # forgotten: the next request looks it up


def test_a_check_that_began_after_a_request_arrived_serves_that_request(
    keys: auth.Keys, state: store.StateStore, admitted: tuple[store.ApiKey, str, store.Principal]
) -> None:
    key, secret, principal = admitted
    waiting = arrival(keys, secret, principal)  # arrived, not yet run
    arrival(keys, secret, principal)()  # a later arrival's check: the key is valid

    state.revoke_api_key(key.id)  # after both arrived

    waiting()  # it arrived before the revocation; the later check vouches for it
    with pytest.raises(errors.Unauthenticated):
        arrival(keys, secret, principal)()  # arrived after: its own check sees the revocation
    with pytest.raises(errors.Unauthenticated):
        waiting()  # the key is forgotten now; any further check reads the store


@pytest.mark.parametrize("limits", [
    pytest.param(settings.RateLimitSettings(), id="in-process counters: the key recalled, its check owed"),
    pytest.param(settings.RateLimitSettings(redis_url=REDIS_URL), id="redis: admission looks the key up",
                 marks=pytest.mark.skipif(not REDIS_URL, reason="FIBRIC_TEST_REDIS_URL is not set")),
])
def test_a_key_revoked_after_use_is_401_on_routes_idempotent_posts_and_the_approver_page(
    limits: settings.RateLimitSettings, state: store.StateStore, tenant: store.Tenant,
    ledger: receipt_store.Ledger,
) -> None:
    key, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    event = {"type": "order.updated", "entity_key": "order:1", "idempotency_key": "src-1", "data": {}}
    once = {"Idempotency-Key": "ingest-1"}
    app = create_app(settings.Settings(rate_limits=limits), state, receipts=ledger)
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        assert client.get("/v1/operators").status_code == 200
        assert client.post("/v1/events", json=event, headers=once).status_code == 202
        client.cookies.set("fibric_key", secret, path="/ui")
        assert client.get("/ui/plans").status_code == 200

        state.revoke_api_key(key.id)

        assert "revoked" in error_of(client.get("/v1/operators"), 401, "unauthenticated")["message"]
        # The stored answer of the idempotent POST is never replayed to a revoked key.
        replay = client.post("/v1/events", json=event, headers=once)
        assert "revoked" in error_of(replay, 401, "unauthenticated")["message"]
        # A request with a scope it lacks, or a bad query, still reads 401 first.
        assert error_of(client.get("/v1/operators?limit=nonsense"), 401, "unauthenticated")
        page = client.get("/ui/plans", follow_redirects=False)
        assert page.status_code == 401 and "revoked" in page.text


def test_a_revoked_key_is_401_on_a_route_that_checks_its_scope_in_the_body(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    key, secret = state.create_api_key(tenant.id, frozenset({"operators:read"}))
    app = create_app(settings.Settings(), state, receipts=ledger)
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(app, headers=headers) as client:
        assert client.get("/v1/operators").status_code == 200  # remembered
        # Without the write scope the answer is 403 while the key is valid ...
        apply = {"documents": [policy_doc()]}
        assert error_of(client.post("/v1/apply", json=apply), 403, "insufficient_scope")
        state.revoke_api_key(key.id)
        # ... and 401 once it is revoked, though the scope is still missing.
        assert error_of(client.post("/v1/apply", json=apply), 401, "unauthenticated")

