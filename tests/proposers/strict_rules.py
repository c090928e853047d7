"""A checker of OpenAI's published rules for strict structured outputs (Azure OpenAI follows them).

From "Structured Outputs: supported schemas": the root is an object and not
anyOf; every object sets `additionalProperties: false` and lists every one of
its properties in `required`; only these keywords are used (the type-specific
ones - formats, patterns, bounds - are not accepted by every model, so none is
allowed here); `$ref` is local; at most 10 levels of nesting, 5000 object
properties and 1000 enum values. The loopback provider refuses a strict
request that breaks one, with the 400 body OpenAI sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOWED = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf",
                     "description", "$ref", "$defs"})
TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


def problems(schema: Any) -> list[str]:
    """Every rule `schema` breaks, each naming where; [] when a strict provider accepts it."""
    found: list[str] = []
    if not isinstance(schema, Mapping) or schema.get("type") != "object" or "anyOf" in schema:
        found.append("root: must be an object schema, not anyOf")
    counts = {"properties": 0, "enum": 0}
    _check(schema, "root", 1, found, counts, schema)
    if counts["properties"] > 5000:
        found.append(f"root: {counts['properties']} object properties, more than 5000")
    if counts["enum"] > 1000:
        found.append(f"root: {counts['enum']} enum values, more than 1000")
    return found


def _check(node: Any, where: str, depth: int, found: list[str], counts: dict[str, int],
           root: Any) -> None:
    if not isinstance(node, Mapping):
        found.append(f"{where}: is not a schema object")
        return
    for keyword in set(node) - ALLOWED:
        found.append(f"{where}: keyword '{keyword}' is not supported")
    if "$ref" in node:
        ref = node["$ref"]
        if not (isinstance(ref, str) and ref.startswith("#/")):
            found.append(f"{where}: $ref {ref!r} is not local")
        return
    for name, sub in (node.get("$defs") or {}).items():
        _check(sub, f"{where}.$defs.{name}", depth, found, counts, root)
    if "anyOf" in node:
        for n, branch in enumerate(node["anyOf"]):
            _check(branch, f"{where}.anyOf[{n}]", depth, found, counts, root)
        return
    kind = node.get("type")
    types = kind if isinstance(kind, list) else [kind]
    if kind is None and "enum" not in node:
        found.append(f"{where}: has no type")
    if any(t not in TYPES for t in types if t is not None):
        found.append(f"{where}: type {kind!r} is not supported")
    if "enum" in node:
        counts["enum"] += len(node["enum"])
    if "object" in types:
        if depth > 10:
            found.append(f"{where}: nested more than 10 levels")
        properties = node.get("properties")
        if not isinstance(properties, Mapping):
            found.append(f"{where}: an object must list its properties")
            properties = {}
        if node.get("additionalProperties") is not False:
            found.append(f"{where}: additionalProperties must be false")
        if sorted(node.get("required") or []) != sorted(properties):
            found.append(f"{where}: every property must be required")
        counts["properties"] += len(properties)
        for name, sub in properties.items():
            _check(sub, f"{where}.{name}", depth + 1, found, counts, root)
    if "array" in types:
        if not isinstance(node.get("items"), Mapping):
            found.append(f"{where}: an array needs an items schema")
        else:
            _check(node["items"], f"{where}[]", depth + 1, found, counts, root)


def refusal(schema: Any) -> dict[str, Any]:
    """The body OpenAI answers a strict request whose schema breaks a rule with (status 400)."""
    return {"error": {
        "message": f"Invalid schema for response_format 'execution_plan': {'; '.join(problems(schema))}",
        "type": "invalid_request_error", "param": "response_format", "code": None}}
