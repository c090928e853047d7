"""API keys: shown once, hashed at rest, scoped, revocable while a server runs."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from store_support import Raw

from fibric import errors, store

READ = frozenset({"operators:read"})
WRITE = frozenset({"operators:read", "operators:write", "plans:approve"})


@pytest.fixture
def admin(store_location: str, state: store.StateStore) -> Iterator[store.StateStore]:
    """A second store on the same location, as `fibric admin` next to a running server (`state`)."""
    opened = store.open_store(store_location)
    try:
        yield opened
    finally:
        opened.close()


def test_a_new_key_is_shown_once_and_stored_only_as_its_sha256(
    state: store.StateStore, tenant: store.Tenant, raw: Raw, everything_stored: Callable[[], str]
) -> None:
    key, secret = state.create_api_key(tenant.id, WRITE)

    assert secret.startswith(store.KEY_PREFIX)
    assert len(secret) >= len(store.KEY_PREFIX) + 32
    assert key.id.startswith("key_")
    assert (key.tenant_id, key.reseller_id, key.scopes) == (tenant.id, tenant.reseller_id, WRITE)
    # Nothing the store hands out afterwards carries the secret.
    [listed] = state.list_api_keys(tenant.id)
    for record in (key, listed):
        assert not any(secret in str(value) for value in dataclasses.astuple(record))
        assert secret not in repr(record)
    assert raw("SELECT secret_hash FROM api_keys") == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    stored = everything_stored()
    assert secret not in stored
    assert secret[len(store.KEY_PREFIX):] not in stored


def test_every_key_is_different(state: store.StateStore, tenant: store.Tenant) -> None:
    made = [state.create_api_key(tenant.id, READ) for _ in range(5)]
    assert len({secret for _, secret in made}) == 5
    assert len({key.id for key, _ in made}) == 5


def test_a_key_authenticates_as_its_tenant_with_its_scopes(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant
) -> None:
    key, secret = state.create_api_key(tenant.id, WRITE)
    state.create_api_key(other_tenant.id, READ)

    principal = state.authenticate(secret)

    assert principal == store.Principal(
        reseller_id=tenant.reseller_id, tenant_id=tenant.id, key_id=key.id, scopes=WRITE
    )


def test_unknown_or_malformed_keys_are_unauthenticated(state: store.StateStore, tenant: store.Tenant) -> None:
    _, secret = state.create_api_key(tenant.id, READ)
    presented = [
        "",
        "sk_live_",
        "sk_test_" + "0" * 48,
        "Bearer " + secret,
        "sk_live_" + "0" * 48,  # well-formed, never issued
        secret[:-1],
        secret + "0",
        secret.upper(),
        secret + "\x00",
        "sk_live_\u2603",
        "sk_live_\ud800",  # a lone surrogate, as os.environ yields for undecodable bytes
    ]
    for attempt in presented:
        with pytest.raises(errors.Unauthenticated):
            state.authenticate(attempt)


def test_a_revoked_key_is_unauthenticated_and_others_keep_working(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    doomed, doomed_secret = state.create_api_key(tenant.id, READ)
    _, kept_secret = state.create_api_key(tenant.id, READ)

    state.revoke_api_key(doomed.id)

    with pytest.raises(errors.Unauthenticated, match="revoked"):
        state.authenticate(doomed_secret)
    assert state.authenticate(kept_secret).tenant_id == tenant.id
    revoked = {k.id: k.revoked_at for k in state.list_api_keys(tenant.id)}
    assert revoked[doomed.id] is not None
    assert sum(v is None for v in revoked.values()) == 1


def test_revoking_an_unknown_key_is_not_found(state: store.StateStore, tenant: store.Tenant) -> None:
    for key_id in ("key_0000000000000000", "nothing", "key_\x00"):
        with pytest.raises(errors.NotFound):
            state.revoke_api_key(key_id)


@pytest.mark.parametrize("scopes", [{"operators:read", "root"}, {"operators:*"}, set()])
def test_unknown_or_missing_scopes_are_invalid_naming_scopes(
    state: store.StateStore, tenant: store.Tenant, raw: Raw, scopes: set[str]
) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        state.create_api_key(tenant.id, frozenset(scopes))
    assert [p.path for p in caught.value.problems] == ["scopes"]
    for scope in scopes - set(store.SCOPES):
        assert scope in str(caught.value)
    assert raw("SELECT COUNT(*) FROM api_keys") == [(0,)]


def test_every_documented_scope_can_be_granted(state: store.StateStore, tenant: store.Tenant) -> None:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    assert state.authenticate(secret).scopes == frozenset(store.SCOPES)


def test_a_key_for_an_unknown_tenant_is_not_found(state: store.StateStore, raw: Raw) -> None:
    with pytest.raises(errors.NotFound):
        state.create_api_key("t_0000000000000000", READ)
    assert raw("SELECT COUNT(*) FROM api_keys") == [(0,)]


def test_admin_changes_reach_a_running_server_that_holds_a_read_open(
    state: store.StateStore, admin: store.StateStore
) -> None:
    server = state
    # The server is in the middle of a read when the admin acts.
    with server.backend.transaction(write=False) as cur:
        cur.execute("SELECT COUNT(*) FROM api_keys")
        tenant = admin.create_tenant("acme", "rs_fibric")
        key, secret = admin.create_api_key(tenant.id, READ)
        other, other_secret = admin.create_api_key(tenant.id, READ)
        admin.revoke_api_key(other.id)

    assert server.authenticate(secret).key_id == key.id
    with pytest.raises(errors.Unauthenticated):
        server.authenticate(other_secret)
    assert server.get_tenant("acme") == tenant


def test_admin_operations_wait_for_a_server_write_instead_of_failing(
    state: store.StateStore, admin: store.StateStore, tenant: store.Tenant
) -> None:
    server = state
    _, old_secret = admin.create_api_key(tenant.id, READ)
    writing = threading.Event()

    def long_apply() -> None:
        with server.tenant_transaction(tenant.id) as tx:
            tx.insert("Policy", "guard", {"rego": "package guard"}, {})
            writing.set()
            threading.Event().wait(0.3)

    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(long_apply)
        assert writing.wait(10)
        key, secret = admin.create_api_key(tenant.id, READ)
        admin.revoke_api_key(server.authenticate(old_secret).key_id)
        busy.result(timeout=30)

    assert server.authenticate(secret).key_id == key.id
    with pytest.raises(errors.Unauthenticated):
        server.authenticate(old_secret)
    assert [o.name for o in admin.list_objects(tenant.id, "Policy")] == ["guard"]
