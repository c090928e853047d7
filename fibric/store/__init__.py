"""Persistent state: desired state, tenants and keys (SQLite or PostgreSQL)."""

from fibric.store.records import SCOPES, ApiKey, Principal, StoredObject, Tenant
from fibric.store.state import KEY_PREFIX, OPEN_ERRORS, ObjectTransaction, StateStore, open_store

__all__ = [
    "KEY_PREFIX",
    "OPEN_ERRORS",
    "SCOPES",
    "ApiKey",
    "ObjectTransaction",
    "Principal",
    "StateStore",
    "StoredObject",
    "Tenant",
    "open_store",
]
