"""Verifying receipts: each tenant's hash chain of record, and the sealed copy against it.

Each tenant's receipts form a chain in `tenant_seq` order: 1, 2, 3, ...; each
names the hash of the one before (`prev_hash`, GENESIS for the first) and
carries its own hash over its canonical JSON (receipt_store.chain_hash). Walking a
chain tells an edit (a hash that no longer matches its receipt), a deletion
(a jump in tenant_seq), an insertion (a second receipt at one tenant_seq, or
one the chain does not pass through) and a reordering (a receipt that links
to another than the one before it). A truncated tail, and a chain rebuilt with
recomputed hashes, look whole from inside: only a signed checkpoint taken
before (fibric/store/checkpoint.py) tells them, so `verify` takes one.

The chain walked is the system of record's (the state store). The sealed
copy auditors query (fibric/store/sealed.py) must then be a prefix of it,
receipt for receipt, field for field: a sealed row edited, missing or
extra is named too. Receipts not sealed yet are only counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from fibric.store import checkpoint, receipt_store

Rows = Iterator[tuple[Any, ...]]  # receipts in tenant_seq order, columns as receipt_store.COLUMNS


class Record(Protocol):
    """The chains of record (receipt_store.StoreLedger)."""

    def tenants(self) -> list[str]: ...

    def chain(self, tenant_id: str) -> Rows: ...

    def with_hash(self, tenant_id: str, chain_hash_: str) -> str | None: ...



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
    sealed: int | None = None  # receipts in the sealed copy (None: not compared)
    sealed_break: str | None = None  # how the sealed copy differs from the record, if it does


def verify(
    record: Record, tenant_ids: list[str], anchor: checkpoint.Checkpoint | None = None,
    sealed_rows: Callable[[str], Rows] | None = None,
) -> list[TenantChain]:
    """Walk each tenant's chain (and those the checkpoint names), stopping at its first break;
    with `sealed_rows`, also check that tenant's sealed copy against its record."""
    wanted = list(tenant_ids)
    if anchor is not None:
        wanted += [t for t in anchor.tenants if t not in wanted]
    results = []
    for tenant_id in wanted:
        chain = verify_tenant(record, tenant_id, anchor.tenants.get(tenant_id) if anchor else None)
        if sealed_rows is not None:
            count, difference = compare_sealed(record.chain(tenant_id), sealed_rows(tenant_id))
            chain = TenantChain(chain.tenant_id, chain.receipts, chain.head_seq, chain.head_hash,
                                chain.broken, count, difference)
        results.append(chain)
    return results


def compare_sealed(record_rows: Rows, sealed_rows: Rows) -> tuple[int, str | None]:
    """(receipts sealed, the first way the sealed copy differs from the record, or None).

    The sealed copy must be a prefix of the chain of record, field for field.
    """
    count = 0
    for count, sealed_row in enumerate(sealed_rows, start=1):
        sealed = dict(zip(receipt_store.FIELDS, sealed_row, strict=True))
        record_row = next(record_rows, None)
        if record_row is None:
            return count, (f"the sealed copy has receipt {sealed['id']} (tenant_seq {sealed['tenant_seq']}) "
                           "past the end of the chain of record")
        kept = dict(zip(receipt_store.FIELDS, record_row, strict=True))
        if sealed["tenant_seq"] != kept["tenant_seq"]:
            return count, (f"the sealed copy has tenant_seq {sealed['tenant_seq']} where the record has "
                           f"{kept['tenant_seq']} (receipt {kept['id']}): a sealed receipt is missing or "
                           "extra")
        try:
            theirs = receipt_store.values_of(sealed_row)
        except (TypeError, AttributeError, ValueError) as e:
            return count, f"the sealed copy of receipt {kept['id']} no longer reads as a receipt ({e})"
        ours = receipt_store.values_of(record_row)
        changed = [name for name in receipt_store.FIELDS if theirs[name] != ours[name]]
        if changed:
            return count, (f"the sealed copy of receipt {kept['id']} (tenant_seq {kept['tenant_seq']}) "
                           f"differs from the record in {', '.join(changed)}")
    return count, None


def verify_tenant(record: Record, tenant_id: str, head: checkpoint.Head | None = None) -> TenantChain:
    def linked(chain_hash: str) -> str | None:
        """The id of the tenant's receipt with this hash: tells a reordering from a broken link."""
        return record.with_hash(tenant_id, chain_hash)

    count, prev, broken = 0, None, None
    rows = record.chain(tenant_id)
    for row, following in _pairs(rows):
        count += 1
        broken = _check(tenant_id, row, prev, following, linked, head)
        if broken is not None:
            break
        prev = row
    head_seq = prev[1] if prev else 0
    head_hash = str(prev[receipt_store.HASH]) if prev else receipt_store.GENESIS
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
    fields = dict(zip(receipt_store.FIELDS, row, strict=True))

    def broken(reason: str) -> Break:
        return Break(tenant_id, str(rid), seq, tenant_seq, reason)

    expected_seq = prev[1] + 1 if prev else 1
    expected_prev = str(prev[receipt_store.HASH]) if prev else receipt_store.GENESIS
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
        if following is not None and following[receipt_store.PREV_HASH] == expected_prev:
            return broken("inserted: the chain does not pass through it (the next receipt links to the "
                          "one before it)")
        return broken("broken link: its prev_hash is not the hash of the receipt before it")
    if prev is not None and seq <= prev[0]:
        return broken(f"reordered: its ledger seq {seq} is not after {prev[0]}, its predecessor's")
    try:
        recomputed = receipt_store.chain_hash(receipt_store.values_of(row))
    except (TypeError, AttributeError, ValueError) as e:
        return broken(f"edited: the row no longer reads as a receipt ({e})")
    if recomputed != fields["hash"]:
        return broken("edited: its content does not match its hash")
    if head is not None and tenant_seq <= head.tenant_seq \
            and head.fingerprint(tenant_seq) != checkpoint.fingerprint(str(fields["hash"])):
        return broken(f"rewritten: the chain was rebuilt from this receipt on; its hash differs from "
                      f"the one the checkpoint of {head.at} recorded")
    return None


def _pairs(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """Each row with the one after it (None for the last): an insertion shows in its successor."""
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        yield current, following
        current = following
