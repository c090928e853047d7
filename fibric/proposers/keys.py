"""Idempotency keys for proposals that do not name one.

The key is a pure function of what the action would do (operator, entity,
capability, canonical args), so proposing the same thing twice, from two runs or
two replicas, yields the same key and the executor applies it once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from fibric.proposers import base


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal data, equal text."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise base.ProposalError(f"args are not plain JSON: {e}") from e


def derive_idempotency_key(
    operator_id: str, entity_key: str, capability: str, args: Mapping[str, Any]
) -> str:
    """'ik_' + 32 hex of sha256 over the canonical JSON of the four."""
    text = canonical_json([operator_id, entity_key, capability, dict(args)])
    return "ik_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def dedup(actions: list[base.ProposedAction]) -> list[base.ProposedAction]:
    """First occurrence of each idempotency key, in order."""
    seen: set[str] = set()
    out = []
    for action in actions:
        if action.idempotency_key not in seen:
            seen.add(action.idempotency_key)
            out.append(action)
    return out
