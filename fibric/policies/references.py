"""Names a policy uses that nothing defines: what `fibric validate` adds to compiling.

rego-cpp compiles a query naming a rule the module does not define (a typo of
`decision`), a read of `input.actoin`, and `not tool_chnaged` (a variable
nothing binds, which OPA's compiler calls unsafe): each then decides BLOCK on
every action, by fail-closed, instead of failing the check. These checks
read the module's text (comments and strings blanked by lint.code_only) and
report only what cannot be right, each with the closest known name, so a
clean policy never gets a false alarm.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from fibric import errors, specs
from fibric.policies import bundler, compiler, inputs, lint
from fibric.policies.decision import Verdict
from fibric.specs import suggest

_RULE_HEAD = re.compile(r"(?:default[ \t]+)?([A-Za-z_]\w*)")
_NAME = re.compile(r"(?<![\w.$])([A-Za-z_]\w*)(?![\w(])")
_COMPARED = re.compile(r"(?:==|!=|<=|>=|<|>)\s*$")
_COMPARES = re.compile(r"^\s*(?:==|!=|<=|>=|<|>)")
_KEYWORDS = frozenset({"if", "not", "some", "every", "in", "contains", "else", "with", "as", "default",
                       "import", "package", "null", "true", "false", "input", "data", "_"})


def check_spec(
    item: specs.Loaded, policy: compiler.CompiledPolicy, *, shadow: bool = False
) -> list[errors.SpecProblem]:
    """The query, input, name and output checks of one compiled Policy document (its shadow
    candidate with `shadow`), located in the spec and in the Rego."""
    doc = item.document
    if not isinstance(doc, specs.Policy):
        raise TypeError(f"expected a Policy, got {type(doc).__name__}")
    source: specs.models.RegoSource | None = doc.spec.shadow if shadow else doc.spec
    if source is None:
        return []
    base = ("spec", "shadow") if shadow else ("spec",)
    field = (*base, "rego_file") if source.rego_file else (*base, "rego")
    problems: list[errors.SpecProblem] = []
    unknown_rule = check_query(source.query, policy.package, policy.source)
    if unknown_rule is not None:
        problems.append(item.source.problem(unknown_rule, (*base, "query") if source.query else field))
    findings = check_input(policy.source) + check_names(policy.source)
    findings += check_output(policy.query, policy.package, policy.source)
    for finding in findings:
        message = bundler.located(policy.name, finding.line, finding.column, finding.message)
        problems.append(item.source.problem(message, field))
    return problems


def rules_defined(source: str) -> dict[str, int]:
    """The rules (and functions) the module defines, each with the line of its first head.

    A rule head is a statement at the top level: outside every bracket, not
    `package` or `import`. `a.b := 1` defines `a`; `f(x) := ...` defines `f`.
    """
    code = lint.code_only(source)
    rules: dict[str, int] = {}
    depth, line, start_of_statement = 0, 1, True
    for offset, ch in enumerate(code):
        if ch == "\n":
            line += 1
            start_of_statement = depth == 0
            continue
        if depth == 0 and start_of_statement and not ch.isspace():
            start_of_statement = False
            head = _RULE_HEAD.match(code, offset)
            if head and head.group(1) not in ("package", "import"):
                rules.setdefault(head.group(1), line)
        if ch in "{[(":
            depth += 1
        elif ch in "}])" and depth > 0:
            depth -= 1
    return rules


def check_query(query: str | None, package: str, source: str) -> str | None:
    """Why `query` (None: the default `decision`) names no rule of the module, or None if it does."""
    prefix = f"data.{package}"
    chosen = query or f"{prefix}.decision"
    if chosen == prefix or not chosen.startswith(prefix + "."):
        return None  # the whole package, or outside it (the compiler says so)
    rule = re.split(r"[.\[]", chosen[len(prefix) + 1:], maxsplit=1)[0]
    rules = rules_defined(source)
    if not rule or rule in rules:
        return None
    what = f"query '{chosen}'" if query else f"the default query '{chosen}'"
    return f"{what} names rule '{rule}', which the Rego does not define{suggest.closest(rule, rules)}"


def input_shape() -> Mapping[str, Any]:
    """The keys of the input document, from build_input itself with every optional part given.

    An empty object in the sample (args, labels, annotations, event) holds
    whatever its action or event carries, so any key below it is allowed.
    """
    now = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return inputs.build_input(
        tenant_id="t", operator={}, capability="c", entity_key="e", idempotency_key="k", event={},
        plan_id="p", tool={}, counts=inputs.Counts(), now=now, plan_age_seconds=0,
        entity_changed_since_plan=False, tool_changed=False)


def check_output(query: str, package: str, source: str) -> list[lint.Finding]:
    """Values of the queried rule that cannot be a decision (docs/policies.md#the-output).

    Only what a rule head states literally: `decision := "ALLOW"` (not an
    object), and an object literal whose `decision` is a string other than
    ALLOW, ALERT or BLOCK, or that lacks `decision` or `rule`. Each would
    decide BLOCK by fail-closed on every action it matches. A value built
    any other way (a variable, object.union) is left to the tests.
    """
    prefix = f"data.{package}."
    if not query.startswith(prefix):
        return []
    rule = re.split(r"[.\[]", query[len(prefix):], maxsplit=1)[0]
    if query[len(prefix):] != rule:
        return []  # a part of the rule's value: its shape is the policy's own business
    code = lint.code_only(source)
    head = re.compile(rf"^[ \t]*(?:default[ \t]+)?{re.escape(rule)}[ \t]*(?:if[ \t]*)?:?=[ \t]*", re.M)
    findings: list[lint.Finding] = []
    for match in head.finditer(code):
        start = match.end()
        line, column = _position(source, start)
        if code.startswith("{", start):
            findings += [lint.Finding(m, line, column) for m in _decision_object(source, code, start)]
        elif re.match(r'"|`|-?\d|\[|(?:true|false|null)\b', code[start:]):
            findings.append(lint.Finding(
                f"'{rule}' is {_literal_kind(code[start])}, not an object with decision and rule: "
                f"every action it decides is BLOCK (fail-closed:not-an-object)", line, column))
    return findings


def _decision_object(source: str, code: str, start: int) -> list[str]:
    """What is wrong with the object literal opening at `start`, when its keys are all literal."""
    keys: dict[str, str | None] = {}  # key -> its value when that is a string literal
    depth, i = 0, start
    while i < len(code):
        ch = code[i]
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and ch == ":" and code[:i].rstrip().endswith('"'):
            key_end = len(code[:i].rstrip()) - 1
            key_start = code.rfind('"', 0, key_end)
            value = re.match(r'\s*"([^"\n]*)"', code[i + 1:])
            keys[source[key_start + 1:key_end]] = (
                source[i + 1 + value.start(1):i + 1 + value.end(1)] if value else None)
        elif depth == 1 and ch == ":":
            return []  # a key that is not a string literal: the object is built, not stated
        i += 1
    problems = []
    decision = keys.get("decision")
    if "decision" not in keys:
        problems.append("the decision object has no 'decision' key: every action it decides is BLOCK "
                        "(fail-closed:unknown-decision)")
    elif decision is not None and decision not in {v.value for v in Verdict}:
        problems.append(f"decision '{decision}' is not one of ALLOW, ALERT, BLOCK (exactly these strings): "
                        f"every action it decides is BLOCK (fail-closed:unknown-decision)")
    if "rule" not in keys:
        problems.append("the decision object has no 'rule' key: every action it decides is BLOCK "
                        "(fail-closed:malformed)")
    return problems


def _literal_kind(first: str) -> str:
    return {'"': "a string", "`": "a string", "[": "an array"}.get(
        first, "a number" if first == "-" or first.isdigit() else "a boolean or null")


def check_input(source: str) -> list[lint.Finding]:
    """Reads of `input.<field>` that the input document never has (docs/policies.md)."""
    shape = input_shape()
    findings: list[lint.Finding] = []
    for path, offset in lint.input_refs(source):
        node: Any = shape
        for depth, part in enumerate(path):
            if not isinstance(node, Mapping) or not node:
                break  # a value, or an open object (args, labels, event): anything may be below
            if part not in node:
                where = "input." + ".".join(path[:depth + 1])
                line, column = _position(source, offset)
                findings.append(lint.Finding(
                    f"'{where}' is not in the input document (docs/policies.md){suggest.closest(part, node)}",
                    line, column))
                break
            node = node[part]
    return findings


def check_names(source: str) -> list[lint.Finding]:
    """Names no rule, import or variable defines where they cannot bind a value (OPA: unsafe var).

    Only names that occur once in the whole module are candidates, and only
    after `not`, beside a comparison, or as a statement of their own: there a
    name must already have a value, and once is too few times to get one.
    """
    code = lint.code_only(source)
    rules = rules_defined(source)
    aliases = {alias or path.rsplit(".", 1)[-1] for path, alias in lint.import_aliases(code)}
    counts: dict[str, int] = {}
    for match in _NAME.finditer(code):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    known = set(rules) | aliases | _KEYWORDS
    findings: list[lint.Finding] = []
    for match in _NAME.finditer(code):
        name = match.group(1)
        if counts[name] != 1 or name in known or not _cannot_bind(code, match.start(), match.end()):
            continue
        line, column = _position(source, match.start())
        hint = suggest.closest(name, rules)
        findings.append(lint.Finding(
            f"'{name}' is not defined: no rule, import or variable of this name{hint}", line, column))
    return findings


def _cannot_bind(code: str, start: int, end: int) -> bool:
    line_start = code.rfind("\n", 0, start) + 1
    line_end = code.find("\n", end)
    before = code[line_start:start]
    after = code[end:line_end if line_end != -1 else len(code)]
    if before.strip() == "" and after.strip() == "" and before != "":
        return True  # an indented statement of its own: `tool_chnaged`
    if re.search(r"(?<![\w.])not\s+$", before) and after.strip() in ("", "}"):
        return True
    return bool(_COMPARED.search(before) or _COMPARES.match(after))


def _position(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1
