"""The compile steps that hand a tenant's Rego to rego-cpp; they run only in a compile worker.

rego-cpp 1.5.2 aborts the whole process on some policies while compiling them
(see rego.py), so compiler.compile() never runs these steps in its caller's
process: it sends a Request to the compile worker (compileworker.py), which
runs `build` in a freshly forked process. Everything here that may reach
rego-cpp does: parsing the module and its tests, the lint's built-in lookups,
building the bundle. What is left in compiler.py is plain Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fibric import errors
from fibric.policies import lint, rego


@dataclass(frozen=True)
class Request:
    """One policy version to compile: the arguments of compiler.compile() that reach rego-cpp."""

    source: str
    query: str | None
    name: str
    tests: tuple[tuple[str, str], ...]  # (name, source): parsed only
    field_path: str


@dataclass(frozen=True)
class Built:
    """What compiling produced: the package, the resolved query and the bundle."""

    package: str
    query: str
    bundle: bytes


def build(request: Request) -> Built:
    """Check and compile one policy version; SpecInvalid names the module, line and column of each problem."""
    name, source, field_path = request.name, request.source, request.field_path
    package = lint.package_of(source)
    if package is None:
        raise errors.SpecInvalid(errors.SpecProblem(
            f"{name}:1:1: the module must start with 'package <dotted.name>'", path=field_path))
    with located_errors(field_path, {name: source}):
        rego.add_modules(rego.new_interpreter(), [(name, source)])
    query = request.query or f"data.{package}.decision"
    if query != f"data.{package}" and not query.startswith(f"data.{package}."):
        raise errors.SpecInvalid(errors.SpecProblem(
            f"query '{query}' is outside the policy's package '{package}'", path="spec.query"))
    findings = lint.check_module(source, package)
    if findings:
        raise errors.SpecInvalid([
            errors.SpecProblem(located(name, f.line, f.column, f.message), path=field_path)
            for f in findings
        ])
    with located_errors(field_path, {name: source}):
        bundle = rego.compile_bundle([(name, source)], query)
    for test_name, test_source in request.tests:  # parsed only: `fibric validate` runs them, in a child
        with located_errors("spec.test_rego", {test_name: test_source}):
            rego.add_modules(rego.new_interpreter(), [(test_name, test_source)])
    return Built(package=package, query=query, bundle=bundle)


@contextlib.contextmanager
def located_errors(field_path: str, sources: dict[str, str]) -> Iterator[None]:
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
                where, line, column = lint.locate(sources, issue.message)
            problems.append(errors.SpecProblem(located(where, line, column, issue.message), path=field_path))
        raise errors.SpecInvalid(problems) from e


def located(module: str | None, line: int | None, column: int | None, message: str) -> str:
    """`file:line:col: message`, like a compiler, so the line survives any rendering of the problem."""
    if module is None:
        return message
    where = module
    if line is not None:
        where += f":{line}"
        if column is not None:
            where += f":{column}"
    return f"{where}: {message}"


def problems_of(request: Request, detail: Sequence[str]) -> list[errors.SpecProblem]:
    """`detail` as problems on the policy's Rego field, each naming the policy's module."""
    return [errors.SpecProblem(located(request.name, None, None, d), path=request.field_path) for d in detail]
