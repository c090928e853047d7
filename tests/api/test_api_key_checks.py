"""The owed revocation check of a remembered key, shared by the requests that arrived before it began."""

from __future__ import annotations

from typing import Any

import pytest

from fibric import errors, settings, store
from fibric.api import admission, ratelimit


async def no_app(scope: Any, receive: Any, send: Any) -> None:  # never called here
    raise AssertionError("not reached")


def arrival(gate: admission.Admission, secret: str, principal: store.Principal) -> Any:
    """The check a request with this key owes, as admission leaves it when the request arrives."""
    return gate._verification(f"Bearer {secret}", admission._digest(secret), principal)


@pytest.fixture
def gate(state: store.StateStore) -> admission.Admission:
    return admission.Admission(no_app, state, ratelimit.RateLimiter(settings.RateLimitSettings()))


@pytest.fixture
def admitted(
    gate: admission.Admission, state: store.StateStore, tenant: store.Tenant
) -> tuple[store.ApiKey, str, store.Principal]:
    """A key admission has looked up once and now remembers: (key, secret, principal)."""
    key, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    principal, failure, _ = gate._admit(f"Bearer {secret}", ratelimit.READS, "127.0.0.1")
    assert principal is not None and failure is None
    return key, secret, principal


def test_a_request_arriving_after_a_revocation_is_refused(
    gate: admission.Admission, state: store.StateStore, admitted: tuple[store.ApiKey, str, store.Principal]
) -> None:
    key, secret, principal = admitted

    state.revoke_api_key(key.id)
    after = arrival(gate, secret, principal)

    with pytest.raises(errors.Unauthenticated, match="revoked"):
        after()
    assert gate.keys.get(admission._digest(secret)) is None  # forgotten: the next request looks it up


def test_a_check_that_began_after_a_request_arrived_serves_that_request(
    gate: admission.Admission, state: store.StateStore, admitted: tuple[store.ApiKey, str, store.Principal]
) -> None:
    key, secret, principal = admitted
    waiting = arrival(gate, secret, principal)  # arrived, not yet run
    arrival(gate, secret, principal)()  # a later arrival's check: the key is valid

    state.revoke_api_key(key.id)  # after both arrived

    waiting()  # it arrived before the revocation; the later check vouches for it
    with pytest.raises(errors.Unauthenticated):
        arrival(gate, secret, principal)()  # arrived after: its own check sees the revocation
    with pytest.raises(errors.Unauthenticated):
        waiting()  # the key is forgotten now; any further check reads the store
