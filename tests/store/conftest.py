"""Direct access to the database behind a store, bypassing the store itself.

Store tests use these to check what is really written (which columns, which
bytes), not just what the store chooses to hand back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from store_support import Raw, is_postgres


@pytest.fixture
def raw(store_location: str) -> Raw:
    """Run one SQL statement (`?` placeholders) on the database behind `store_location`."""

    def run(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if is_postgres(store_location):
            import psycopg

            with psycopg.connect(store_location, autocommit=True) as conn:
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())
        with closing(sqlite3.connect(Path(store_location) / "state.db")) as conn:
            return conn.execute(sql, params).fetchall()

    return run


@pytest.fixture
def everything_stored(store_location: str, raw: Raw) -> Callable[[], str]:
    """Every stored byte as text: each table's rows, and for SQLite the database files too."""

    def dump() -> str:
        if is_postgres(store_location):
            tables = [r[0] for r in raw(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )]
            rows = [r[0] for t in tables for r in raw(f"SELECT t::text FROM {t} t")]
            return "\n".join(rows)
        tables = [r[0] for r in raw("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = [repr(r) for t in tables for r in raw(f"SELECT * FROM {t}")]
        files = [
            p.read_bytes().decode("latin-1")
            for p in sorted(Path(store_location).iterdir())
            if p.name.startswith("state.db")
        ]
        return "\n".join(rows + files)

    return dump
