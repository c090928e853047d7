"""Small builders shared by the proposer tests."""

from __future__ import annotations

from typing import Any

from fibric import proposers
from fibric.specs import models


def spec(**fields: Any) -> models.OperatorSpec:
    data: dict[str, Any] = {"capabilities": ["orders.hold", "orders.notify"], "policy": "guard"}
    data.update(fields)
    return models.OperatorSpec.model_validate(data)


def event(n: int = 1, entity: str | None = "order:SO-1", **data: Any) -> dict[str, Any]:
    return {
        "id": f"ev_{n}",
        "type": "order.updated",
        "entity_key": entity,
        "idempotency_key": f"src-{n}",
        "occurred_at": "2026-06-14T09:02:11Z",
        "data": data,
    }


HOLD_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "reason": {"type": "string", "minLength": 1}},
    "required": ["order_id", "reason"],
    "additionalProperties": False,
}
NOTIFY_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "to": {"type": "string", "enum": ["owner", "ops"]}},
    "required": ["order_id", "to"],
}
TOOLS = [
    proposers.Tool("orders.hold", "Put an order on hold.", HOLD_SCHEMA, side_effect=True),
    proposers.Tool("orders.notify", "Notify someone about an order.", NOTIFY_SCHEMA, side_effect=True),
]


def situation(
    operator_spec: models.OperatorSpec,
    events: list[dict[str, Any]] | None = None,
    sensed: dict[str, Any] | None = None,
    tools: list[proposers.Tool] | None = None,
) -> proposers.Situation:
    return proposers.Situation(
        tenant_id="t_acme",
        operator_id="op_1",
        operator_name="ship-risk",
        spec=operator_spec,
        events=[] if events is None else events,
        sensed={} if sensed is None else sensed,
        tools=TOOLS if tools is None else tools,
    )
