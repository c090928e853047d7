"""The two SQL backends: SQLite in the data dir (default) and PostgreSQL by URL.

They differ only in how connections are made and how writers are serialized;
the store's SQL is written once, with `?` placeholders.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from fibric import errors
from fibric.store import dialect as dialect_module
from fibric.store import filemodes

BUSY_TIMEOUT_SECONDS = 30.0  # how long a SQLite writer waits for the write lock before giving up


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Backend(Protocol):
    """How to get a transaction on one kind of database."""

    dialect: str  # the dialect's name, for what only reports it
    sql: dialect_module.Dialect  # what its SQL spells differently (dialect.py)

    def transaction(self, *, write: bool, lock_key: str | None = None, durable: bool = True) -> Any:
        """A context manager yielding a cursor inside one transaction.

        Commits on success, rolls back on error. With `lock_key`, writers holding
        the same key are serialized for the length of the transaction. A write
        is durable when its commit returns (it survives a power loss) unless
        `durable` is False: for a commit nothing outside the database acts on
        before a later durable commit, which (the log being sequential) makes
        it durable too. Losing such a commit's tail to a power cut then looks
        like a crash a moment earlier, which everything recovers from
        (docs/receipts.md#durability).
        """

    def close(self) -> None: ...


class SQLiteBackend:
    """SQLite in WAL mode, one connection per thread (sqlite3 connections are not shared)."""

    sql = dialect_module.SQLITE
    dialect = sql.name

    def __init__(self, path: Path) -> None:
        # The data dir and state.db are private (filemodes.py); SQLite gives the
        # -wal and -shm it creates later the mode of the database file.
        filemodes.make_private_dir(path.parent)
        filemodes.create_private_file(path)
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy handler,
        # which polls by sleeping (1 ms, then longer): a thread waiting on a lock
        # wakes the moment the writer before it commits. Other processes still
        # wait in the busy handler (busy_timeout).
        # Reentrant, so a nested write fails in SQLite rather than hanging here.
        self._writer = threading.RLock()
        self._levels: dict[int, str] = {}  # each connection's synchronous level, changed only by its thread

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_SECONDS)
            try:
                _enable_wal(conn, timeout=BUSY_TIMEOUT_SECONDS)
            except sqlite3.OperationalError as e:
                conn.close()
                raise errors.TemporaryError(f"state store unavailable: {e}") from e
            conn.execute("PRAGMA synchronous=FULL")  # see transaction(durable=...)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, write: bool, lock_key: str | None = None, durable: bool = True
                    ) -> Iterator[Cursor]:
        conn = self._connection()
        with self._writing() if write else contextlib.nullcontext():
            cur = conn.cursor()
            try:
                if write:
                    # WAL with FULL syncs the log at every commit: what a caller was told is
                    # written survives a power loss. NORMAL may lose the last commits then (never
                    # the database's consistency): for writes whose loss is harmless.
                    self._synchronous(conn, cur, "FULL" if durable else "NORMAL")
                # BEGIN IMMEDIATE takes the database's write lock up front, which
                # serializes writers (and so any lock_key) across processes too.
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield cur
                cur.execute("COMMIT")
            except sqlite3.OperationalError as e:
                _rollback(conn)
                raise errors.TemporaryError(f"state store unavailable: {e}") from e
            except BaseException:
                _rollback(conn)
                raise
            finally:
                cur.close()

    def _synchronous(self, conn: sqlite3.Connection, cur: sqlite3.Cursor, level: str) -> None:
        levels: dict[int, str] = self._levels
        if levels.get(id(conn)) != level:  # a PRAGMA per change, not per transaction
            cur.execute(f"PRAGMA synchronous={level}")
            levels[id(conn)] = level

    @contextmanager
    def _writing(self) -> Iterator[None]:
        if not self._writer.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise errors.TemporaryError("state store unavailable: another writer held it too long")
        try:
            yield
        finally:
            self._writer.release()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL, waiting out other connections doing the same.

    Processes opening a fresh database together race to convert it, and SQLite
    answers the losers "database is locked" at once, without its busy handler.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class PostgresBackend:
    """PostgreSQL through a psycopg connection pool; writers of one key serialize on an advisory lock."""

    sql = dialect_module.POSTGRESQL
    dialect = sql.name

    def __init__(self, url: str, max_size: int = 10) -> None:
        import psycopg_pool

        self.url = url
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": False}
        )
        try:
            self._pool.open(wait=True, timeout=10.0)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            raise errors.TemporaryError(f"cannot connect to PostgreSQL at {_redact(url)}") from e

    @contextmanager
    def transaction(self, *, write: bool, lock_key: str | None = None, durable: bool = True
                    ) -> Iterator[Cursor]:
        import psycopg

        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                adapter = _QmarkCursor(cur)
                if write and not durable:  # the commit returns before the WAL reaches disk
                    cur.execute("SET LOCAL synchronous_commit = off")
                if lock_key is not None:
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
                yield adapter
        except psycopg.OperationalError as e:
            raise errors.TemporaryError(f"state store unavailable: {e}") from e

    def close(self) -> None:
        self._pool.close()


class _QmarkCursor:
    """Lets the shared SQL use `?` placeholders on psycopg, which wants `%s`."""

    sql = dialect_module.POSTGRESQL

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(sql.replace("?", "%s"), params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


def dialect_of(cur: Any) -> dialect_module.Dialect:
    """The dialect of a cursor a backend's transaction yielded (for code given only the cursor)."""
    return getattr(cur, "sql", dialect_module.SQLITE)  # a sqlite3 cursor, as SQLiteBackend yields


def _redact(url: str) -> str:
    """A URL safe to print: any password is replaced."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
