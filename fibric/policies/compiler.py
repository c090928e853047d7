"""Compile a policy once per version, at validate/apply time, and keep the bundle.

A policy version is its exact source plus its query. Compiling it checks the
Rego (with the error's line), resolves the default query
`data.<package>.decision`, hashes the source (what receipts record as the
policy that decided) and serializes a rego-cpp bundle that every engine thread
loads instead of compiling again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from fibric import errors, specs
from fibric.policies import lint, rego


@dataclass(frozen=True)
class Module:
    """A Rego module and the name errors use for it (a file path, or a label for inline Rego)."""

    name: str
    source: str


@dataclass(frozen=True)
class CompiledPolicy:
    """One policy version, ready for any engine."""

    source: str
    sha256: str  # hex sha256 of `source` as UTF-8: the exact text that decides
    package: str
    query: str  # data.<package>[.<rule>...]
    bundle: bytes = field(repr=False)
    name: str = "policy.rego"
    policy_id: str = ""
    tests: tuple[Module, ...] = ()
    # The parts of the input document the policy can read (None: all of it); see lint.input_paths.
    input_paths: tuple[tuple[str, ...], ...] | None = None

    @property
    def key(self) -> str:
        """Identity of this version for caches: the same source and query compile the same."""
        return f"{self.sha256}:{self.query}"

    def with_id(self, policy_id: str) -> CompiledPolicy:
        """The same version labelled with the stored object's id (decisions carry it)."""
        return dataclasses.replace(self, policy_id=policy_id)


def source_sha256(source: str) -> str:
    """What `policy_sha256` means everywhere: sha256 over the UTF-8 bytes of the Rego source."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def compile(
    source: str,
    *,
    query: str | None = None,
    name: str = "policy.rego",
    policy_id: str = "",
    tests: Sequence[Module] = (),
    field_path: str = "spec.rego",
) -> CompiledPolicy:
    """Compile one policy version; SpecInvalid names the module, line and column of each problem."""
    module = Module(name, source)
    package = lint.package_of(source)
    if package is None:
        raise errors.SpecInvalid(errors.SpecProblem(
            f"{name}:1:1: the module must start with 'package <dotted.name>'", path=field_path))
    with _located_errors(field_path, [module]):
        rego.add_modules(rego.new_interpreter(), [(name, source)])
    query = query or f"data.{package}.decision"
    if query != f"data.{package}" and not query.startswith(f"data.{package}."):
        raise errors.SpecInvalid(errors.SpecProblem(
            f"query '{query}' is outside the policy's package '{package}'", path="spec.query"))
    findings = lint.check_module(source, package)
    if findings:
        raise errors.SpecInvalid([
            errors.SpecProblem(_located(name, f.line, f.column, f.message), path=field_path)
            for f in findings
        ])
    with _located_errors(field_path, [module]):
        bundle = rego.compile_bundle([(name, source)], query)
    for test in tests:  # parsed only: building them is what `fibric validate` does, in a child
        with _located_errors("spec.test_rego", [test]):
            rego.add_modules(rego.new_interpreter(), [(test.name, test.source)])
    return CompiledPolicy(
        source=source, sha256=source_sha256(source), package=package, query=query, bundle=bundle,
        name=name, policy_id=policy_id, tests=tuple(tests), input_paths=lint.input_paths(source),
    )


def compile_spec(item: specs.Loaded, *, policy_id: str = "") -> CompiledPolicy:
    """Compile a Policy document (inlining rego_file and tests); problems point at the spec too."""
    doc = item.document
    if not isinstance(doc, specs.Policy):
        raise TypeError(f"expected a Policy, got {type(doc).__name__}")
    base = Path(item.source.file).parent
    name = os.path.normpath(base / doc.spec.rego_file) if doc.spec.rego_file else f"{doc.name}.rego"
    test_names = [f"{doc.name}.test_rego[{i}]" for i in range(len(doc.spec.test_rego))]
    test_names += [os.path.normpath(base / t) for t in doc.spec.tests]
    spec = cast(specs.Policy, specs.resolve(item).document).spec  # resolve() keeps the kind
    try:
        return compile(
            spec.rego or "",
            query=spec.query,
            name=name,
            policy_id=policy_id,
            tests=[Module(n, s) for n, s in zip(test_names, spec.test_rego, strict=True)],
            field_path="spec.rego_file" if doc.spec.rego_file else "spec.rego",
        )
    except errors.SpecInvalid as e:
        raise errors.SpecInvalid([
            dataclasses.replace(item.source.problem(p.message, _path_parts(p.path)), path=p.path)
            for p in e.problems
        ]) from e


@contextlib.contextmanager
def _located_errors(field_path: str, modules: Sequence[Module]) -> Iterator[None]:
    """Turn rego-cpp's CompileFailed into SpecInvalid whose messages carry file:line:col."""
    try:
        yield
    except rego.CompileFailed as e:
        problems: list[errors.SpecProblem] = []
        seen: set[str] = set()
        for issue in e.issues:
            if issue.message in seen:  # rego-cpp repeats "unclosed" at the enclosing package
                continue
            seen.add(issue.message)
            where, line, column = issue.module, issue.line, issue.column
            if line is None:  # rego-cpp's semantic passes report no location; find it ourselves
                where, line, column = lint.locate({m.name: m.source for m in modules}, issue.message)
            problems.append(errors.SpecProblem(_located(where, line, column, issue.message), path=field_path))
        raise errors.SpecInvalid(problems) from e


def _located(module: str | None, line: int | None, column: int | None, message: str) -> str:
    """`file:line:col: message`, like a compiler, so the line survives any rendering of the problem."""
    if module is None:
        return message
    where = module
    if line is not None:
        where += f":{line}"
        if column is not None:
            where += f":{column}"
    return f"{where}: {message}"


def _path_parts(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, index = piece.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return tuple(parts)
