"""SQLite writers in one process queue on a lock, not in SQLite's sleeping busy handler."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fibric import errors
from fibric.store import backends


@pytest.fixture
def backend(tmp_path: Path) -> backends.SQLiteBackend:
    sqlite = backends.SQLiteBackend(tmp_path / "state.db")
    with sqlite.transaction(write=True) as cur:
        cur.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
        cur.execute("INSERT INTO counter VALUES (0)")
    return sqlite


def test_concurrent_writers_all_commit(backend: backends.SQLiteBackend) -> None:
    def increment() -> None:
        with backend.transaction(write=True) as cur:
            cur.execute("SELECT n FROM counter")
            (n,) = cur.fetchone()
            cur.execute("UPDATE counter SET n = ?", (n + 1,))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: increment(), range(200)))

    with backend.transaction(write=False) as cur:
        cur.execute("SELECT n FROM counter")
        assert cur.fetchone() == (200,)


def test_a_writer_held_too_long_is_a_temporary_error_not_a_hang(
    backend: backends.SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "BUSY_TIMEOUT_SECONDS", 0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with backend.transaction(write=True):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    started = time.monotonic()
    with pytest.raises(errors.TemporaryError, match="another writer"), backend.transaction(write=True):
        pass
    assert time.monotonic() - started < 2
    release.set()
    holder.join()

    with backend.transaction(write=True) as cur:  # the lock is free again
        cur.execute("UPDATE counter SET n = 1")


def test_a_nested_write_fails_instead_of_hanging(backend: backends.SQLiteBackend) -> None:
    outer, inner = backend.transaction(write=True), backend.transaction(write=True)
    with pytest.raises(errors.TemporaryError), outer, inner:
        pass
