"""First start: give an empty store a tenant and one key, so `fibric serve` is usable at once.

The secret is returned to the caller to print exactly once; the store keeps
only its hash. Two replicas starting together against one empty store are
safe: tenant creation is serialized, and the one that loses gets None.
"""

from __future__ import annotations

from fibric import errors, store

DEFAULT_TENANT = "default"


def bootstrap(state: store.StateStore, reseller_id: str) -> tuple[store.Tenant, str] | None:
    """Create tenant "default" and an all-scopes API key if the store has no tenants; else None."""
    if state.list_tenants():
        return None
    try:
        tenant = state.create_tenant(DEFAULT_TENANT, reseller_id)
    except errors.Conflict:  # another process bootstrapped first
        return None
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return tenant, secret
