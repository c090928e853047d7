"""Every answer schema Fibric sends in strict mode is one a strict provider accepts.

Checked with tests/proposers/strict_rules.py (OpenAI's published rules) on the
examples' tools, on a published MCP server's tools (mcp-server-time, started
here), and on awkward tool schemas: optional fields, nested objects, arrays of
objects, enums, unions and $refs. A schema with no strict form falls back to
`strict: false`, saying why; the nulls strict mode makes a model send for
optional args are gone before the args are checked and the tool called.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import strict_rules
from fake_provider import Provider, Reply, completion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from proposer_support import situation, spec

from fibric import proposers
from fibric.proposers import prompt, strict
from fibric.settings import LlmSettings

ROOT = Path(__file__).resolve().parents[2]
ORDERS_SERVER = ROOT / "examples" / "mcp" / "orders_server.py"
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"

ADDRESS = {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string",
           "pattern": "^[0-9]{5}$"}}, "required": ["city"]}
AWKWARD: dict[str, dict[str, Any]] = {
    "optional fields": {"type": "object", "properties": {"id": {"type": "string"}, "note": {
        "type": "string", "maxLength": 200}, "count": {"type": "integer", "minimum": 1, "default": 1}},
        "required": ["id"]},
    "nested objects": {"type": "object", "properties": {"customer": {"type": "object", "properties": {
        "name": {"type": "string"}, "address": ADDRESS}, "required": ["name"]}}, "required": ["customer"]},
    "arrays of objects": {"type": "object", "properties": {"lines": {"type": "array", "minItems": 1,
        "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                  "required": ["sku"]}}}, "required": ["lines"]},
    "enums and consts": {"type": "object", "properties": {"to": {"enum": ["owner", "ops"]}, "kind": {
        "const": "hold"}, "level": {"type": "string", "enum": ["low", "high"]}}, "required": ["to"]},
    "unions": {"type": "object", "properties": {"target": {"anyOf": [{"type": "string"}, ADDRESS]},
        "when": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]}},
        "required": ["target"]},
    "$refs": {"type": "object", "$defs": {"Address": ADDRESS}, "properties": {
        "ship_to": {"$ref": "#/$defs/Address"}, "bill_to": {"$ref": "#/$defs/Address"}},
        "required": ["ship_to"], "title": "Addresses"},
}
NO_STRICT_FORM = {
    "a free-form map": ({"type": "object", "properties": {"labels": {
        "type": "object", "additionalProperties": {"type": "string"}}}},
                        "args.labels: an object with free-form"),
    "any value": ({"type": "object", "properties": {"value": {}}},
                  "args.value: the schema accepts any value"),
    "a recursive $ref": ({"type": "object", "$defs": {"Node": {"type": "object", "properties": {
        "next": {"$ref": "#/$defs/Node"}}}}, "properties": {"head": {"$ref": "#/$defs/Node"}}},
        "is recursive"),
    "allOf": ({"type": "object", "properties": {"x": {"allOf": [{"type": "string"}]}}}, "'allOf' has no"),
}


def tools_situation(tools: list[proposers.Tool]) -> proposers.Situation:
    return situation(spec(capabilities=[t.capability for t in tools], model="openai"), tools=tools)


def sent_schema(tools: list[proposers.Tool]) -> dict[str, Any]:
    """The response_format a strict route sends for an operator with these tools."""
    route = {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-test", "tenants": "*"}
    proposer = proposers.for_model("openai", "t_acme", LlmSettings(routes={"openai": route}), environ={})
    body = proposer.request(tools_situation(tools))  # type: ignore[attr-defined]
    return dict(body["response_format"]["json_schema"])


async def published_tools(command: str, args: list[str], prefix: str) -> list[proposers.Tool]:
    """A real MCP server's tools (started here over stdio), as an operator's capabilities see them."""
    params = StdioServerParameters(command=command, args=args, env={"PATH": "/usr/bin:/bin"})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await asyncio.wait_for(session.list_tools(), 30)
    return [proposers.Tool(f"{prefix}.{t.name}", t.description, dict(t.input_schema), side_effect=True)
            for t in listed.tools]


@pytest.mark.parametrize(("command", "args", "prefix"), [
    (sys.executable, [str(ORDERS_SERVER)], "orders"),
    (str(TIME_SERVER), [], "time"),
], ids=["examples-orders-server", "mcp-server-time"])
def test_published_tools_get_a_schema_a_strict_provider_accepts(command: str, args: list[str],
                                                                prefix: str) -> None:
    tools = asyncio.run(published_tools(command, args, prefix))
    assert tools
    sent = sent_schema(tools)
    assert sent["strict"] is True
    assert strict_rules.problems(sent["schema"]) == []


@pytest.mark.parametrize("name", list(AWKWARD))
def test_awkward_tool_schemas_get_a_schema_a_strict_provider_accepts(name: str) -> None:
    tools = [proposers.Tool("orders.act", None, AWKWARD[name], side_effect=True)]
    sent = sent_schema(tools)
    assert sent["strict"] is True
    assert strict_rules.problems(sent["schema"]) == []


def test_what_strict_mode_cannot_say_moves_to_the_description_and_is_still_enforced() -> None:
    args = strict.normalize(AWKWARD["optional fields"])
    assert args["properties"]["note"] == {"type": ["string", "null"], "description": "(maxLength: 200)"}
    assert args["properties"]["count"]["description"] == "(minimum: 1; default: 1)"
    with Provider() as provider:  # the answer breaks the bound it could not be told strictly: refused
        provider.script = [Reply(body=completion('{"actions": [{"capability": "orders.act", "entity_key":'
                                                 ' "order:SO-1", "idempotency_key": null, "args": '
                                                 '{"id": "SO-1", "note": null, "count": 0}}]}'))]
        with pytest.raises(proposers.ProposalError, match=r"actions\[0\].args: not valid .*count: 0 is less"):
            propose(provider, [proposers.Tool("orders.act", None, AWKWARD["optional fields"], True)])


@pytest.mark.parametrize("name", list(NO_STRICT_FORM))
def test_a_schema_with_no_strict_form_is_sent_with_strict_false_saying_why(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema, why = NO_STRICT_FORM[name]
    with pytest.raises(strict.NotStrict, match=why):
        strict.normalize(schema)
    tools = [proposers.Tool("orders.act", None, schema, side_effect=True)]
    answer = prompt.answer_schema(tools_situation(tools))
    assert answer.strict is False and why in answer.why_not_strict[0]
    sent = sent_schema(tools)
    assert sent["strict"] is False
    assert "strict: false" in caplog.text and "orders.act" in caplog.text


def test_the_nulls_strict_mode_asks_for_are_gone_before_the_args_are_checked() -> None:
    schema = AWKWARD["$refs"]
    answer = {"ship_to": {"city": "Berlin", "zip": None}, "bill_to": None}
    restored = strict.restore(answer, schema)
    assert restored == {"ship_to": {"city": "Berlin"}}
    jsonschema.validate(restored, schema)
    # a property the tool itself allows to be null keeps its null
    nullable = {"type": "object", "properties": {"until": {"type": ["string", "null"]}}}
    assert strict.restore({"until": None}, nullable) == {"until": None}
    with Provider() as provider:
        provider.script = [Reply(body=completion(
            '{"actions": [{"capability": "orders.ship", "entity_key": "order:SO-1", "idempotency_key": null,'
            ' "args": {"ship_to": {"city": "Berlin", "zip": null}, "bill_to": null}}]}'))]
        [action] = propose(provider, [proposers.Tool("orders.ship", None, schema, side_effect=True)])
        assert action.args == {"ship_to": {"city": "Berlin"}}


def test_the_loopback_provider_refuses_a_schema_outside_the_strict_subset() -> None:
    """The check the other LLM tests run under: the loose schema Fibric used to send is refused."""
    loose = prompt.plan_schema(["orders.hold"])
    assert "root.actions[].args: additionalProperties must be false" in strict_rules.problems(loose)
    assert strict_rules.refusal(loose)["error"]["message"].startswith(
        "Invalid schema for response_format 'execution_plan'")


def propose(provider: Provider, tools: list[proposers.Tool]) -> list[Any]:
    route = {"base_url": provider.base_url, "model": "gpt-test", "tenants": "*", "max_retries": 0}
    proposer = proposers.for_model("openai", "t_acme", LlmSettings(routes={"openai": route}), environ={})
    return asyncio.run(proposer.propose(tools_situation(tools)))


def test_a_tool_whose_schema_is_itself_invalid_fails_closed_every_time() -> None:
    broken = {"type": "object", "properties": {"id": {"type": "objekt"}}}
    tools = [proposers.Tool("orders.act", None, broken, side_effect=True)]
    assert sent_schema(tools)["strict"] is False
    answer = ('{"actions": [{"capability": "orders.act", "entity_key": "order:SO-1", "idempotency_key": null,'
              ' "args": {"id": "SO-1"}}]}')
    with Provider() as provider:
        provider.script = [Reply(body=completion(answer)), Reply(body=completion(answer))]
        for _ in range(2):  # the schema's check is kept, and so is its verdict
            with pytest.raises(proposers.ProposalError,
                               match=r"the input schema of 'orders\.act' is invalid, so its args cannot be"):
                propose(provider, tools)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda t: {"type": t}, st.sampled_from(["string", "integer", "number", "boolean"])),
        st.just({"type": "string", "format": "date-time"}),
        st.just({"type": "integer", "minimum": 0, "maximum": 9}),
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True).map(
            lambda values: {"enum": values}),
        st.just({"const": "fixed"}),
    )


def _schemas() -> st.SearchStrategy[dict[str, Any]]:
    """Tool input schemas of the family MCP servers publish: nested objects with optional fields,
    arrays of objects, enums, unions."""
    names = st.sampled_from(["id", "note", "when", "qty", "tags", "to", "meta"])

    def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        objects = st.dictionaries(names, inner, min_size=1, max_size=4).flatmap(
            lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
                lambda required: {"type": "object", "properties": props, "required": required}))
        return st.one_of(objects, inner.map(lambda item: {"type": "array", "items": item}),
                         st.lists(inner, min_size=2, max_size=3).map(lambda options: {"anyOf": options}))

    tree = st.recursive(_leaf(), extend, max_leaves=8)
    return st.dictionaries(names, tree, min_size=1, max_size=4).flatmap(
        lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
            lambda required: {"type": "object", "properties": props, "required": required}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas())
def test_generated_tool_schemas_normalize_to_what_strict_providers_accept(schema: dict[str, Any]) -> None:
    strict_args = strict.normalize(schema)
    wrapped = {"type": "object", "additionalProperties": False, "required": ["args"],
               "properties": {"args": strict_args}}
    assert strict_rules.problems(wrapped) == []
    # An answer of the strict form with every optional field null reads back as the tool's own shape.
    answer = {name: None for name in strict_args["properties"]
              if name not in (schema.get("required") or [])}
    assert set(strict.restore(answer, schema)) == set()
