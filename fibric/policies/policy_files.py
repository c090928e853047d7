"""Policies from files on disk: what `fibric policy test` and `fibric policy eval` call.

The CLI stays a thin adapter: it passes paths here and prints the report or
decision. Bad files raise SpecInvalid naming the file (and line), which the
CLI turns into exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fibric import errors, specs
from fibric.policies import compiler, decision, embedded, failclosed, testing
from fibric.policies import engine as engine_module

_YAML = (".yaml", ".yml")


def read_module(path: str | Path) -> compiler.Module:
    """A .rego file as a Module named by its path."""
    target = Path(path)
    try:
        return compiler.Module(str(target), target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise errors.SpecInvalid(errors.SpecProblem(f"cannot read '{target}': {_reason(e)}")) from e


def run_path_tests(paths: Iterable[str | Path]) -> testing.TestReport:
    """Run Rego unit tests found in `paths`, like `opa test PATH...`.

    .rego files and directories (searched recursively for *.rego) are compiled
    together and every `test_` rule runs; spec files (.yaml) contribute each
    Policy's Rego and its `tests`, run per policy as `fibric validate` does.
    """
    rego_files: list[Path] = []
    report = testing.TestReport()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            rego_files.extend(sorted(p for p in path.rglob("*.rego") if p.is_file()))
        elif path.suffix in _YAML:
            report += run_spec_tests(specs.load_paths([path]))
        elif path.exists():
            rego_files.append(path)
        else:
            raise errors.SpecInvalid(errors.SpecProblem(f"cannot read '{path}': no such file or directory"))
    if rego_files:
        report = testing.run_tests([read_module(p) for p in rego_files]) + report
    return report


def run_spec_tests(loaded: Iterable[specs.Loaded]) -> testing.TestReport:
    """Compile each Policy document and run its tests (what `fibric validate` runs)."""
    report = testing.TestReport()
    for item in loaded:
        if isinstance(item.document, specs.Policy):
            report += testing.run_policy_tests(compiler.compile_spec(item))
    return report


def eval_file(
    policy_path: str | Path,
    input_path: str | Path,
    *,
    query: str | None = None,
    engine: engine_module.Engine | None = None,
    timeout: float | None = None,
) -> decision.Decision:
    """`fibric policy eval -f POLICY.rego --input INPUT.json`: compile, read the input, decide.

    The input file is the whole input document (docs/policies.md). The engine
    defaults to a fresh embedded engine with one worker process: one decision.
    """
    module = read_module(policy_path)
    policy = compiler.compile(module.source, query=query, name=module.name)
    document = read_input(input_path)
    chosen = engine or embedded.EmbeddedEngine(workers=1)
    try:
        return failclosed.evaluate(chosen, policy, document, timeout=timeout)
    finally:
        if engine is None:
            chosen.close()


def read_input(path: str | Path) -> dict[str, Any]:
    """An input document from a JSON file; it must be an object."""
    target = Path(path)
    try:
        document = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise errors.SpecInvalid(errors.SpecProblem(f"cannot read '{target}': {_reason(e)}")) from e
    except json.JSONDecodeError as e:
        raise errors.SpecInvalid(errors.SpecProblem(
            f"not valid JSON: {e.msg}", file=str(target), line=e.lineno, column=e.colno)) from e
    if not isinstance(document, dict):
        raise errors.SpecInvalid(errors.SpecProblem(
            f"the input document must be a JSON object, not {type(document).__name__}", file=str(target)))
    return document


def _reason(e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return getattr(e, "strerror", None) or str(e)
