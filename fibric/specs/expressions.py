"""CEL expressions and `{{ cel }}` templates in operator rules: parse, compile, check.

This lives beside the models (not in `proposers/`) because an invalid
expression is a spec error: `fibric validate` and apply must reject it with the
spec's file:line, and specs is the layer that knows files and lines. The rules
proposer evaluates what this module compiled, through the same cache, so an
expression is compiled once per distinct source, not once per event.

CEL here is the `cel` module (package common-expression-language), the same
language Kubernetes admission policies use. It parses at compile time but does
not type-check, so we add one static check of our own: every free variable
must be one the rules proposer provides (VARIABLES), which catches `evnt.data`
at validate time instead of at 3 a.m.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cel
from cel import stdlib

VARIABLES = ("event", "events", "sensed", "operator", "now")
# The extended library (strings, math, lists...) the rules proposer registers; namespaced
# functions like `math.greatest` read as a variable `math` to `Program.variables()`.
LIBRARY_FUNCTIONS = frozenset(name.rsplit(".", 1)[-1] for name in stdlib.STDLIB_FUNCTIONS)
LIBRARY_NAMESPACES = frozenset(name.split(".")[0] for name in stdlib.STDLIB_FUNCTIONS if "." in name)

# Names bound by CEL's comprehension macros, e.g. the `x` in `items.exists(x, x > 1)`:
# `Program.variables()` lists them beside the free variables.
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)

Path = tuple[str | int, ...]


class ExpressionError(ValueError):
    """A CEL expression or template that cannot compile; the message says where and why."""


@dataclass(frozen=True)
class Template:
    """A string with `{{ cel }}` parts. `parts` alternates literal text (str) and compiled programs."""

    source: str
    parts: tuple[str | cel.Program, ...]

    @property
    def is_literal(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def single(self) -> cel.Program | None:
        """The program when the whole string is exactly one `{{ }}` (its value keeps its type)."""
        if len(self.parts) == 1 and not isinstance(self.parts[0], str):
            return self.parts[0]
        return None


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> cel.Program:
    """One compiled program per distinct source; ExpressionError with line:col on bad CEL."""
    if not source.strip():
        raise ExpressionError("empty CEL expression")
    try:
        program = cel.compile(source)
    except ValueError as e:
        raise ExpressionError(_syntax_message(str(e))) from e
    except Exception as e:  # the extension raises a few other types on odd input
        raise ExpressionError(f"invalid CEL: {e}") from e
    bound = set(_BOUND.findall(source))
    unknown = sorted(set(program.variables()) - bound - set(VARIABLES) - LIBRARY_NAMESPACES)
    if unknown:
        raise ExpressionError(
            f"unknown variable {', '.join(repr(u) for u in unknown)} in CEL expression {source!r}; "
            f"available: {', '.join(VARIABLES)}"
        )
    return program


@functools.lru_cache(maxsize=4096)
def parse_template(text: str) -> Template:
    """Split `text` into literal parts and compiled `{{ }}` expressions."""
    parts: list[str | cel.Program] = []
    position = 0
    for match in _TEMPLATE.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()])
        expression = match.group(1)
        if not expression.strip():
            raise ExpressionError(f"empty '{{{{ }}}}' in template {text!r}")
        try:
            parts.append(compile_expression(expression.strip()))
        except ExpressionError as e:
            raise ExpressionError(f"in template {text!r}: {e}") from e
        position = match.end()
    rest = text[position:]
    if "{{" in rest:
        raise ExpressionError(f"unclosed '{{{{' in template {text!r}")
    if rest:
        parts.append(rest)
    return Template(source=text, parts=tuple(parts))


def programs(rules: Sequence[Any]) -> list[cel.Program]:
    """Every compiled program in `rules`: conditions and the expressions inside templates."""
    out: list[cel.Program] = []
    for rule in rules:
        out.append(compile_expression(rule.when))
        for action in rule.actions:
            texts = [t for t in (action.entity_key, action.idempotency_key) if t is not None]
            texts.extend(value for _, value in walk_strings(action.args))
            for text in texts:
                out.extend(p for p in parse_template(text).parts if not isinstance(p, str))
    return out


def check_args(args: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """(path inside args, message) for every string in `args` whose templates do not compile."""
    problems: list[tuple[Path, str]] = []
    for path, value in walk_strings(args):
        try:
            parse_template(value)
        except ExpressionError as e:
            problems.append((path, str(e)))
    return problems


def check_rules(rules: Sequence[Any]) -> list[tuple[Path, str]]:
    """(path relative to the operator spec, message) for every bad `when` or template in `rules`."""
    problems: list[tuple[Path, str]] = []
    for i, rule in enumerate(rules):
        try:
            compile_expression(rule.when)
        except ExpressionError as e:
            problems.append((("rules", i, "when"), str(e)))
        for j, action in enumerate(rule.actions):
            here: Path = ("rules", i, "actions", j)
            for key in ("entity_key", "idempotency_key"):
                value = getattr(action, key)
                if value is None:
                    continue
                try:
                    parse_template(value)
                except ExpressionError as e:
                    problems.append(((*here, key), str(e)))
            problems.extend(((*here, "args", *path), message) for path, message in check_args(action.args))
    return problems


def walk_strings(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string inside nested dicts and lists, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk_strings(item, (*path, key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from walk_strings(item, (*path, n))


def _syntax_message(raw: str) -> str:
    """The extension's multi-line parse error, reduced to one line: where in the expression, and what."""
    match = re.search(r"<input>:(\d+):(\d+): ([^\n]*)", raw)
    if match is None:
        return f"invalid CEL: {raw.splitlines()[0] if raw else raw}"
    line, column, what = match.groups()
    return f"invalid CEL at expression {line}:{column}: {what.strip()}"
