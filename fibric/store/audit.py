"""Verifying the receipt ledger's hash chains: the first broken link of each tenant, and why.

Each tenant's receipts form a chain in `tenant_seq` order: 1, 2, 3, ...; each
names the hash of the one before (`prev_hash`, GENESIS for the first) and
carries its own hash over its canonical JSON (receipts.chain_hash). Walking a
chain tells an edit (a hash that no longer matches its receipt), a deletion
(a jump in tenant_seq), an insertion (a second receipt at one tenant_seq, or
one the chain does not pass through) and a reordering (a receipt that links
to another than the one before it). A truncated tail, and a chain rebuilt with
recomputed hashes, look whole from inside: only a signed checkpoint taken
before (fibric/store/checkpoint.py) tells them, so `verify` takes one.

Verification reads a connection whose `receipts` table has the ledger's
columns: an in-memory copy (fibric/store/audit_sql.py), never the live file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fibric.store import checkpoint, receipts

BATCH = 10_000


@dataclass(frozen=True)
class Break:
    """The first receipt at which a tenant's chain stops being trustworthy."""

    tenant_id: str
    receipt_id: str | None  # None when the receipt is missing (a truncated tail)
    seq: int | None
    tenant_seq: int
    reason: str

    def describe(self) -> str:
        where = (f"receipt {self.receipt_id} (seq {self.seq}, tenant_seq {self.tenant_seq})"
                 if self.receipt_id else f"tenant_seq {self.tenant_seq}")
        return f"tenant {self.tenant_id}: chain broken at {where}: {self.reason}"


@dataclass(frozen=True)
class TenantChain:
    tenant_id: str
    receipts: int
    head_seq: int  # tenant_seq of the last receipt (0: none)
    head_hash: str
    broken: Break | None


def tenants(conn: Any) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM receipts ORDER BY 1").fetchall()]


def verify(
    conn: Any, tenant_ids: list[str], anchor: checkpoint.Checkpoint | None = None
) -> list[TenantChain]:
    """Walk each tenant's chain (and those the checkpoint names), stopping at its first break."""
    wanted = list(tenant_ids)
    if anchor is not None:
        wanted += [t for t in anchor.tenants if t not in wanted]
    return [verify_tenant(conn, t, anchor.tenants.get(t) if anchor else None) for t in wanted]


def verify_tenant(conn: Any, tenant_id: str, head: checkpoint.Head | None = None) -> TenantChain:
    def linked(chain_hash: str) -> str | None:
        """The id of the tenant's receipt with this hash: tells a reordering from a broken link."""
        found = conn.cursor().execute("SELECT id FROM receipts WHERE tenant_id = ? AND hash = ? LIMIT 1",
                                      [tenant_id, chain_hash]).fetchone()
        return str(found[0]) if found else None

    count, prev, broken = 0, None, None
    rows = _walk(conn, tenant_id)
    for row, following in _pairs(rows):
        count += 1
        broken = _check(tenant_id, row, prev, following, linked, head)
        if broken is not None:
            break
        prev = row
    head_seq = prev[1] if prev else 0
    head_hash = str(prev[-1]) if prev else receipts.GENESIS
    if broken is None and head is not None and head.tenant_seq > head_seq:
        broken = Break(tenant_id, None, None, head_seq + 1,
                       f"truncated: the chain ends at tenant_seq {head_seq}, but the checkpoint of "
                       f"{head.at} recorded {head.tenant_seq} receipts ending with {head.receipt_id}; "
                       f"receipts {head_seq + 1}..{head.tenant_seq} were removed")
    return TenantChain(tenant_id, count, head_seq, head_hash, broken)


def _check(
    tenant_id: str, row: tuple[Any, ...], prev: tuple[Any, ...] | None, following: tuple[Any, ...] | None,
    linked: Callable[[str], str | None], head: checkpoint.Head | None,
) -> Break | None:
    seq, tenant_seq, rid = row[0], row[1], row[2]
    fields = dict(zip(receipts.FIELDS, row, strict=True))

    def broken(reason: str) -> Break:
        return Break(tenant_id, str(rid), seq, tenant_seq, reason)

    expected_seq = prev[1] + 1 if prev else 1
    expected_prev = str(prev[-1]) if prev else receipts.GENESIS
    if tenant_seq is None or seq is None:
        return broken("edited: its sequence number was removed")
    if prev is not None and tenant_seq == prev[1]:
        return broken(f"inserted: a second receipt at tenant_seq {tenant_seq} (after {prev[2]})")
    if tenant_seq > expected_seq:
        return broken(f"deleted: tenant_seq jumps from {expected_seq - 1} to {tenant_seq}; "
                      f"{tenant_seq - expected_seq} receipt(s) before it are missing")
    if fields["prev_hash"] != expected_prev:
        target = linked(str(fields["prev_hash"]))
        if target is not None:
            return broken(f"reordered: it links to receipt {target}, not to the receipt before it "
                          f"({prev[2] if prev else 'the start of the chain'})")
        if following is not None and following[-2] == expected_prev:
            return broken("inserted: the chain does not pass through it (the next receipt links to the "
                          "one before it)")
        return broken("broken link: its prev_hash is not the hash of the receipt before it")
    if prev is not None and seq <= prev[0]:
        return broken(f"reordered: its ledger seq {seq} is not after {prev[0]}, its predecessor's")
    try:
        recomputed = receipts.chain_hash(receipts.values_of(row))
    except (TypeError, AttributeError, ValueError) as e:
        return broken(f"edited: the row no longer reads as a receipt ({e})")
    if recomputed != fields["hash"]:
        return broken("edited: its content does not match its hash")
    if head is not None and tenant_seq <= head.tenant_seq \
            and head.fingerprint(tenant_seq) != checkpoint.fingerprint(str(fields["hash"])):
        return broken(f"rewritten: the chain was rebuilt from this receipt on; its hash differs from "
                      f"the one the checkpoint of {head.at} recorded")
    return None


def _walk(conn: Any, tenant_id: str) -> Iterator[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT {receipts.COLUMNS} FROM receipts WHERE tenant_id = ? "
                    f"ORDER BY tenant_seq NULLS FIRST, seq", [tenant_id])
        while batch := cur.fetchmany(BATCH):
            yield from batch
    finally:
        cur.close()


def _pairs(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """Each row with the one after it (None for the last): an insertion shows in its successor."""
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        yield current, following
        current = following
