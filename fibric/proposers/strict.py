"""Tool input schemas in the subset that strict structured outputs accept, and answers read back.

A provider in strict mode (OpenAI's `response_format: json_schema, strict: true`,
and Azure OpenAI's, which follows it) refuses a schema outside a subset of JSON
Schema with a 400, so a tool's MCP input schema cannot be sent as it is. In the
subset every object sets `additionalProperties: false` and lists every property
in `required` (an optional property is made nullable instead), the root is an
object, `$ref`s are local and nesting is bounded; keywords such as formats,
patterns and min/max bounds are not accepted everywhere, so they move into the
property's description, and the answer is validated against the tool's own
schema afterwards, which enforces them.

A schema that has no strict form (a free-form map, an "any" value, a recursive
`$ref`, `allOf`/`not`/conditionals) raises NotStrict naming where: the caller
then sends that operator's schema with `strict: false`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 10  # objects nested deeper are refused by the provider
MAX_PROPERTIES = 5000  # object properties in the whole schema
MAX_ENUM_VALUES = 1000  # enum values in the whole schema

# Kept as they are: the structure strict mode understands.
_STRUCTURE = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf",
                        "description"})
# Accepted by the tool's schema, not by every provider in strict mode: said in the description, and
# enforced when the answer is validated against the tool's own schema.
_MOVED = ("format", "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
          "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties",
          "maxProperties", "default")
# Annotations that change nothing the model must produce.
_DROPPED = frozenset({"title", "$schema", "$id", "$comment", "examples", "deprecated", "readOnly",
                      "writeOnly", "$defs", "definitions", "nullable", "contentMediaType",
                      "contentEncoding"})
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


class NotStrict(ValueError):
    """The schema has no form strict mode accepts; the message names where and why."""


def normalize(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The strict form of a tool's input schema (an object schema). NotStrict when there is none."""
    counts = {"properties": 0, "enum": 0}
    strict = _node(schema, schema, "args", depth=1, refs=(), counts=counts)
    if strict.get("type") != "object":
        raise NotStrict("args: a tool's input schema must describe an object")
    return strict


def _node(schema: Any, root: Mapping[str, Any], where: str, *, depth: int, refs: tuple[str, ...],
          counts: dict[str, int]) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        raise NotStrict(f"{where}: a schema must be an object, not {schema!r}")
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref in refs:
            raise NotStrict(f"{where}: $ref {ref} is recursive")
        return _node(_resolve(root, ref, where), root, where, depth=depth, refs=(*refs, ref), counts=counts)
    for keyword in ("allOf", "not", "if", "then", "else", "patternProperties", "dependentRequired",
                    "dependentSchemas", "propertyNames", "unevaluatedProperties", "prefixItems", "contains"):
        if keyword in schema:
            raise NotStrict(f"{where}: '{keyword}' has no strict form")
    unknown = set(schema) - _STRUCTURE - set(_MOVED) - _DROPPED - {"oneOf", "const"}
    if unknown:
        raise NotStrict(f"{where}: unsupported keyword(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    notes = [f"{k}: {schema[k]}" for k in _MOVED if k in schema]
    description = str(schema["description"]) if "description" in schema else ""
    if notes:
        description = f"{description} ({'; '.join(notes)})".strip()
    if description:
        out["description"] = description
    if "const" in schema:
        out["enum"] = [schema["const"]]
    elif "enum" in schema:
        out["enum"] = list(schema["enum"])
    if "enum" in out:
        counts["enum"] += len(out["enum"])
        if counts["enum"] > MAX_ENUM_VALUES:
            raise NotStrict(f"{where}: more than {MAX_ENUM_VALUES} enum values in the schema")
    branches = schema.get("anyOf", schema.get("oneOf"))  # oneOf's exclusivity is checked on the answer
    if branches is not None:
        if not isinstance(branches, list) or not branches:
            raise NotStrict(f"{where}: anyOf/oneOf must be a non-empty list")
        out["anyOf"] = [_node(b, root, f"{where}|{n}", depth=depth, refs=refs, counts=counts)
                        for n, b in enumerate(branches)]
        return out
    types = _types(schema, where)
    if types is None:
        if "enum" in out:
            return out
        raise NotStrict(f"{where}: the schema accepts any value, which has no strict form")
    out["type"] = types[0] if len(types) == 1 else types
    if "object" in types:
        if depth > MAX_DEPTH:
            raise NotStrict(f"{where}: objects nested more than {MAX_DEPTH} deep")
        out.update(_object(schema, root, where, depth=depth, refs=refs, counts=counts))
    if "array" in types:
        items = schema.get("items")
        if not isinstance(items, Mapping):
            raise NotStrict(f"{where}: an array needs one 'items' schema")
        out["items"] = _node(items, root, f"{where}[]", depth=depth + 1, refs=refs, counts=counts)
    return out


def _object(schema: Mapping[str, Any], root: Mapping[str, Any], where: str, *, depth: int,
            refs: tuple[str, ...], counts: dict[str, int]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise NotStrict(f"{where}: 'properties' must be an object")
    extra = schema.get("additionalProperties", True)
    if isinstance(extra, Mapping) or (extra is not False and not properties):
        raise NotStrict(f"{where}: an object with free-form keys has no strict form")
    counts["properties"] += len(properties)
    if counts["properties"] > MAX_PROPERTIES:
        raise NotStrict(f"{where}: more than {MAX_PROPERTIES} properties in the schema")
    required = set(schema.get("required") or ())
    strict: dict[str, Any] = {}
    for name, sub in properties.items():
        node = _node(sub, root, f"{where}.{name}", depth=depth + 1, refs=refs, counts=counts)
        strict[name] = node if name in required else _nullable(node)
    return {"properties": strict, "required": list(properties), "additionalProperties": False}


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """An optional property as strict mode has it: required, and null when the model leaves it out."""
    if "anyOf" in node:
        if not any(b.get("type") == "null" for b in node["anyOf"]):
            node["anyOf"] = [*node["anyOf"], {"type": "null"}]
        return node
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if "null" not in types:
            node["type"] = [*types, "null"]
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    return node


def _types(schema: Mapping[str, Any], where: str) -> list[str] | None:
    kind = schema.get("type")
    if kind is None:
        if "properties" in schema:
            return ["object"]
        if "items" in schema:
            return ["array"]
        return None
    types = kind if isinstance(kind, list) else [kind]
    if not types or any(t not in _TYPES for t in types):
        raise NotStrict(f"{where}: type {kind!r} is not a JSON Schema type")
    return list(types)


def _resolve(root: Mapping[str, Any], ref: Any, where: str) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise NotStrict(f"{where}: only local $refs ('#/...') have a strict form, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise NotStrict(f"{where}: $ref {ref} points nowhere")
        node = node[part]
    return node


def restore(value: Any, schema: Mapping[str, Any]) -> Any:
    """A strict answer's args as the tool's own schema has them: the nulls the model sent for
    optional properties (which strict mode made nullable) are taken out again."""
    return _restore(copy.deepcopy(value), schema, schema, ())


def _restore(value: Any, schema: Any, root: Mapping[str, Any], refs: tuple[str, ...]) -> Any:
    if not isinstance(schema, Mapping):
        return value
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in refs:
            return value
        try:
            return _restore(value, _resolve(root, ref, ""), root, (*refs, ref))
        except NotStrict:
            return value
    properties = schema.get("properties")
    if isinstance(value, dict) and isinstance(properties, Mapping):
        required = set(schema.get("required") or ())
        kept = {}
        for name, item in value.items():
            sub = properties.get(name)
            if item is None and name not in required and not _allows_null(sub, root):
                continue
            kept[name] = _restore(item, sub, root, refs)
        return kept
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        return [_restore(item, items, root, refs) for item in value]
    branches = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(value, dict) and isinstance(branches, list):
        for branch in branches:  # the branch whose properties name every key the answer gave
            named = branch.get("properties") if isinstance(branch, Mapping) else None
            if isinstance(named, Mapping) and set(value) <= set(named):
                return _restore(value, branch, root, refs)
    return value


def _allows_null(schema: Any, root: Mapping[str, Any]) -> bool:
    if not isinstance(schema, Mapping):
        return True
    if isinstance(schema.get("$ref"), str):
        try:
            schema = _resolve(root, schema["$ref"], "")
        except NotStrict:
            return True
    if "const" in schema:
        return schema["const"] is None
    kind = schema.get("type")
    if kind is None and "enum" not in schema and "anyOf" not in schema and "oneOf" not in schema:
        return "properties" not in schema and "items" not in schema  # {}: any value, null too
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if None in (schema.get("enum") or ()):
        return True
    return any(_allows_null(b, root) for b in schema.get("anyOf", schema.get("oneOf")) or ())
