"""Importing the receipts of a data dir from before the receipts of record (a DuckDB `receipts.duckdb`).

Until this release the DuckDB file was the only copy of the receipts. On the
first start of this release over such a data dir, its receipts move into the
state store, chains intact: every tenant's chain is verified first (an
import never launders a broken chain), the rows are inserted as they are
(ids, seqs, times and hashes unchanged, so existing checkpoints still
verify), each tenant's head is set, all in one transaction, and the file is
renamed `receipts.duckdb.imported` (a crash between the two: the next start
finds the rows there and only renames). A tenant that already has receipts of
record is refused with a message: the two histories cannot both be its chain.
The sealer then seals the imported receipts into the auditors' ledger like
any others.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fibric import errors
from fibric.store import chain_audit, receipt_store
from fibric.store import state as state_module

log = logging.getLogger(__name__)
LEDGER_FILE = "receipts.duckdb"
# The file has the columns of its release: fields added since read as null.
_LEGACY_COLUMNS = ", ".join("NULL" if f in receipt_store.LATER_FIELDS else c
                            for f, c in zip(receipt_store.FIELDS, receipt_store.COLUMNS.split(", "),
                                            strict=True))
IMPORTED_SUFFIX = ".imported"


def import_if_present(state: state_module.StateStore, data_dir: Path) -> int:
    """Import `data_dir/receipts.duckdb` if it is there; how many receipts were imported."""
    path = data_dir / LEDGER_FILE
    if not path.is_file():
        return 0
    rows = _read(path)
    if rows:
        _check_chains(path, rows)
        _insert(state, path, rows)
    path.rename(path.with_name(path.name + IMPORTED_SUFFIX))
    log.warning("imported %d receipts from %s into the state store; the file is kept as %s%s",
                len(rows), path, path.name, IMPORTED_SUFFIX)
    return len(rows)


def _read(path: Path) -> list[tuple[Any, ...]]:
    import duckdb

    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        raise errors.PermanentError(f"cannot read the receipt ledger {path} to import it: {e}") from e
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        if "receipts" not in tables:
            return []
        if "ledger_meta" not in tables:
            raise errors.PermanentError(
                f"{path} holds receipts of ledger schema 1, whose chains have no per-tenant sequence; "
                "move the file aside (it stays readable with duckdb) and start again")
        return [tuple(r) for r in conn.execute(
            f"SELECT {_LEGACY_COLUMNS} FROM receipts ORDER BY tenant_id, tenant_seq, seq").fetchall()]
    finally:
        conn.close()


class _Rows:
    """The file's rows as a chain source for chain_audit.verify."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._by_tenant: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            self._by_tenant.setdefault(str(row[4]), []).append(row)

    def tenants(self) -> list[str]:
        return sorted(self._by_tenant)

    def chain(self, tenant_id: str) -> Any:
        return iter(self._by_tenant.get(tenant_id, []))

    def with_hash(self, tenant_id: str, chain_hash: str) -> str | None:
        rows = self._by_tenant.get(tenant_id, [])
        return next((str(r[2]) for r in rows if r[receipt_store.HASH] == chain_hash), None)


def _check_chains(path: Path, rows: list[tuple[Any, ...]]) -> None:
    source = _Rows(rows)
    broken = [r.broken for r in chain_audit.verify(source, source.tenants()) if r.broken is not None]
    if broken:
        raise errors.PermanentError(
            f"{path} cannot be imported: {broken[0].describe()}; verify it with an earlier release, "
            "move it aside, and start again")
    applied: set[tuple[str, str]] = set()
    for row in rows:
        values = dict(zip(receipt_store.FIELDS, row, strict=True))
        if values["outcome"] == "applied":
            key = (str(values["tenant_id"]), str(values["idempotency_key"]))
            if key in applied:  # the receipts of record allow one, by a unique index
                raise errors.PermanentError(
                    f"{path} cannot be imported: tenant {key[0]} has two applied receipts of idempotency "
                    f"key {key[1]} (the second is {values['id']}); move the file aside and start again")
            applied.add(key)


def _insert(state: state_module.StateStore, path: Path, rows: list[tuple[Any, ...]]) -> None:
    heads: dict[str, tuple[int, str]] = {}
    with state.backend.transaction(write=True) as cur:
        cur.execute("SELECT hash FROM receipts WHERE id = ?", (rows[0][2],))
        found = cur.fetchone()
        # imported; a crash kept the file's name
        if found is not None and found[0] == rows[0][receipt_store.HASH]:
            return
        cur.execute("SELECT DISTINCT tenant_id FROM receipts")
        recorded = {str(r[0]) for r in cur.fetchall()}
        clash = sorted(recorded & {str(r[4]) for r in rows})
        if clash:
            raise errors.PermanentError(
                f"{path} holds receipts of tenant(s) {', '.join(clash)}, which already have receipts of "
                "record; the two cannot both be their chain. Move the file aside to start without it")
        marks = ", ".join("?" for _ in receipt_store.FIELDS)
        for row in rows:
            values = receipt_store.values_of(row)
            cur.execute(f"INSERT INTO receipts ({receipt_store.COLUMNS}) VALUES ({marks})",
                        [receipt_store.stored(f, values[f]) for f in receipt_store.FIELDS])
            heads[values["tenant_id"]] = (values["tenant_seq"], values["hash"])
        for tenant_id, (tenant_seq, head_hash) in heads.items():
            cur.execute("INSERT INTO receipt_heads (tenant_id, tenant_seq, hash) VALUES (?, ?, ?)",
                        (tenant_id, tenant_seq, head_hash))
        if state.sql.sequences:  # a sequence the rows bypassed: start it past them
            cur.execute("SELECT setval('fibric_receipt_seq', (SELECT MAX(seq) FROM receipts))")
