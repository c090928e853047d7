"""CONTRIBUTING.md names only files and folders that exist, so its recipes never send a newcomer nowhere.

Every path it quotes (in `backticks` or a fenced block) under fibric/, tests/,
docs/, bench/ or examples/ must exist. A placeholder such as
`fibric/api/routes/<resource>.py` must have an existing folder up to the
placeholder.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "CONTRIBUTING.md"
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"^(?:fibric|tests|docs|bench|examples)/[\w./<>-]*$")


def quoted_paths(text: str) -> list[str]:
    """Every whitespace-separated token of a code span or fenced block that looks like a repository path."""
    blocks = FENCED.findall(text)
    spans = INLINE.findall(FENCED.sub("", text))
    return [token for chunk in (*blocks, *spans) for token in chunk.split() if PATH.match(token)]


def exists(path: str) -> bool:
    if "<" in path:  # a placeholder: the folder it goes in must exist
        folder = path.split("<", 1)[0].rsplit("/", 1)[0]
        return (ROOT / folder).is_dir()
    target = ROOT / path
    return target.is_dir() if path.endswith("/") else target.exists()


def test_every_path_it_names_exists() -> None:
    paths = quoted_paths(PAGE.read_text(encoding="utf-8"))
    assert len(set(paths)) >= 60, sorted(set(paths))  # the scan found the recipes' paths, not none
    assert sorted({p for p in paths if not exists(p)}) == []


def test_the_scan_tells_a_path_from_prose() -> None:
    text = ("See `fibric/store/receipt_store.py` and `fibric/nowhere.py`, not `receipts.FIELDS`;\n"
            "```sh\npython -m pytest tests/api/ > docs/out.md\n```\n`fibric/api/routes/<resource>.py`\n")
    paths = quoted_paths(text)
    assert paths == ["tests/api/", "docs/out.md", "fibric/store/receipt_store.py", "fibric/nowhere.py",
                     "fibric/api/routes/<resource>.py"]
    assert [p for p in paths if not exists(p)] == ["docs/out.md", "fibric/nowhere.py"]
