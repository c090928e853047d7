"""Checks rego-cpp does not make at compile time but OPA does, or that Fibric needs.

rego-cpp compiles a call to a function that does not exist and only fails when
the call is evaluated; a typo like `startwith(...)` would then BLOCK every
action that reaches it. OPA rejects such a module when it is pushed. We reject
it at validate/apply time on both engines, with its line.

The OPA engine mounts every policy version under its own prefix so tenants
never share a package in one OPA (see opa.py); a module that names its own
package through `data.<package>` would read an empty document there, so it is
rejected too, and the query must lie inside the module's package.

A policy is a tenant's code running on the server, so it may read its input
and nothing of the host: the built-ins that read the host's environment,
network or DNS are refused by name however they are spelled (a call, a
bracket, `with ... as`, inside a template string), and so is an import of
anything but `data`, `input`, `future` or `rego`, which rego-cpp would
otherwise let alias a built-in (`import opa.runtime`). The engine's worker
processes also run with an empty environment (zygote.py), in case one slips
through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fibric.policies import rego

_PACKAGE = re.compile(r"\A\s*package[ \t]+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)[ \t]*(?:\n|\Z)")
_CALL = re.compile(r"(?<![\w.\]\)])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\(")
_DEFINED = re.compile(r"^([A-Za-z_]\w*)\(", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w.]+)(?:[ \t]+as[ \t]+(\w+))?", re.MULTILINE)
_INPUT_REF = re.compile(r"(?<![\w.])input((?:\.[A-Za-z_]\w*)*)(?![\w])")
_DEFAULT = re.compile(r"^[ \t]*default[ \t]+([A-Za-z_][\w.]*)", re.MULTILINE)
_KEYWORDS = frozenset(
    {"if", "not", "some", "every", "in", "contains", "else", "with", "as", "default", "import",
     "package", "null", "true", "false"}
)
# Built-ins rego-cpp evaluates but does not list through is_builtin().
_SPECIAL = frozenset({"print"})
# Built-ins that read the host rather than the input, by the root of their name: `opa.runtime()`
# returns the server's environment variables (rego-cpp 1.5.2 implements it), `http.send` and
# `net.lookup_ip_addr` reach its network and DNS (OPA implements them). A bracket after the root
# (`opa["runtime"]`) names a member the lint cannot read, so it is refused as well.
_HOST_STATE = re.compile(r"(?<![\w.])(opa|http|net)\s*(\[|\.\s*[A-Za-z_]\w*)")
_HOST_READS = {
    "opa.runtime": "returns the server's environment variables and configuration",
    "http.send": "sends requests from the server's network",
    "net.lookup_ip_addr": "resolves names with the server's DNS",
}
_ANY_IMPORT = re.compile(r"(?<![\w.])import\s+([A-Za-z_]\w*)")
_IMPORT_ROOTS = frozenset({"data", "input", "future", "rego"})


@dataclass(frozen=True)
class Finding:
    message: str
    line: int | None = None
    column: int | None = None


def package_of(source: str) -> str | None:
    """The module's package as a dotted name, or None if it is missing or not a dotted name."""
    match = _PACKAGE.match(code_only(source))
    return match.group(1) if match else None


def check_module(source: str, package: str) -> list[Finding]:
    """Unknown functions and references to the module's own package through `data.`."""
    code = code_only(source)
    findings: list[Finding] = []
    defined = set(_DEFINED.findall(code))
    aliases = {"data", "input"}
    for path, alias in import_aliases(code):
        aliases.add(alias or path.rsplit(".", 1)[-1])
    unknown: dict[str, int] = {}
    for match in _CALL.finditer(code):
        name = match.group(1)
        if name in _KEYWORDS or name in defined or name in _SPECIAL or name.split(".")[0] in aliases:
            continue
        if name in _HOST_READS:  # refused with its own reason by host_reads
            continue
        unknown.setdefault(name, match.start())
    interpreter = rego.new_interpreter()
    for name, offset in unknown.items():
        if not interpreter.is_builtin(name):
            line, column = _position(code, offset)
            findings.append(Finding(
                f"unknown function '{name}' (not defined in this module and not a built-in "
                "rego-cpp supports)", line, column))
    own = re.compile(r"(?<![\w.])data\." + re.escape(package) + r"(?![\w])")
    for match in own.finditer(code):
        line, column = _position(code, match.start())
        findings.append(Finding(
            f"refers to its own package through 'data.{package}'; name the rule directly",
            line, column))
    return findings + host_reads(code)


def host_reads(code: str) -> list[Finding]:
    """References to built-ins that read the host, and imports that could alias one (on `code_only` text)."""
    findings: list[Finding] = []
    for match in _ANY_IMPORT.finditer(code):
        if match.group(1) not in _IMPORT_ROOTS:
            line, column = _position(code, match.start())
            findings.append(Finding(
                f"imports '{match.group(1)}'; a policy may import only data, input, future.keywords "
                "or rego.v1", line, column))
    for match in _HOST_STATE.finditer(code):
        name = re.sub(r"\s+", "", match.group(0))
        if name.endswith("["):
            name, what = f"{match.group(1)}[...]", "names a built-in by a string, which the lint cannot check"
        elif name in _HOST_READS:
            what = _HOST_READS[name]
        else:
            continue  # net.cidr_contains and the like: the unknown-function check has its say
        line, column = _position(code, match.start())
        findings.append(Finding(
            f"'{name}' {what}; a policy may read only its input (docs/security.md)", line, column))
    return findings


def input_paths(source: str) -> tuple[tuple[str, ...], ...] | None:
    """The static `input.a.b` paths the module reads, or None if it may read all of `input`.

    Every reference to the input document spells the `input` root; a path ends
    where the reference stops being `.name` (an index, a call argument, the end
    of the term), and everything below that point counts as read. A bare
    `input` (passed to a function, iterated, replaced by `with`) reads it all.
    """
    paths: set[tuple[str, ...]] = set()
    for path, _ in input_refs(source):
        if not path:
            return None
        paths.add(path)
    return tuple(sorted(paths))


def input_refs(source: str) -> list[tuple[tuple[str, ...], int]]:
    """Each static `input.a.b` reference as (("a", "b"), offset); a bare `input` is ((), offset)."""
    return [(tuple(match.group(1).split(".")[1:]), match.start())
            for match in _INPUT_REF.finditer(code_only(source))]


def import_aliases(code: str) -> list[tuple[str, str]]:
    """(path, alias or "") of each import in `code_only` text."""
    return _IMPORT.findall(code)


def locate(sources: Mapping[str, str], message: str) -> tuple[str | None, int | None, int | None]:
    """Best-effort (module, line, column) for compiler messages that carry no location."""
    if "Multiple default rules" in message:
        for name, source in sources.items():
            seen: set[str] = set()
            for match in _DEFAULT.finditer(code_only(source)):
                if match.group(1) in seen:
                    line, column = _position(source, match.start())
                    return name, line, column
                seen.add(match.group(1))
    return None, None, None


def code_only(source: str) -> str:
    """`source` with comments and string contents blanked, offsets and newlines kept.

    The `{expression}` parts of a template string (`$"…{x}…"`) are code, and
    rego-cpp evaluates them, so they are kept (their own strings blanked).
    """
    out = list(source)
    _blank_code(source, out, 0, nested=False)
    return "".join(out)


def _blank_code(source: str, out: list[str], i: int, *, nested: bool) -> int:
    """Blank comments and strings from `i`; `nested` stops after the `}` closing a template expression."""
    depth, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "#":
            while i < n and source[i] != "\n":
                out[i] = " "
                i += 1
        elif ch == "$" and source[i + 1:i + 2] in ('"', "`"):
            i = _blank_string(source, out, i + 1, template=True)
        elif ch in ('"', "`"):
            i = _blank_string(source, out, i, template=False)
        else:
            if nested and ch == "{":
                depth += 1
            elif nested and ch == "}":
                if depth == 0:
                    return i + 1
                depth -= 1
            i += 1
    return i


def _blank_string(source: str, out: list[str], i: int, *, template: bool) -> int:
    """Blank the string whose quote is at `i`; returns the offset past its closing quote."""
    quote, n = source[i], len(source)
    i += 1
    while i < n and source[i] != quote and (quote == "`" or source[i] != "\n"):
        if template and source[i] == "{":
            i = _blank_code(source, out, i + 1, nested=True)
            continue
        if quote == '"' and source[i] == "\\":
            out[i] = " "
            i += 1
            if i >= n:
                break
        if source[i] != "\n":
            out[i] = " "
        i += 1
    return i + 1


def _position(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1
