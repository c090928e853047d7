"""Rego policies, evaluated fail-closed by an embedded engine or an OPA server.

The calls the rest of Fibric makes:

- `compile(source, query=, name=, policy_id=, tests=)` / `compile_spec(loaded)` /
  `compile_shadow_spec(loaded)`
  at validate/apply time -> CompiledPolicy, or SpecInvalid with file:line:col;
- `open_configured(settings.policies)` (or `open_engine(kind, url=, timeout=, ...)`)
  once at start-up, `engine.load(policy)` on reconcile (pushes to OPA),
  `engine.close()` at shutdown (stops the embedded engine's worker processes);
- `build_input(...)` and `evaluate(engine, policy, input_doc)` per action ->
  Decision, never raises: every failure is BLOCK with a `fail-closed:` rule;
  `evaluate_many(embedded_engine, policy, docs)` the same for a batch (replay);
- `run_tests(modules)`, `run_path_tests(paths)`, `run_spec_tests(loaded)`,
  `eval_file(policy, input)` behind `fibric policy test|eval` and `validate`.
"""

from fibric.policies.compiler import (
    CompiledPolicy,
    Module,
    compile,
    compile_shadow_spec,
    compile_spec,
    source_sha256,
)
from fibric.policies.decision import Decision, Verdict
from fibric.policies.embedded import EmbeddedEngine
from fibric.policies.engine import Engine, Outcome, Stats
from fibric.policies.engines import open_configured, open_engine
from fibric.policies.failclosed import evaluate, evaluate_many, unavailable
from fibric.policies.inputs import Counts, Window, build_input
from fibric.policies.opa import OpaEngine
from fibric.policies.policy_files import eval_file, read_input, read_module, run_path_tests, run_spec_tests
from fibric.policies.testing import TestReport, TestResult, run_policy_tests, run_tests

__all__ = [
    "CompiledPolicy",
    "Counts",
    "Decision",
    "EmbeddedEngine",
    "Engine",
    "Module",
    "OpaEngine",
    "Outcome",
    "Stats",
    "TestReport",
    "TestResult",
    "Verdict",
    "Window",
    "build_input",
    "compile",
    "compile_shadow_spec",
    "compile_spec",
    "eval_file",
    "evaluate",
    "evaluate_many",
    "open_configured",
    "open_engine",
    "read_input",
    "read_module",
    "run_path_tests",
    "run_policy_tests",
    "run_spec_tests",
    "run_tests",
    "source_sha256",
    "unavailable",
]
