"""`fibric serve` as a real process: bootstrap key once, answers the CLI, SIGTERM exits 0."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import KEY, run
from served_process import RUNNING, Served

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        served.kill()


def location_args(store_location: str) -> list[str]:
    if store_location.startswith("postgresql://"):
        return ["--store", store_location]
    return ["--data-dir", store_location]


def test_serve_bootstraps_once_answers_and_stops_on_sigterm(
    store_location: str, repo: Path, tmp_path: Path, spawn: list[Served]
) -> None:
    where = location_args(store_location)
    first = Served([*where, "--specs", str(repo)], cwd=tmp_path)
    spawn.append(first)
    running = first.wait_for(RUNNING)
    assert running is not None, first.text
    url = running.group(1)
    keys = KEY.findall(first.text)
    assert len(keys) == 1, first.text
    key = keys[0]
    assert "shown only this once" in first.text
    assert "operator/ship-risk created" in first.text

    env: dict[str, str | None] = {"FIBRIC_URL": url, "FIBRIC_KEY": key}
    listed = run(["get", "operators"], env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[1].split()[0] == "ship-risk"
    assert run(["diff", "-f", str(repo), "--apply-set", "serve"], env).exit_code == 0

    # admin works on the store while the server runs, and the server honours the new key
    created = run(["admin", "key", "create", "--tenant", "default", "--scopes", "operators:read", *where])
    assert created.exit_code == 0, created.output
    limited = {"FIBRIC_URL": url, "FIBRIC_KEY": created.stdout.strip()}
    assert run(["get", "operators"], limited).exit_code == 0
    assert "insufficient_scope" in run(["get", "policies"], limited).stderr

    started = time.monotonic()
    assert first.finish() == 0, first.text
    assert time.monotonic() - started < STOP_TIMEOUT
    assert "Application shutdown complete" in first.text

    second = Served(where, cwd=tmp_path)
    spawn.append(second)
    running = second.wait_for(RUNNING)
    assert running is not None, second.text
    assert KEY.search(second.text) is None  # no new key on restart
    env["FIBRIC_URL"] = running.group(1)
    assert run(["get", "operators"], env).exit_code == 0  # the first key still works
    assert second.finish() == 0, second.text


def test_serve_refuses_invalid_specs_before_serving(tmp_path: Path, repo: Path, spawn: list[Served]) -> None:
    operator = repo / "operator.yaml"
    operator.write_text(operator.read_text().replace("policy: guard", "policy: nope"))
    served = Served(["--data-dir", str(tmp_path / "data"), "--specs", str(repo)], cwd=tmp_path)
    spawn.append(served)
    code = served.process.wait(timeout=START_TIMEOUT)
    served.finish()
    assert code == 2, served.text
    assert re.search(rf"{re.escape(str(operator))}:\d+:3: spec.policy: policy 'nope' does not exist",
                     served.text)
    assert "Uvicorn running" not in served.text


def test_serve_watch_reapplies_a_changed_folder(tmp_path: Path, repo: Path, spawn: list[Served]) -> None:
    served = Served(["--data-dir", str(tmp_path / "data"), "--specs", str(repo), "--watch"], cwd=tmp_path)
    spawn.append(served)
    running = served.wait_for(RUNNING)
    assert running is not None, served.text
    env: dict[str, str | None] = {"FIBRIC_URL": running.group(1), "FIBRIC_KEY": KEY.findall(served.text)[0]}

    operator = repo / "operator.yaml"
    edited = operator.read_text().replace("team: ops", "team: sre")
    deadline = time.monotonic() + 30
    labels: dict[str, str] = {}
    next_write = 0.0
    while time.monotonic() < deadline:
        # The watcher starts beside the server, not before it: an edit made before it
        # watches is not seen, so the edit is saved again until it is (as an editor would).
        if time.monotonic() >= next_write:
            operator.write_text(edited)
            next_write = time.monotonic() + 3
        labels = json.loads(run(["get", "operators", "ship-risk", "-o", "json"], env).stdout)["labels"]
        if labels.get("team") == "sre":
            break
        time.sleep(0.2)
    assert labels.get("team") == "sre", served.text
    assert served.finish() == 0, served.text


def test_watch_needs_specs(tmp_path: Path) -> None:
    result = run(["serve", "--data-dir", str(tmp_path), "--watch"])
    assert result.exit_code == 2
    assert "--watch needs --specs DIR" in result.stderr


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_serve_refuses_a_bad_worker_thread_count(tmp_path: Path, value: str) -> None:
    result = run(["serve", "--data-dir", str(tmp_path)], env={"FIBRIC_WORKER_THREADS": value})

    assert result.exit_code == 2
    assert "FIBRIC_WORKER_THREADS must be a whole number, at least 1" in result.stderr
    assert "Traceback" not in result.stderr
