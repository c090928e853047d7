"""Plain records the store hands out. Every row carries reseller_id and tenant_id."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Scopes exactly as the reference names them, plus additive ones for routes it
# does not define (connectors:write, policies:read, policies:write, events:read).
SCOPES = (
    "operators:read",
    "operators:write",
    "connectors:read",
    "connectors:write",
    "policies:read",
    "policies:write",
    "events:read",
    "events:write",
    "plans:read",
    "plans:approve",
    "receipts:read",
    "webhooks:read",
    "webhooks:write",
    "secrets:read",
    "secrets:write",
)


@dataclass(frozen=True)
class Tenant:
    id: str
    reseller_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    reseller_id: str
    tenant_id: str
    scopes: frozenset[str]
    hint: str  # the first characters of the secret, to tell keys apart in a list
    created_at: datetime
    revoked_at: datetime | None = None
    name: str | None = None  # whose key it is, recorded on what it approves


@dataclass(frozen=True)
class Principal:
    """Who is calling: derived from the API key alone, never from a request body."""

    reseller_id: str
    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    key_name: str | None = None

    @property
    def identity(self) -> dict[str, str | None]:
        """Who decided, as plans and receipts record it: the key, apart from any free-text note."""
        return {"key_id": self.key_id, "key_name": self.key_name}


@dataclass(frozen=True)
class StoredObject:
    """One desired-state object: the spec as applied, plus what the controller observed."""

    id: str
    reseller_id: str
    tenant_id: str
    kind: str
    name: str
    spec: dict[str, Any]
    labels: dict[str, str]
    generation: int
    status: dict[str, Any]
    apply_set: str | None
    created_at: datetime
    updated_at: datetime
    seq: int
    secret: str | None = field(default=None, repr=False)
    origin: str = "tenant"  # "installation" or "tenant" (fibric.trust.Origin): who wrote the spec

    @property
    def observed_generation(self) -> int | None:
        value = self.status.get("observed_generation")
        return int(value) if value is not None else None
