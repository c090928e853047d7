"""Claims: who holds a piece of shared work, until when, and under which fencing token.

Work that one holder at a time may do, among the processes and replicas
sharing a store, is claimed through this module, whatever the work:

| kind | table | one claim per | holder |
|---|---|---|---|
| `ENTITY`: the executor's single-flight | leases | tenant, entity | the execution's holder |
| `RUN`: an operator run's single-flight | run_leases | tenant, operator, entity | the run's id |
| `EXECUTION`: a plan being disposed of | executions | tenant, plan | the executor's holder |

A claim is a row under its kind's primary key that names its holder, its
fencing token and when it expires, on the database's clock (stamps.db_now),
never a replica's. `take` inserts it or takes over a row whose holder
stopped renewing; `renew` pushes the expiry forward while the holder still
has it; `release` gives it back; `fence`, inside the transaction of a write
made under the claim, refuses that write unless the claim is still the
presenter's and live. On PostgreSQL `fence` locks the row until that
transaction commits, so a takeover waits for the write rather than slipping
in under it.

Every take draws its token from one counter shared by every kind (a
PostgreSQL sequence; a counter row on SQLite, whose writers are serialized):
a later claim always carries a larger token than any earlier one, whichever
replica took it, so a holder that lost its claim presents a token that is no
longer the row's and is refused. Webhook deliveries and Idempotency-Key
requests are claimed in their own rows, where the claim is one state of the
record, with tokens from the same counter and the same compare-and-set on
every write (deliveries.py, idempotency_store.py).

Functions take the caller's cursor, so a claim and the write it guards are
one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fibric.store import dialect, stamps


@dataclass(frozen=True)
class Kind:
    """Where one kind of claim lives: its table, the columns naming one claim, who holds it."""

    table: str
    key: tuple[str, ...]
    holder: str = "holder"
    open: str = ""  # a condition a row must also meet to be claimable (an execution not yet finished)


ENTITY = Kind("leases", ("tenant_id", "entity_key"))
RUN = Kind("run_leases", ("tenant_id", "operator_id", "entity_key"), holder="run_id")
EXECUTION = Kind("executions", ("tenant_id", "plan_id"), open="finished_at IS NULL")


@dataclass(frozen=True)
class Claim:
    holder: str
    token: int
    expires_at: datetime


def next_token(cur: Any, sql: dialect.Dialect) -> int:
    """A fencing token larger than every one handed out before, by any process on this store."""
    cur.execute(sql.next_value("fibric_claim_token",
                               counter="UPDATE claim_tokens SET last = last + 1 WHERE id = 1 RETURNING last"))
    return int(cur.fetchone()[0])


def take(
    cur: Any,
    sql: dialect.Dialect,
    kind: Kind,
    key: Sequence[Any],
    holder: str,
    ttl: float,
    *,
    now: datetime | None = None,
    takeover: bool = True,
    reentrant: bool = False,
    values: Mapping[str, Any] | None = None,
) -> Claim | None:
    """Claim `key` for `holder` for `ttl` seconds; None if someone holds it (or, without `takeover`,
    if the row exists at all). `reentrant`: the holder taking its own claim again renews it and keeps
    its token. `values`: the row's other columns, written when the claim is taken."""
    moment = now or stamps.db_now(cur, sql)
    token = next_token(cur, sql)
    extra = dict(values or {})
    columns = [*kind.key, kind.holder, "token", "expires_at", *extra]
    params: list[Any] = [*key, holder, token, stamps.stamp(moment + timedelta(seconds=ttl)), *extra.values()]
    insert = (f"INSERT INTO {kind.table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
              f" ON CONFLICT ({', '.join(kind.key)})")
    if not takeover:
        insert += " DO NOTHING"
    else:
        h, t = kind.holder, kind.table
        kept = f"CASE WHEN {t}.{h} = excluded.{h} THEN {t}.token ELSE excluded.token END" if reentrant \
            else "excluded.token"
        updates = [f"{h} = excluded.{h}", f"token = {kept}", "expires_at = excluded.expires_at",
                   *(f"{c} = excluded.{c}" for c in extra)]
        expired = f"{t}.expires_at <= ?" + (f" AND {t}.{kind.open}" if kind.open else "")
        mine = f" OR {t}.{h} = excluded.{h}" if reentrant else ""
        insert += f" DO UPDATE SET {', '.join(updates)} WHERE ({expired}){mine}"
        params.append(stamps.stamp(moment))
    cur.execute(insert + f" RETURNING {kind.holder}, token, expires_at", params)
    row = cur.fetchone()
    if row is None or row[0] != holder:
        return None
    return Claim(holder, int(row[1]), datetime.fromisoformat(row[2]))


def take_over(
    cur: Any, sql: dialect.Dialect, kind: Kind, key: Sequence[Any], holder: str, ttl: float,
) -> Claim | None:
    """Claim an existing row whose holder stopped renewing (recovery); None if it is live or not open."""
    moment = stamps.db_now(cur, sql)
    token = next_token(cur, sql)
    cur.execute(
        f"UPDATE {kind.table} SET {kind.holder} = ?, token = ?, expires_at = ? WHERE {_match(kind)}"
        f" AND expires_at <= ?{_open(kind)} RETURNING {kind.holder}, token, expires_at",
        (holder, token, stamps.stamp(moment + timedelta(seconds=ttl)), *key, stamps.stamp(moment)),
    )
    row = cur.fetchone()
    return None if row is None else Claim(row[0], int(row[1]), datetime.fromisoformat(row[2]))


def renew(cur: Any, sql: dialect.Dialect, kind: Kind, key: Sequence[Any], holder: str, ttl: float) -> bool:
    """Push the expiry of `holder`'s claim forward; False if it is no longer the holder's."""
    expires = stamps.db_now(cur, sql) + timedelta(seconds=ttl)
    cur.execute(
        f"UPDATE {kind.table} SET expires_at = ? WHERE {_match(kind)} AND {kind.holder} = ?{_open(kind)}",
        (stamps.stamp(expires), *key, holder),
    )
    return bool(cur.rowcount == 1)


def release(cur: Any, kind: Kind, key: Sequence[Any], holder: str) -> bool:
    """Give `holder`'s claim back (a claim another holder took over stays theirs); False if not held."""
    cur.execute(f"DELETE FROM {kind.table} WHERE {_match(kind)} AND {kind.holder} = ?", (*key, holder))
    return bool(cur.rowcount == 1)


def current(cur: Any, sql: dialect.Dialect, kind: Kind, key: Sequence[Any], *, lock: bool = False
            ) -> Claim | None:
    """The claim on `key` as it stands, live or expired (None: no row); `lock` holds the row (PostgreSQL)."""
    locking = sql.for_update if lock else ""
    cur.execute(f"SELECT {kind.holder}, token, expires_at FROM {kind.table} WHERE {_match(kind)}"
                f"{_open(kind)}{locking}", tuple(key))
    row = cur.fetchone()
    return None if row is None else Claim(row[0], int(row[1]), datetime.fromisoformat(row[2]))


def fence(cur: Any, sql: dialect.Dialect, kind: Kind, key: Sequence[Any], token: int) -> bool:
    """Whether the claim with `token` still holds `key`, live; on PostgreSQL the row stays locked
    until the caller's transaction ends, so no takeover lands between this check and its write."""
    claim = current(cur, sql, kind, key, lock=True)
    return claim is not None and claim.token == token and claim.expires_at > stamps.db_now(cur, sql)


def expired(cur: Any, sql: dialect.Dialect, kind: Kind, *, limit: int | None = None) -> list[tuple[Any, ...]]:
    """The keys of every claim of this kind whose holder stopped renewing (oldest expiry first)."""
    cur.execute(
        f"SELECT {', '.join(kind.key)} FROM {kind.table} WHERE expires_at <= ?{_open(kind)}"
        " ORDER BY expires_at" + (" LIMIT ?" if limit is not None else ""),
        (stamps.stamp(stamps.db_now(cur, sql)), *(() if limit is None else (limit,))),
    )
    return [tuple(r) for r in cur.fetchall()]


def _match(kind: Kind) -> str:
    return " AND ".join(f"{c} = ?" for c in kind.key)


def _open(kind: Kind) -> str:
    return f" AND {kind.open}" if kind.open else ""
