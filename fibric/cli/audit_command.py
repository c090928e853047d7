"""`fibric audit`: verify, checkpoint, query and export receipts, as their auditor.

`verify` and `checkpoint` read the receipts of record in the state store (the
data dir's state.db, which SQLite lets any process read beside the server,
or PostgreSQL with --store); `verify` also checks the sealed ledger against
them. `sql` and `export` read the sealed ledger's Parquet files. With no
server running the ledger's catalog is read directly; while `fibric serve`
holds it (DuckDB admits no other process then), the server says which files
to read, to the local admin who proves local access with the token it keeps
in the data dir. Nothing is copied and auditing never blocks the server.

`--tenant NAME` limits a command to one tenant's receipts; `--all` (the
local admin) covers every tenant. `fibric audit sql` without either runs
through the API with FIBRIC_KEY, limited to the key's tenant.

Exit codes: 0 ok, 1 a chain is broken (verify), 2 bad input or unreadable
data (usage, IO, a checkpoint whose signature does not verify).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from fibric import client, errors, settings
from fibric.cli import admin, edge, options
from fibric.store import audit_sql, chain_audit, checkpoint, ledger_access, receipt_store, sealed

LOCAL_MAX_ROWS = 1_000_000
TENANT_ID = re.compile(r"t_[0-9a-f]+")

tenant_option = click.option("--tenant", "tenant_name", default=None,
                             help="Only this tenant's receipts (its name or id).")
all_option = click.option("--all", "all_tenants", is_flag=True, help="Every tenant's receipts (local admin).")


class AuditGroup(click.Group):
    """Errors leave `fibric audit` with exit code 2: 1 is reserved for a broken chain."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except errors.FibricError as e:
            raise edge.failure(e, always_bad_input=True) from e
        except edge.Failure as e:  # an unusable data dir or store
            raise edge.BadInput(e.message) from e


@click.group("audit", cls=AuditGroup)
def audit() -> None:
    """Verify, checkpoint, query and export the receipt ledger (works while the server runs)."""


@audit.command("verify")
@admin.data_dir_option
@admin.store_option
@tenant_option
@all_option
@click.option("--checkpoint", "checkpoint_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A signed checkpoint (fibric audit checkpoint): also catches a truncated tail or a "
                   "chain rebuilt with recomputed hashes.")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The Ed25519 public key (PEM) the checkpoint must be signed with.")
@click.pass_context
def verify(ctx: click.Context, data_dir: str | None, store_url: str | None, tenant_name: str | None,
           all_tenants: bool, checkpoint_file: Path | None, public_key: Path | None) -> None:
    """Walk each tenant's hash chain of record and report its first broken link; check the sealed copy.

    Exit 0: every chain verifies and every sealed receipt matches its record;
    1: a chain is broken or a sealed receipt differs (the first bad receipt
    is named, with the reason); 2: usage or IO error, or a checkpoint whose
    signature does not verify. Without --checkpoint, a truncated tail or a
    chain rebuilt with recomputed hashes cannot be seen (docs/receipts.md).
    """
    tenant_id = _scope(data_dir, store_url, tenant_name, all_tenants, default_all=True)
    anchor = None
    if checkpoint_file is not None:
        if public_key is None:
            raise click.UsageError("--checkpoint needs --public-key, the key it was signed with")
        anchor = checkpoint.load(checkpoint_file, public_key)
        if tenant_id is not None:
            anchor = checkpoint.Checkpoint(anchor.created_at, anchor.key_id,
                                           {k: v for k, v in anchor.tenants.items() if k == tenant_id})
    elif public_key is not None:
        raise click.UsageError("--public-key is for --checkpoint")
    files = _files(ctx, data_dir, tenant_id)
    with admin.opened(data_dir, store_url, existing=True) as state:
        record = receipt_store.StoreLedger(state)
        tenants = [tenant_id] if tenant_id is not None else record.tenants()
        results = chain_audit.verify(record, tenants, anchor,
                                     sealed_rows=lambda tenant: sealed.rows_in(files, tenant))
    broken = [r for r in results if r.broken is not None or r.sealed_break is not None]
    for result in results:
        if result.broken is not None:
            click.echo(f"BROKEN  {result.broken.describe()}")
        elif result.sealed_break is not None:
            click.echo(f"BROKEN  tenant {result.tenant_id}: {result.sealed_break}")
        else:
            click.echo(f"ok      tenant {result.tenant_id}: {result.receipts} receipts, head tenant_seq "
                       f"{result.head_seq} {result.head_hash[:16]}; {result.sealed} sealed, each as recorded")
    if not results:
        click.echo("no receipts")
    if anchor is None:
        click.echo("note: without --checkpoint a truncated tail or a chain rebuilt with recomputed hashes "
                   "cannot be detected", err=True)
    else:
        click.echo(f"checked against the checkpoint of {anchor.created_at} (key {anchor.key_id})", err=True)
    if broken:
        ctx.exit(edge.FAILED)


@audit.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file to create (mode 0600); the public key goes to OUT.pub.")
def keygen(out: Path) -> None:
    """Create the Ed25519 key pair that signs checkpoints; keep the private key off the server.

    OUT's folder must exist: as with ssh-keygen, a missing one is an error
    rather than created, so a mistyped path never leaves a signing key in a
    folder nobody chose the owner and mode of.
    """
    if not out.parent.is_dir():
        raise edge.BadInput(f"cannot write the key to {out}: the folder {out.parent} does not exist "
                            f"(create it first, e.g. `mkdir -m 700 {out.parent}`)")
    try:
        public = checkpoint.generate_key(out)
    except OSError as e:
        raise edge.BadInput(f"cannot write the key to {e.filename or out}: {e.strerror or e}") from e
    click.echo(f"private key: {out} (0600)\npublic key:  {public}")


@audit.command("checkpoint")
@admin.data_dir_option
@admin.store_option
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The Ed25519 private key (fibric audit keygen).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint file to write; keep it outside the data dir.")
@click.pass_context
def checkpoint_command(ctx: click.Context, data_dir: str | None, store_url: str | None, key_file: Path,
                       out: Path) -> None:
    """Sign the head of every tenant's chain of record into a file outside the database."""
    with admin.opened(data_dir, store_url, existing=True) as state:
        document = checkpoint.create(receipt_store.StoreLedger(state), key_file)
    try:
        checkpoint.write(document, out)
    except OSError as e:
        raise edge.BadInput(f"cannot write the checkpoint to {out}: {e.strerror or e}") from e
    for tenant in document["tenants"]:
        click.echo(f"tenant {tenant['tenant_id']}: tenant_seq {tenant['tenant_seq']} "
                   f"{tenant['receipt_id']} {tenant['hash'][:16]}")
    click.echo(f"checkpoint written to {out}", err=True)


@audit.command("sql")
@click.argument("sql")
@admin.data_dir_option
@admin.store_option
@tenant_option
@all_option
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--max-rows", type=click.IntRange(1, LOCAL_MAX_ROWS), default=10_000, show_default=True,
              help="Rows to print at most (through the API at most 10000).")
@click.pass_context
def sql(ctx: click.Context, sql: str, data_dir: str | None, store_url: str | None, tenant_name: str | None,
        all_tenants: bool, fmt: str, max_rows: int) -> None:
    """Run one read-only SELECT over the tables `receipts` and `model_calls` (docs/receipts.md).

    With --tenant or --all it reads the local data dir; with neither it runs
    through the API with FIBRIC_KEY, over the key's tenant's receipts.
    """
    if tenant_name is None and not all_tenants:
        body = options.session(ctx).client().query_receipts(sql, min(max_rows, audit_sql.MAX_ROWS))
        result = audit_sql.Result.from_document(body)
    else:
        audit_sql.check_select(sql)
        tenant_id = _scope(data_dir, store_url, tenant_name, all_tenants, default_all=False)
        conn = audit_sql.over_files(_files(ctx, data_dir, tenant_id),
                                    calls=_files(ctx, data_dir, tenant_id, table="model_calls"),
                                    threads=os.cpu_count() or 1)
        try:
            result = audit_sql.query(conn, sql, max_rows=max_rows, max_bytes=None)
        finally:
            conn.close()
    _print(result, fmt)
    if result.truncated == "max_bytes":
        click.echo(f"note: output cut at {len(result.row_json)} rows, the {audit_sql.MAX_RESPONSE_BYTES} "
                   f"bytes an API answer may hold", err=True)
    elif result.truncated:
        click.echo(f"note: output cut at {len(result.row_json)} rows", err=True)


@audit.command("export")
@admin.data_dir_option
@admin.store_option
@tenant_option
@all_option
@click.option("--format", "fmt", type=click.Choice(["parquet"]), default="parquet", show_default=True,
              help="File format.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write.")
@click.pass_context
def export(ctx: click.Context, data_dir: str | None, store_url: str | None, tenant_name: str | None,
           all_tenants: bool, fmt: str, out: Path) -> None:
    """Export sealed receipts (one tenant's, or all) to a Parquet file, for any tool that reads Parquet."""
    tenant_id = _scope(data_dir, store_url, tenant_name, all_tenants, default_all=True)
    rows = audit_sql.export(_files(ctx, data_dir, tenant_id), out)
    click.echo(f"{rows} receipts written to {out} ({fmt})", err=True)


def _scope(data_dir: str | None, store_url: str | None, tenant_name: str | None, all_tenants: bool,
           *, default_all: bool) -> str | None:
    """The tenant id to limit to, or None for every tenant."""
    if tenant_name is not None and all_tenants:
        raise click.UsageError("--tenant and --all exclude each other")
    if tenant_name is None:
        if not all_tenants and not default_all:
            raise click.UsageError("name a tenant (--tenant NAME) or pass --all")
        return None
    with admin.opened(data_dir, store_url, existing=True) as state:
        try:
            return state.get_tenant(tenant_name).id
        except errors.NotFound:
            if TENANT_ID.fullmatch(tenant_name):  # a deleted tenant's receipts stay auditable by id
                return tenant_name
            raise


def _files(ctx: click.Context, data_dir: str | None, tenant_id: str | None, *, table: str = "receipts"
           ) -> list[str]:
    """The sealed ledger's current Parquet files of `table` (receipts or model_calls; one tenant's,
    or all): from its catalog, or the server."""
    lake = sealed.open_for(settings.Settings.from_env(data_dir=data_dir).store, read_only=True)
    if not lake.shared and not Path(lake.catalog).exists():
        return []  # nothing was ever sealed here
    try:
        return lake.files(tenant_id, table=table)
    except sealed.LedgerHeld as held:
        return _from_server(options.session(ctx).url, Path(lake.catalog), tenant_id, held, table)
    finally:
        lake.close()


def _from_server(url: str, catalog: Path, tenant_id: str | None, held: Exception, table: str) -> list[str]:
    token = ledger_access.read(catalog)
    if token is None:
        raise errors.TemporaryError(f"{held}; it published no audit token, so it is not a Fibric server "
                                    f"this user can ask") from held
    try:
        files = client.audit_files(url, token, tenant_id, table=table)
    except (client.ApiError, client.Unreachable) as e:
        raise errors.TemporaryError(f"{held}; asking the server at {url} for the ledger's files failed: "
                                    f"{e} (point --url / FIBRIC_URL at that server)") from e
    click.echo(f"the server at {url} holds the ledger; reading the files it named", err=True)
    return files


def _print(result: audit_sql.Result, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([dict(zip(result.columns, row, strict=True)) for row in result.rows], indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([[_text(v) for v in row] for row in result.rows])
    else:
        _table(result.columns, [[_text(v) for v in row] for row in result.rows])


def _table(columns: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
