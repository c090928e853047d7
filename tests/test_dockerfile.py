"""The Dockerfile, checked as hadolint would and against the real server (no Docker daemon here).

Each instruction is read (continuations joined, comments dropped) and held
to what the image promises: a pinned base, no root at run time, no remote
ADD, a data dir volume the server can write, and an entrypoint that is a
`fibric serve` command line click accepts, which with the image's ENV
listens on every interface on the port the image EXPOSEs. The HEALTHCHECK
command is run as written against a real `fibric serve` on loopback.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from served_process import RUNNING, Served
from test_deploy import DOCKERFILE, instructions  # one reading of the Dockerfile for both

from fibric import settings
from fibric.cli import serve

ROOT = Path(__file__).resolve().parents[1]
DOCKERIGNORE = ROOT / ".dockerignore"
SERVE_OVERRIDES = ("data_dir", "store_url", "host", "port")  # what `fibric serve` passes to Settings


def only(keyword: str) -> str:
    [args] = [a for k, a in instructions() if k == keyword]
    return args


def exec_form(args: str) -> list[str]:
    """An instruction's JSON (exec) form; the shell form is refused, as it breaks signal handling."""
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), args
    return parsed


def image_env() -> dict[str, str]:
    """Every ENV of the Dockerfile, later ones winning (both `K=V K2=V2` and `K V`)."""
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            words = shlex.split(args)
            if "=" not in words[0]:
                env[words[0]] = " ".join(words[1:])
            else:
                env.update(word.split("=", 1) for word in words)
    return env


def command_line() -> list[str]:
    """ENTRYPOINT then CMD, as `docker run IMAGE` with no arguments runs them."""
    steps = dict(instructions())
    return exec_form(steps["ENTRYPOINT"]) + (exec_form(steps["CMD"]) if "CMD" in steps else [])


def test_the_base_is_a_pinned_slim_python_and_nothing_is_latest_or_fetched_by_add() -> None:
    steps = instructions()
    assert steps[0][0] == "FROM"
    [base] = [args for keyword, args in steps if keyword == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "python" and re.fullmatch(r"3\.\d+-slim", tag), base
    assert "latest" not in DOCKERFILE.read_text().lower()
    assert not [args for keyword, args in steps if keyword == "ADD" and re.search(r"https?://", args)]


def test_it_runs_as_an_unprivileged_user_from_before_the_entrypoint() -> None:
    steps = instructions()
    keywords = [keyword for keyword, _ in steps]
    users = [(n, args) for n, (keyword, args) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the server would run as root"
    last_at, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    starts = [n for n, keyword in enumerate(keywords) if keyword in ("ENTRYPOINT", "CMD")]
    assert starts and all(last_at < n for n in starts)
    created = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", created), created


def test_the_data_dir_is_a_volume_the_user_owns() -> None:
    steps = instructions()
    data_dir = image_env()["FIBRIC_DATA_DIR"]
    assert exec_form(only("VOLUME")) == [data_dir]
    volume_at = [keyword for keyword, _ in steps].index("VOLUME")
    before = " ".join(args for keyword, args in steps[:volume_at] if keyword == "RUN")
    user = only("USER")
    assert f"mkdir -p {data_dir}" in before
    assert f"chown {user}:{user} {data_dir}" in before  # a new named volume takes this owner


def test_the_entrypoint_is_fibric_serve_listening_on_every_interface_on_the_exposed_port() -> None:
    line = command_line()
    assert line[:2] == ["fibric", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fibric"] == "fibric.cli:main"
    with serve.serve.make_context("serve", line[2:]) as ctx:  # unknown flags or bad values raise here
        overrides = {name: ctx.params[name] for name in SERVE_OVERRIDES}
    running = settings.Settings.from_env(image_env(), **overrides)
    assert running.server.host == "0.0.0.0"
    assert only("EXPOSE").split() == [f"{running.server.port}"]
    assert exec_form(only("VOLUME")) == [str(running.store.data_dir)]
    assert running.store.url is None  # SQLite in the volume unless FIBRIC_STORE is given at run time


def test_every_runtime_dependency_is_pinned() -> None:
    """`pip install .` in the image then installs exactly the versions the tests ran with."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    loose = [d for d in dependencies if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", d)]
    assert not loose


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, /-separated) out of the build context."""
    verdict = False
    for rule in DOCKERIGNORE.read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, pattern.removeprefix("**/"))
               for p in prefixes):
            verdict = not negated
    return verdict


def test_the_build_context_has_what_copy_needs_and_no_local_state() -> None:
    for keyword, args in instructions():
        if keyword == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not ignored(source), f"{source} is COPYed but .dockerignore leaves it out"
    assert not ignored("fibric/cli/serve.py")
    for local_only in (".fibric/state.db", ".venv/bin/python", ".git/config", "tests/conftest.py",
                       "fibric/__pycache__/x.pyc"):
        assert ignored(local_only), local_only


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    started = Served(["--data-dir", str(tmp_path / "data")], cwd=tmp_path)
    try:
        yield started
    finally:
        started.kill()


def healthcheck() -> list[str]:
    args = only("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert re.search(r"--timeout=\d+s", options) and re.search(r"--start-period=\d+s", options), options
    line = exec_form(command)
    assert line[0] == "python", "the slim image has no curl: the check uses its Python"
    return line


def test_the_healthcheck_passes_against_a_running_server_and_fails_without_one(served: Served) -> None:
    line = healthcheck()
    running = served.wait_for(RUNNING)
    assert running is not None, served.text
    port = running.group(1).rsplit(":", 1)[1]
    command = [sys.executable, *line[1:]]
    up = subprocess.run(command, env={"FIBRIC_PORT": port}, capture_output=True, text=True, timeout=30)
    assert up.returncode == 0, up.stderr
    assert served.finish() == 0, served.text
    down = subprocess.run(command, env={"FIBRIC_PORT": port}, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0
    assert "/healthz" in only("HEALTHCHECK")
