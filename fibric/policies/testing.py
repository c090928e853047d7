"""Rego unit tests, the way `opa test` runs them.

Every rule whose name starts with `test_` in any of the modules is a test; it
passes when it evaluates to `true`. Rules starting with `todo_test_` are
reported as skipped. All modules are compiled together, so test modules
`import data.<policy package>` and use `with input as {...}`.

Two rego-cpp 1.5.2 defects shape how they run:

- `with input as <document>` crashes the process (SIGSEGV) as soon as the rule
  under test uses any operator or built-in, while `with data.<path> as ...`
  works. Tests therefore run on a copy of every module in which the `input`
  root is re-rooted at `data.fibric_test_input`: the same rules, the same
  `with` overrides, a path rego-cpp handles.
- Other crashes may remain, so by default the tests run in a child process; a
  crash is reported as a failed run instead of killing `fibric validate`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fibric import errors
from fibric.policies import compiler, failures, lint, rego

TEST_INPUT = "data.fibric_test_input"
_TEST_RULE = re.compile(r"^((?:todo_)?test_\w*)(?![\w(])", re.MULTILINE)
_INPUT = re.compile(r"(?<![\w.])input(?![\w])")
_CHILD_TIMEOUT = 300.0


@dataclass(frozen=True)
class TestResult:
    """One test rule's outcome."""

    __test__ = False  # not a pytest class

    name: str  # data.<package>.<rule>
    module: str
    passed: bool
    skipped: bool = False
    message: str = ""  # why it failed: "undefined", the value, or the evaluation error
    duration_us: int = 0


@dataclass(frozen=True)
class TestReport:
    """All tests of one run; `passed` is what `fibric policy test` turns into its exit code."""

    __test__ = False

    results: tuple[TestResult, ...] = ()

    @property
    def passed(self) -> bool:
        return all(r.passed or r.skipped for r in self.results)

    @property
    def failures(self) -> list[TestResult]:
        return [r for r in self.results if not (r.passed or r.skipped)]

    def __add__(self, other: TestReport) -> TestReport:
        return TestReport(self.results + other.results)

    def lines(self) -> list[str]:
        """One line per test, then a summary, like `opa test -v`."""
        out = []
        for r in self.results:
            status = "SKIPPED" if r.skipped else "PASS" if r.passed else "FAIL"
            why = f": {r.message}" if r.message else ""
            out.append(f"{r.name}: {status} ({r.duration_us / 1000:.1f}ms){why}")
        total = len(self.results)
        summary = f"PASS: {sum(r.passed for r in self.results)}/{total}"
        if self.failures:
            summary += f"  FAIL: {len(self.failures)}/{total}"
        skipped = sum(r.skipped for r in self.results)
        if skipped:
            summary += f"  SKIPPED: {skipped}/{total}"
        out.append(summary if total else "no tests found")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "results": [asdict(r) for r in self.results]}


def run_tests(modules: Sequence[compiler.Module], *, isolated: bool = True) -> TestReport:
    """Run every test rule in `modules` (policies and tests together).

    Raises SpecInvalid, with file:line:col, if the modules do not compile.
    With `isolated` (the default) they run in a child Python process.
    """
    if isolated:
        return _run_in_child(modules)
    for module in modules:  # syntax errors, located in the source as written
        try:
            rego.add_modules(rego.new_interpreter(), [(module.name, module.source)])
        except rego.CompileFailed as e:
            raise _invalid(e) from e
    rerooted = [(m.name, reroot_input(m.source)) for m in modules]
    try:
        module_set = rego.ModuleSet(rerooted)
        module_set.check("data")
    except rego.CompileFailed as e:
        raise _invalid(e) from e
    results = []
    for module in modules:
        package = lint.package_of(module.source)
        if package is None:
            continue
        seen: set[str] = set()
        for rule in _TEST_RULE.findall(lint.code_only(module.source)):
            if rule not in seen:
                seen.add(rule)
                results.append(_run_one(module_set, module.name, f"data.{package}.{rule}"))
    return TestReport(tuple(results))


def run_policy_tests(policy: compiler.CompiledPolicy, *, isolated: bool = True) -> TestReport:
    """The tests that came with a compiled policy (its spec's `tests` / `test_rego`)."""
    return run_tests([compiler.Module(policy.name, policy.source), *policy.tests], isolated=isolated)


def reroot_input(source: str) -> str:
    """`source` with every reference to the `input` root moved to `data.fibric_test_input`.

    Strings and comments are left alone; lines stay where they were, so test
    failures and compile errors still point at the right line.
    """
    code = lint.code_only(source)
    pieces, last = [], 0
    for match in _INPUT.finditer(code):
        pieces.append(source[last:match.start()])
        pieces.append(TEST_INPUT)
        last = match.end()
    pieces.append(source[last:])
    return "".join(pieces)


def _run_one(module_set: rego.ModuleSet, module: str, ref: str) -> TestResult:
    if ref.rsplit(".", 1)[-1].startswith("todo_"):
        return TestResult(ref, module, passed=False, skipped=True)
    started = time.perf_counter()
    try:
        outcome = module_set.query(ref)
    except failures.PolicyFailure as e:
        passed, message = False, f"error: {e.detail}"
    else:
        passed = outcome.defined and outcome.value is True
        message = "" if passed else ("undefined" if not outcome.defined else f"value {outcome.value!r}")
    micros = int((time.perf_counter() - started) * 1_000_000)
    return TestResult(ref, module, passed=passed, message=message, duration_us=micros)


def _invalid(e: rego.CompileFailed) -> errors.SpecInvalid:
    problems = []
    for issue in e.issues:
        where = ""
        if issue.module is not None:
            where = issue.module + (f":{issue.line}:{issue.column}" if issue.line is not None else "") + ": "
        problems.append(errors.SpecProblem(where + issue.message))
    return errors.SpecInvalid(problems)


def _run_in_child(modules: Sequence[compiler.Module]) -> TestReport:
    """run_tests in `python -m fibric.policies.child`, so a rego-cpp crash cannot take us down."""
    request = json.dumps({"modules": [[m.name, m.source] for m in modules]})
    package_root = str(Path(__file__).resolve().parents[2])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fibric.policies.child"], input=request, capture_output=True,
            text=True, timeout=_CHILD_TIMEOUT, cwd=package_root,
        )
    except subprocess.TimeoutExpired:
        return _crashed(modules, f"the tests did not finish within {_CHILD_TIMEOUT:.0f} s")
    if done.returncode != 0:
        if done.returncode < 0:
            why = f"rego-cpp crashed ({signal.Signals(-done.returncode).name})"
        else:
            why = f"the test runner exited with {done.returncode}"
        detail = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
        return _crashed(modules, "; ".join([why, *detail]))
    answer = json.loads(done.stdout)
    if "problems" in answer:
        raise errors.SpecInvalid([errors.SpecProblem(**p) for p in answer["problems"]])
    return TestReport(tuple(TestResult(**r) for r in answer["results"]))


def _crashed(modules: Sequence[compiler.Module], why: str) -> TestReport:
    names = ", ".join(m.name for m in modules)
    return TestReport((TestResult(f"<run of {names}>", names, passed=False, message=why),))
