"""Helpers shared by the store tests (importable by name, unlike conftest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Raw = Callable[..., list[tuple[Any, ...]]]  # the `raw` fixture: (sql, params) -> rows


def is_postgres(location: str) -> bool:
    return location.startswith("postgresql://")
