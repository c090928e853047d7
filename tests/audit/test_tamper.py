"""Tampering with the receipts directly, as anyone with the files could: verify names the first bad one.

The receipts of record live in the data dir's state.db, whose append-only
triggers stop an UPDATE or DELETE through Fibric, but not someone who drops
them; the sealed copy is Parquet files anyone with the data dir can
rewrite. Each test edits, deletes, reorders, inserts or truncates receipts
in one copy or the other, or rebuilds a chain with recomputed hashes, then
runs `fibric audit verify` and expects exit 1 naming the receipt. A record
rebuilt whole or cut short looks sound from inside; the sealed copy, or a
signed checkpoint taken before, gives it away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from audit_support import fill, run

from fibric import ids
from fibric.store import receipt_store, sealed

TENANTS = ["t_a", "t_b"]


@pytest.fixture
def chains(data_dir: Path) -> dict[str, list[receipt_store.Receipt]]:
    return fill(data_dir, TENANTS, 6)


@pytest.fixture
def signed(data_dir: Path, tmp_path: Path, chains: dict[str, list[receipt_store.Receipt]]) -> list[str]:
    """A key pair and a checkpoint of the untouched record, outside the data dir: verify's extra args."""
    key = tmp_path / "keys" / "audit.key"
    key.parent.mkdir()
    made = run(["audit", "keygen", "--out", str(key)])
    assert made.exit_code == 0, made.output
    assert key.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "checkpoint.json"
    taken = run(["audit", "checkpoint", "--data-dir", str(data_dir), "--key", str(key), "--out", str(out)])
    assert taken.exit_code == 0, taken.output
    assert f"tenant t_a: tenant_seq 6 {chains['t_a'][5].id}" in taken.stdout
    return ["--checkpoint", str(out), "--public-key", f"{key}.pub"]


def verify(data_dir: Path, *extra: str) -> tuple[int, str]:
    result = run(["audit", "verify", "--data-dir", str(data_dir), *extra])
    return result.exit_code, result.stdout + result.stderr


@contextlib.contextmanager
def record_file(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """state.db opened with plain sqlite3, its receipts copied into a table without triggers or
    constraints, as a tamperer with the file could."""
    conn = sqlite3.connect(data_dir / "state.db")
    try:
        conn.execute("CREATE TABLE loose AS SELECT * FROM receipts")
        conn.execute("DROP TABLE receipts")  # its triggers and indexes go with it
        conn.execute("ALTER TABLE loose RENAME TO receipts")
        yield conn
        conn.commit()
    finally:
        conn.close()


@contextlib.contextmanager
def sealed_copy(data_dir: Path, tenant: str) -> Iterator[Any]:
    """A tenant's sealed Parquet files as one table `receipts`, written back over the files after."""
    lake = sealed.SealedLedger(data_dir, read_only=True)
    try:
        files = lake.files(tenant)
    finally:
        lake.close()
    conn = duckdb.connect()
    try:
        listed = ", ".join(f"'{f}'" for f in files)
        conn.execute(f"CREATE TABLE receipts AS SELECT * FROM read_parquet([{listed}])")
        yield conn
        for f in files[1:]:
            Path(f).write_bytes(b"")  # emptied: its rows now live in the first file only
        conn.execute(f"COPY (SELECT * FROM receipts ORDER BY tenant_seq) TO '{files[0]}' (FORMAT parquet)")
        for f in files[1:]:
            conn.execute(f"COPY (SELECT * FROM receipts LIMIT 0) TO '{f}' (FORMAT parquet)")
    finally:
        conn.close()


def rows_of(data_dir: Path, tenant: str) -> list[receipt_store.Receipt]:
    with contextlib.closing(sqlite3.connect(data_dir / "state.db")) as conn:
        return [receipt_store.from_row(r) for r in conn.execute(
            f"SELECT {receipt_store.COLUMNS} FROM receipts WHERE tenant_id = ? ORDER BY tenant_seq", [tenant]
        ).fetchall()]


def test_an_untouched_ledger_verifies(data_dir: Path, chains: dict[str, list[receipt_store.Receipt]],
                                      signed: list[str]) -> None:
    code, output = verify(data_dir)
    assert code == 0, output
    assert "ok      tenant t_a: 6 receipts" in output and "ok      tenant t_b: 6 receipts" in output
    assert "without --checkpoint a truncated tail" in output
    code, output = verify(data_dir, *signed)
    assert code == 0, output
    assert "checked against the checkpoint" in output


def test_an_edit_is_named(data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]) -> None:
    edited = chains["t_a"][2]
    with record_file(data_dir) as conn:
        conn.execute("UPDATE receipts SET outcome = 'failed' WHERE id = ?", [edited.id])
    code, output = verify(data_dir)
    assert code == 1
    assert f"tenant t_a: chain broken at receipt {edited.id} (seq {edited.seq}, tenant_seq 3): edited" \
        in output
    assert "ok      tenant t_b" in output  # the other tenant's chain is intact


def test_an_edited_json_document_is_named(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]
) -> None:
    edited = chains["t_b"][0]
    with record_file(data_dir) as conn:
        conn.execute("""UPDATE receipts SET args = '{"reason":"late","n":1}' WHERE id = ?""", [edited.id])
    code, output = verify(data_dir, "--tenant", "t_b")  # a tenant id the state store does not know
    assert code == 1
    assert f"at receipt {edited.id} (seq {edited.seq}, tenant_seq 1): edited" in output
    assert "t_a" not in output


def test_a_deletion_is_named_at_the_receipt_after_the_gap(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]
) -> None:
    with record_file(data_dir) as conn:
        conn.execute("DELETE FROM receipts WHERE id = ?", [chains["t_a"][2].id])
    code, output = verify(data_dir)
    after = chains["t_a"][3]
    assert code == 1
    assert f"at receipt {after.id} (seq {after.seq}, tenant_seq 4): deleted: tenant_seq jumps from 2 to 4" \
        in output


def test_a_reordering_is_named(data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]) -> None:
    third, fourth = chains["t_a"][2], chains["t_a"][3]
    with record_file(data_dir) as conn:  # swap their places in the chain
        conn.execute("UPDATE receipts SET tenant_seq = CASE WHEN id = ? THEN 4 ELSE 3 END, "
                     "seq = CASE WHEN id = ? THEN ? ELSE ? END WHERE id IN (?, ?)",
                     [third.id, third.id, fourth.seq, third.seq, third.id, fourth.id])
    code, output = verify(data_dir)
    assert code == 1
    assert f"at receipt {fourth.id} (seq {third.seq}, tenant_seq 3): reordered: it links to receipt " \
           f"{third.id}" in output


def test_an_insertion_is_named(data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]) -> None:
    # A forged receipt with a valid hash, claiming the place of the third.
    second = chains["t_a"][1]
    forged = dataclasses.replace(chains["t_a"][2], id=ids.new_id("receipt"), seq=100, outcome="failed",
                                 prev_hash=second.hash)
    forged = dataclasses.replace(forged, hash=receipt_store.chain_hash(dataclasses.asdict(forged)))
    insert(data_dir, forged)
    code, output = verify(data_dir)
    assert code == 1
    assert f"at receipt {forged.id} (seq 100, tenant_seq 3): inserted: a second receipt at tenant_seq 3" \
        in output


def test_a_truncated_record_is_caught_by_its_sealed_copy(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]
) -> None:
    with record_file(data_dir) as conn:
        conn.execute("DELETE FROM receipts WHERE tenant_id = 't_a' AND tenant_seq > 4")
    code, output = verify(data_dir)
    assert code == 1
    assert f"tenant t_a: the sealed copy has receipt {chains['t_a'][4].id} (tenant_seq 5) past the end of " \
           "the chain of record" in output


def test_a_tail_cut_from_both_copies_is_caught_only_against_a_checkpoint(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]], signed: list[str]
) -> None:
    with record_file(data_dir) as conn:
        conn.execute("DELETE FROM receipts WHERE tenant_id = 't_a' AND tenant_seq > 4")
    with sealed_copy(data_dir, "t_a") as conn:
        conn.execute("DELETE FROM receipts WHERE tenant_seq > 4")
    code, output = verify(data_dir)
    assert code == 0, output  # what is left of each copy is whole, and they agree
    assert "without --checkpoint a truncated tail" in output
    code, output = verify(data_dir, *signed)
    assert code == 1
    assert "tenant t_a: chain broken at tenant_seq 5: truncated: the chain ends at tenant_seq 4" in output
    assert f"ending with {chains['t_a'][5].id}" in output


def test_a_whole_tenant_removed_is_caught_against_a_checkpoint(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]], signed: list[str]
) -> None:
    with record_file(data_dir) as conn:
        conn.execute("DELETE FROM receipts WHERE tenant_id = 't_b'")
    with sealed_copy(data_dir, "t_b") as conn:
        conn.execute("DELETE FROM receipts")
    code, output = verify(data_dir, *signed)
    assert code == 1
    assert "tenant t_b: chain broken at tenant_seq 1: truncated: the chain ends at tenant_seq 0" in output


def rebuild(data_dir: Path, tenant: str) -> None:
    """Change the tenant's third receipt and recompute every hash from there: a chain sound from inside."""
    rows = rows_of(data_dir, tenant)
    rebuilt, prev = [], rows[1].hash
    for number, row in enumerate(rows[2:]):
        changed = dataclasses.replace(row, outcome="failed" if number == 0 else row.outcome, prev_hash=prev)
        changed = dataclasses.replace(changed, hash=receipt_store.chain_hash(dataclasses.asdict(changed)))
        rebuilt.append(changed)
        prev = changed.hash
    with record_file(data_dir) as conn:
        for row in rebuilt:
            conn.execute("UPDATE receipts SET outcome = ?, prev_hash = ?, hash = ? WHERE id = ?",
                         [row.outcome, row.prev_hash, row.hash, row.id])
    with sealed_copy(data_dir, tenant) as copy:
        changes = [(r.outcome, r.prev_hash, r.hash, r.id) for r in rebuilt]
        copy.executemany("UPDATE receipts SET outcome = ?, prev_hash = ?, hash = ? WHERE id = ?", changes)


def test_a_rewritten_record_is_caught_by_its_sealed_copy(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]
) -> None:
    last = chains["t_a"][5]  # the head: no later link to break, so the record alone looks sound
    changed = dataclasses.replace(last, outcome="failed")
    with record_file(data_dir) as conn:
        conn.execute("UPDATE receipts SET outcome = ?, hash = ? WHERE id = ?",
                     ["failed", receipt_store.chain_hash(dataclasses.asdict(changed)), last.id])
    code, output = verify(data_dir)
    assert code == 1
    assert f"the sealed copy of receipt {last.id} (tenant_seq 6) differs from the record in outcome, " \
           "hash" in output


def test_a_chain_rebuilt_in_both_copies_is_caught_against_a_checkpoint_at_its_first_rewritten_receipt(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]], signed: list[str]
) -> None:
    rebuild(data_dir, "t_a")
    code, output = verify(data_dir)
    assert code == 0, output  # consistent from inside, and the copies agree
    code, output = verify(data_dir, *signed)
    first = chains["t_a"][2]
    assert code == 1
    assert f"at receipt {first.id} (seq {first.seq}, tenant_seq 3): rewritten" in output


@pytest.mark.parametrize(("change", "reason"), [
    ("UPDATE receipts SET outcome = 'failed' WHERE tenant_seq = 2", "differs from the record in outcome"),
    ("UPDATE receipts SET args = '{}' WHERE tenant_seq = 2", "differs from the record in args"),
    ("DELETE FROM receipts WHERE tenant_seq = 2", "has tenant_seq 3 where the record has 2"),
    ("INSERT INTO receipts SELECT * FROM receipts WHERE tenant_seq = 6", "past the end of the chain"),
])
def test_a_sealed_copy_edited_or_cut_is_named(
    data_dir: Path, chains: dict[str, list[receipt_store.Receipt]], change: str, reason: str
) -> None:
    with sealed_copy(data_dir, "t_b") as conn:
        conn.execute(change)
    code, output = verify(data_dir)
    assert code == 1, output
    assert "BROKEN  tenant t_b: the sealed copy" in output and reason in output
    assert "ok      tenant t_a: 6 receipts" in output  # the record itself is sound


def test_an_altered_checkpoint_or_another_key_is_refused(
    data_dir: Path, tmp_path: Path, chains: dict[str, list[receipt_store.Receipt]], signed: list[str]
) -> None:
    checkpoint_file = Path(signed[1])
    document = json.loads(checkpoint_file.read_text())
    document["tenants"][0]["tenant_seq"] = 4  # hide a truncation
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(document))
    code, output = verify(data_dir, "--checkpoint", str(altered), "--public-key", signed[3])
    assert code == 2
    assert "signature does not verify" in output
    other = tmp_path / "other.key"
    assert run(["audit", "keygen", "--out", str(other)]).exit_code == 0
    code, output = verify(data_dir, "--checkpoint", signed[1], "--public-key", f"{other}.pub")
    assert code == 2
    assert "signature does not verify" in output
    assert run(["audit", "keygen", "--out", str(other)]).exit_code == 2  # never overwrites a key


def test_usage_errors_exit_2(data_dir: Path, chains: dict[str, list[receipt_store.Receipt]]) -> None:
    assert verify(data_dir, "--checkpoint", "x.json")[0] == 2  # no public key
    assert verify(data_dir, "--tenant", "t_a", "--all")[0] == 2
    code, output = verify(data_dir.parent / "nowhere")
    assert code == 2 and "no state store at" in output
    assert not (data_dir.parent / "nowhere").exists()  # a reader creates nothing


def insert(data_dir: Path, receipt: receipt_store.Receipt) -> None:
    values = dataclasses.asdict(receipt)
    row = [receipt_store.stored(f, values[f]) for f in receipt_store.FIELDS]
    with record_file(data_dir) as conn:
        marks = ", ".join("?" * len(row))
        conn.execute(f"INSERT INTO receipts ({receipt_store.COLUMNS}) VALUES ({marks})", row)
