"""Opaque, prefixed identifiers (op_, cn_, pol_, whk_, ...), as the reference names them."""

from __future__ import annotations

import secrets

PREFIXES = {
    "Operator": "op",
    "Connector": "cn",
    "Policy": "pol",
    "Webhook": "whk",
    "event": "ev",
    "plan": "pl",
    "run": "run",
    "receipt": "rc",
    "webhook_event": "evt",  # a delivered webhook event; "ev_" is an ingested one
    "delivery": "dlv",
    "tenant": "t",
    "key": "key",
    "request": "req",
    "model_call": "mc",
}


def new_id(kind: str) -> str:
    """A fresh random id with the prefix of `kind`."""
    return f"{PREFIXES[kind]}_{secrets.token_hex(8)}"


def object_id(kind: str, name: str) -> str:
    """The id of a desired-state object.

    Connectors are addressed by name (the reference's `cn_magento` for the
    connector named `magento`), so swapping a vendor keeps the id stable. Other
    kinds get random ids.
    """
    if kind == "Connector":
        return f"cn_{name}"
    return new_id(kind)
