"""The Dockerfile and docs/deploy.md say only what the server does (no Docker daemon here: linted).

The Dockerfile is read instruction by instruction: its base image's Python
satisfies the package's, what it copies exists, it never runs as root, it
starts `fibric serve`, and every FIBRIC_* variable it or the deploy guide
names is one the server reads.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
GUIDE = ROOT / "docs" / "deploy.md"
VARIABLE = re.compile(r"\bFIBRIC_[A-Z0-9_]*[A-Z0-9]\b")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def read_by_the_server() -> set[str]:
    return {name for path in (ROOT / "fibric").rglob("*.py")
            for name in VARIABLE.findall(path.read_text(encoding="utf-8"))}


def test_the_image_runs_fibric_serve_as_an_unprivileged_user_on_a_supported_python() -> None:
    steps = instructions()
    [base] = [args for keyword, args in steps if keyword == "FROM"]
    minimum = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    wanted = tuple(int(p) for p in minimum.removeprefix(">=").split("."))
    version = re.match(r"python:(\d+)\.(\d+)", base)
    assert version and (int(version[1]), int(version[2])) >= wanted, (base, minimum)
    for keyword, args in steps:
        if keyword == "COPY":
            *sources, _ = args.split()
            assert all((ROOT / s).exists() for s in sources), args
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    [entry] = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert json.loads(entry) == ["fibric", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fibric"] == "fibric.cli:main"


def test_every_variable_the_image_and_the_guide_name_is_one_the_server_reads() -> None:
    named = set(VARIABLE.findall(DOCKERFILE.read_text())) | set(VARIABLE.findall(GUIDE.read_text()))
    assert named and not named - read_by_the_server(), sorted(named - read_by_the_server())
