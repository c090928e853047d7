"""The page's templates and stylesheet ship in the package, so a wheel (non-editable) install serves them."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "fibric" / "api" / "ui"


def test_every_template_and_stylesheet_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["fibric.api.ui"]
    files = [p.relative_to(UI).as_posix() for p in UI.rglob("*") if p.is_file() and p.suffix != ".py"
             and "__pycache__" not in p.parts]
    assert files and {"templates/base.html", "static/approvers.css"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []
