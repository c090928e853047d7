"""What differs between the store's two SQL databases, written once.

The store's SQL is shared: `?` placeholders (backends.py adapts them for
psycopg), `ON CONFLICT ... DO NOTHING | DO UPDATE` and `RETURNING`, which
SQLite and PostgreSQL spell alike. What they do not share is here, named for
what it means rather than for the database, so a store module reads
`sql.skip_locked` and never asks which database it is on:

- row locks: PostgreSQL takes them (`FOR UPDATE`, `SKIP LOCKED`); SQLite has
  none and needs none, because `BEGIN IMMEDIATE` serializes every writer;
- the clock shared by replicas (the database host's on PostgreSQL);
- sequences (PostgreSQL) against a counter read under SQLite's write lock;
- whether a failed statement aborts the whole transaction (PostgreSQL);
- commit notifications (PostgreSQL's NOTIFY; a SQLite dispatcher polls);
- the auto-incrementing key of migrations.

Each backend carries its own (`backend.sql`, `StateStore.sql`), beside the
dialect's name (`backend.dialect`), which stays a plain string for what only
reports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dialect:
    """One database's spelling of what the store's shared SQL cannot say alike."""

    name: str  # "sqlite" | "postgresql", the key of per-dialect migration statements
    for_update: str  # appended to a SELECT: hold its rows until the transaction ends
    skip_locked: str  # appended to a SELECT: hold its rows, passing over rows another holds
    clock: str | None  # SQL reading the database's clock now; None: it is this host's (stamps.db_now)
    sequences: bool  # has SEQUENCE objects; without, the next value is read under the write lock
    failed_statement_aborts: bool  # an error ends the transaction unless a savepoint catches it
    notify: str | None  # SQL that wakes listeners when the transaction commits (`?`: the channel)
    serial: str  # the column type of an auto-incrementing primary key
    in_process: bool  # queries run in this process on a local file (CPU work), not over a network

    def next_value(self, sequence: str, *, counter: str) -> str:
        """SQL selecting the next value of `sequence`, or `counter` where there are no sequences
        (safe there: writers are serialized, so no two read the same value)."""
        return f"SELECT nextval('{sequence}')" if self.sequences else counter

    @contextmanager
    def may_fail(self, cur: Any, savepoint: str) -> Iterator[None]:
        """Run a statement whose failure the caller handles, without it ending the transaction."""
        if self.failed_statement_aborts:
            cur.execute(f"SAVEPOINT {savepoint}")
        try:
            yield
        except Exception:
            if self.failed_statement_aborts:
                cur.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            raise


SQLITE = Dialect(
    name="sqlite", for_update="", skip_locked="", clock=None, sequences=False,
    failed_statement_aborts=False, notify=None, serial="INTEGER PRIMARY KEY AUTOINCREMENT",
    in_process=True,
)
POSTGRESQL = Dialect(
    name="postgresql", for_update=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED",
    # clock_timestamp(), not now() (when the transaction began): a claim that waited
    # for another's row lock must be stamped after that one committed.
    clock="SELECT clock_timestamp()", sequences=True, failed_statement_aborts=True,
    notify="SELECT pg_notify(?, '')", serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    in_process=False,
)
DIALECTS = {d.name: d for d in (SQLITE, POSTGRESQL)}


def named(name: str) -> Dialect:
    """The dialect called `name` ("sqlite" or "postgresql"); KeyError for any other."""
    return DIALECTS[name]
