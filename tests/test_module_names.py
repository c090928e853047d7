"""Meta-tests on names: every module's basename is its own, and tests import only what is declared.

A basename shared by two modules (a second `runs.py` beside `api/routes/runs.py`)
means import aliases to tell them apart and tracebacks that need the folder
read too; CONTRIBUTING.md ("How the code reads") says how a second module on
one subject is named instead.

A module, test or benchmark that imports a package nobody declared works here,
where another package happened to bring it, and breaks the day that package
stops depending on it or moves it to an incompatible release.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_MODULES = {"__init__.py", "__main__.py"}
IMPORTERS = ("fibric", "tests", "bench")  # the folders whose imports must be declared dependencies


def normalized(distribution: str) -> str:
    """A distribution's name as PEP 503 compares them: `ruamel.yaml` and `Ruamel_YAML` are one."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def shared_basenames(package: Path) -> dict[str, list[str]]:
    """Each basename that more than one module under `package` has, with those modules' paths."""
    paths: dict[str, list[str]] = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        if path.name not in NOT_MODULES:
            paths[path.name].append(path.relative_to(package.parent).as_posix())
    return {name: found for name, found in paths.items() if len(found) > 1}


def declared() -> set[str]:
    """The distributions pyproject.toml names: main dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    names = set()
    for spec in specs:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        assert match, f"pyproject.toml: cannot read the distribution of {spec!r}"
        names.add(normalized(match.group(0)))
    return names


def local_modules() -> set[str]:
    """Modules the repository itself provides: support files put on sys.path by tests and benchmarks."""
    names = {path.stem for path in ROOT.rglob("*.py") if ".venv" not in path.parts}
    names |= {path.parent.name for path in ROOT.rglob("__init__.py") if ".venv" not in path.parts}
    return names


def imported(folder: Path) -> dict[str, list[str]]:
    """Top-level names of the absolute imports in every file under `folder`, with where each is."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found[name.split(".")[0]].append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}")
    return found


def third_party(found: dict[str, list[str]]) -> dict[str, list[str]]:
    """The imports that are neither the standard library, fibric, nor the repository's own files."""
    ours = local_modules() | {"fibric", "__future__"}
    return {name: where for name, where in found.items()
            if name not in sys.stdlib_module_names and name not in ours}


def test_no_two_modules_share_a_basename() -> None:
    shared = shared_basenames(ROOT / "fibric")
    assert not shared, "modules that share a basename (rename one, see CONTRIBUTING.md):\n" + "\n".join(
        f"  {name}: {', '.join(paths)}" for name, paths in sorted(shared.items()))


def test_the_basename_check_names_both_paths(tmp_path: Path) -> None:
    # The check itself, on a tree where it must fire: modules at any depth, both paths named.
    for path in ("pkg/__init__.py", "pkg/a/__init__.py", "pkg/a/runs.py", "pkg/b/c/runs.py", "pkg/d.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    assert shared_basenames(tmp_path / "pkg") == {"runs.py": ["pkg/a/runs.py", "pkg/b/c/runs.py"]}


def test_fibric_tests_and_benchmarks_import_only_declared_dependencies() -> None:
    providers = importlib.metadata.packages_distributions()
    wanted = declared()
    undeclared = []
    for folder in IMPORTERS:
        for name, where in sorted(third_party(imported(ROOT / folder)).items()):
            distributions = {normalized(d) for d in providers.get(name, [])}
            if not distributions & wanted:
                by = ", ".join(sorted(distributions)) or "no installed distribution"
                undeclared.append(f"  {name} ({by}), imported at {', '.join(where[:3])}")
    assert not undeclared, (
        "imports of packages pyproject.toml does not declare (add them, pinned, to the `test` extra, "
        "or stop importing them):\n" + "\n".join(undeclared))
