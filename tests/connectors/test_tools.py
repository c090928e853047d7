"""Tool values: pins, side effects from annotations, results kept intact."""

from __future__ import annotations

from mcp import types as mcp_types

from fibric import connectors


def tool(**fields: object) -> connectors.ToolInfo:
    data: dict[str, object] = {"name": "orders.hold", "inputSchema": {"type": "object"}, **fields}
    return connectors.ToolInfo.from_mcp(mcp_types.Tool.model_validate(data))


def test_a_pin_ignores_key_order_but_not_content() -> None:
    schema_a = {"type": "object", "properties": {"reason": {"type": "string"}}}
    schema_b = {"properties": {"reason": {"type": "string"}}, "type": "object"}

    assert connectors.pin_hash("t", "d", schema_a) == connectors.pin_hash("t", "d", schema_b)
    assert connectors.pin_hash("t", "d", schema_a) != connectors.pin_hash("t", "d2", schema_a)
    assert connectors.pin_hash("t", "d", schema_a) != connectors.pin_hash("t2", "d", schema_a)
    assert connectors.pin_hash("t", "d", schema_a) != connectors.pin_hash("t", "d", {"type": "object"})


def test_only_read_only_hint_true_means_no_side_effect() -> None:
    assert tool().side_effect is True  # no annotations: MCP's default is "may change the world"
    assert tool(annotations={"readOnlyHint": False}).side_effect is True
    assert tool(annotations={"destructiveHint": False}).side_effect is True
    assert tool(annotations={"readOnlyHint": True}).side_effect is False


def test_idempotent_means_read_only_or_idempotent_hint() -> None:
    assert tool(annotations={"readOnlyHint": True}).idempotent is True
    assert tool(annotations={"idempotentHint": True}).idempotent is True
    assert tool(annotations={"idempotentHint": False}).idempotent is False
    assert tool().idempotent is False


def test_annotations_keep_their_wire_names() -> None:
    info = tool(annotations={"readOnlyHint": False, "idempotentHint": True})

    assert info.annotations == {"readOnlyHint": False, "idempotentHint": True}
    assert info.summary() == {"name": "orders.hold", "side_effect": True}


def test_a_result_comes_back_in_the_wire_shape() -> None:
    result = mcp_types.CallToolResult.model_validate(
        {
            "content": [
                {"type": "text", "text": "held"},
                {"type": "image", "data": "aGk=", "mimeType": "image/png"},
            ],
            "structuredContent": {"order_id": "SO-1", "changed": True},
            "isError": False,
        }
    )

    mapped = connectors.ToolResult.from_mcp("magento", "orders.hold", result)

    assert mapped.to_mcp() == {
        "content": [
            {"type": "text", "text": "held"},
            {"type": "image", "data": "aGk=", "mimeType": "image/png"},
        ],
        "structuredContent": {"order_id": "SO-1", "changed": True},
        "isError": False,
    }
