"""Compiling runs rego-cpp in a worker process: a policy that aborts it is a 400, not an outage.

rego-cpp 1.5.2 aborts the process while compiling `with input as <a
reference>`, and any tenant with policies:write can send one to POST
/v1/apply. These tests pin the abort, then check that compile() reports it
as SpecInvalid naming the policy, that the API keeps answering, that a compile
past its budget is stopped, and that the worker's processes come and go cleanly.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from policy_support import alive, eventually

from fibric import errors, policies, settings, specs, store
from fibric.api import create_app
from fibric.policies import bundler, compileworker
from fibric.store import receipt_store

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; the client behaves the same (as in tests/api).
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

# The smallest form: `with input as` a reference (here a rule) aborts the compile.
WITH_REF = 'package p\n\ns := {"a": 1}\n\ndecision := {"decision": "ALLOW"} if {\n\ttrue with input as s\n}\n'
CRASHERS = {
    "with-input-as-rule": WITH_REF,
    "with-input-as-data": 'package p\n\ndecision := 1 if { true with input as data.x }\n',
    "with-input-as-input-ref": 'package p\n\nr := input.a\n\ndecision := 1 if { r with input as input.b }\n',
}
GOOD = 'package p\n\nimport rego.v1\n\ndecision := {"decision": "ALLOW", "rule": "ok"} if input.x == 1\n'
SLOW = "package big\n\nimport rego.v1\n\n" + "".join(
    f"r{i} := x if {{ x := input.a + {i}; x > 3 }}\n" for i in range(2000)
)  # compiles for several seconds: rego-cpp's passes grow faster than the module


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


@pytest.fixture
def worker() -> Iterator[compileworker.CompileWorker]:
    """A compile worker of the test's own, stopped after it (the shared one serves other tests)."""
    handle = compileworker.CompileWorker()
    try:
        yield handle
    finally:
        handle.close()


def build(worker: compileworker.CompileWorker, source: str) -> bundler.Built:
    return worker.build(bundler.Request(source, None, "guard.rego", (), "spec.rego"))


def test_rego_cpp_really_aborts_the_process_that_compiles_it() -> None:
    """The premise: run in-process, this compile kills the interpreter (rego-cpp 1.5.2)."""
    code = (
        "import sys\nfrom fibric.policies import bundler\n"
        "bundler.build(bundler.Request(sys.argv[1], None, 'guard.rego', (), 'spec.rego'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, WITH_REF], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])

    assert done.returncode == -signal.SIGABRT, done.stderr
    assert "shape `rego-with` has no field `rego-ref`" in done.stderr


@pytest.mark.parametrize("source", CRASHERS.values(), ids=CRASHERS.keys())
def test_a_policy_that_crashes_the_compiler_is_spec_invalid_naming_it(source: str) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile(source, name="guard.rego")

    (problem,) = caught.value.problems
    assert problem.path == "spec.rego"
    assert problem.message.startswith(
        "guard.rego: the Rego compiler crashed on this policy (signal 6, SIGABRT")
    assert "rego-with" in problem.message  # rego-cpp's own last words
    assert policies.compile(GOOD).package == "p"  # and the next compile is served as usual


def test_a_query_that_crashes_the_compiler_is_spec_invalid() -> None:
    source = 'package p\n\nr := input.a\n\ndecision := 1\n'

    with pytest.raises(errors.SpecInvalid, match="crashed on this policy"):
        policies.compile(source, query="data.p.decision with input as data.p.r", name="guard.rego")


def test_a_spec_whose_rego_crashes_the_compiler_points_at_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "policies.yaml"
    body = "".join(f"    {line}\n" for line in WITH_REF.splitlines())
    spec.write_text(
        f"apiVersion: fibric.io/v1\nkind: Policy\nmetadata: {{name: guard}}\nspec:\n  rego: |\n{body}")
    (item,) = specs.load_paths([spec])

    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile_spec(item)

    (problem,) = caught.value.problems
    assert (problem.file, problem.path) == (str(spec), "spec.rego")
    assert problem.message.startswith("guard.rego: the Rego compiler crashed")


@pytest.mark.parametrize(
    ("source", "where", "says"),
    [
        ("package p\n\nimport rego.v1\n\ndecision := if {\n", "guard.rego:5:16", "unclosed"),
        ("package p\n\ndefault decision := 1\n\ndefault decision := 2\n", "guard.rego:5:1",
         "Multiple default rules"),
        ("package p\n\nx := foo(1)\n", "guard.rego:3:6", "unknown function 'foo'"),
    ],
    ids=["syntax", "semantic", "lint"],
)
def test_ordinary_compile_errors_still_carry_their_line(source: str, where: str, says: str) -> None:
    with pytest.raises(errors.SpecInvalid) as caught:
        policies.compile(source, name="guard.rego")

    assert caught.value.problems[0].message.startswith(f"{where}: ")
    assert says in str(caught.value)


def test_a_compile_past_its_budget_is_stopped_and_reported() -> None:
    quick = compileworker.CompileWorker(budget=0.5)
    try:
        build(quick, GOOD)  # the worker is up: what follows times the compile alone
        started = time.monotonic()
        with pytest.raises(errors.SpecInvalid) as caught:
            build(quick, SLOW)
        elapsed = time.monotonic() - started

        assert "did not finish within 0.5 s on this policy and was stopped" in str(caught.value)
        assert elapsed < 0.5 + 2.0  # the budget, and slack for a loaded machine
        assert build(quick, GOOD).package == "p"  # a fresh compile child serves the next policy
    finally:
        quick.close()


def test_the_worker_survives_crashes_and_its_children_are_replaced(
    worker: compileworker.CompileWorker,
) -> None:
    assert build(worker, GOOD).package == "p"
    pid = worker.pid
    assert pid is not None
    (child,) = children_of(pid)

    for _ in range(3):
        with pytest.raises(errors.SpecInvalid, match="crashed"):
            build(worker, WITH_REF)
        assert build(worker, GOOD).package == "p"

    assert worker.pid == pid  # the same worker throughout
    assert not alive(child)  # its compile child was the one that died
    assert eventually(lambda: len(children_of(pid)) == 1)


def test_a_worker_killed_while_idle_is_restarted_by_the_next_compile(
    worker: compileworker.CompileWorker,
) -> None:
    build(worker, GOOD)
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: not alive(pid))

    assert build(worker, GOOD).package == "p"
    assert worker.pid not in (None, pid)


def test_a_worker_killed_mid_compile_is_replaced_and_the_compile_answered(
    worker: compileworker.CompileWorker,
) -> None:
    """The worker's death is never the policy's doing: a fresh worker compiles it."""
    build(worker, GOOD)
    pid = worker.pid
    assert pid is not None
    timer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        assert build(worker, SLOW).package == "big"
    finally:
        timer.cancel()
    assert worker.pid not in (None, pid)


def test_a_worker_that_keeps_dying_is_a_temporary_error_not_the_policys(
    worker: compileworker.CompileWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(worker, GOOD)
    started = worker._start

    def start_and_kill() -> Any:  # every worker dies as soon as it is asked anything
        conn = started()
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        assert eventually(lambda: worker._process is not None and worker._process.poll() is not None)
        return conn

    worker._stop(kill=True)
    monkeypatch.setattr(worker, "_start", start_and_kill)
    with pytest.raises(errors.TemporaryError, match="compile worker died"):
        build(worker, GOOD)
    monkeypatch.undo()
    assert build(worker, GOOD).package == "p"


def test_concurrent_compiles_each_get_their_own_answer(worker: compileworker.CompileWorker) -> None:
    sources = [f"package p{i}\n\ndecision := {i}\n" for i in range(8)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        built = list(pool.map(lambda s: build(worker, s), sources))

    assert [b.package for b in built] == [f"p{i}" for i in range(8)]


def test_close_stops_the_worker_and_its_compile_child() -> None:
    handle = compileworker.CompileWorker()
    build(handle, GOOD)
    pid = handle.pid
    assert pid is not None
    children = children_of(pid)
    assert len(children) == 1

    handle.close()

    assert handle.pid is None
    assert eventually(lambda: not alive(pid) and not any(alive(c) for c in children), 5.0)
    assert build(handle, GOOD).package == "p"  # a later compile starts a new one
    handle.close()


def test_the_shared_worker_is_stopped_when_the_process_exits() -> None:
    code = (
        "from fibric import policies\nfrom fibric.policies import compileworker\n"
        "policies.compile('package p\\ndecision := 1\\n')\nprint(compileworker.shared().pid)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])

    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    assert eventually(lambda: not alive(pid), 5.0)


# --- through the API ---------------------------------------------------------------------------


@pytest.fixture
def api(state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger) -> Iterator[Any]:
    app = create_app(settings.Settings(), state, None, receipts=ledger)
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client


def policy_doc(name: str, rego: str) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": "Policy", "metadata": {"name": name},
            "spec": {"rego": rego}}


def test_applying_a_policy_that_crashes_the_compiler_is_a_400_and_the_server_keeps_answering(
    api: Any,
) -> None:
    response = api.post("/v1/apply", json={"documents": [policy_doc("evil", WITH_REF)]})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == ["documents[0].spec.rego"]
    assert "evil.rego: the Rego compiler crashed on this policy" in error["fields"][0]["message"]

    for _ in range(2):  # the same process, still serving, including compiles
        again = api.post("/v1/apply", json={"documents": [policy_doc("evil", WITH_REF)]})
        assert again.status_code == 400, again.text
    good = api.post("/v1/apply", json={"documents": [policy_doc("guard", GOOD)]})
    assert good.status_code == 200, good.text
    assert [c["name"] for c in good.json()["changes"]] == ["guard"]
