"""`fibric admin`: tenants and API keys, directly on the state store.

There is no admin route in the public API (keys are tenant-scoped by
design), so administration is local: whoever can open the store administers
it. Both backends allow this while `fibric serve` runs on the same store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from fibric import settings, store, timefmt
from fibric.cli import edge, tables

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Data directory of the SQLite store [env FIBRIC_DATA_DIR; default ./.fibric].",
)
store_option = click.option(
    "--store", "store_url", default=None,
    help="PostgreSQL URL of the state store, instead of SQLite in the data dir [env FIBRIC_STORE].",
)


def store_settings(data_dir: str | None, store_url: str | None) -> settings.Settings:
    return settings.Settings.from_env(data_dir=data_dir, store_url=store_url)


@contextmanager
def opened(data_dir: str | None, store_url: str | None, *, existing: bool = False
           ) -> Iterator[store.StateStore]:
    """The state store; with `existing`, one that is already there (readers never create a data dir)."""
    location = store_settings(data_dir, store_url).store
    if existing and location.url is None and not Path(location.location).is_file():
        raise edge.Failure(f"no state store at {location.location}: point --data-dir (or FIBRIC_DATA_DIR) "
                           "at the server's data dir, or --store at its database")
    state = edge.open_store(location.location)
    try:
        yield state
    finally:
        state.close()


@click.group("admin")
def admin() -> None:
    """Administer tenants and API keys on the local state store."""


@admin.group("tenant")
def tenant() -> None:
    """Create and list tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--reseller", default=None, help="Reseller id (rs_...) [default: the configured reseller].")
@data_dir_option
@store_option
def tenant_create(name: str, reseller: str | None, data_dir: str | None, store_url: str | None) -> None:
    """Create the tenant NAME (a slug)."""
    reseller_id = reseller or store_settings(data_dir, store_url).reseller_id
    with opened(data_dir, store_url) as state:
        created = state.create_tenant(name, reseller_id)
    click.echo(f"tenant/{created.name} created ({created.id}, reseller {created.reseller_id})")


@tenant.command("list")
@data_dir_option
@store_option
def tenant_list(data_dir: str | None, store_url: str | None) -> None:
    """List tenants."""
    with opened(data_dir, store_url) as state:
        found = state.list_tenants()
    if not found:
        click.echo("No tenants found.", err=True)
        return
    click.echo(tables.render([
        {"NAME": t.name, "ID": t.id, "RESELLER": t.reseller_id,
         "AGE": tables.age(timefmt.rfc3339(t.created_at))}
        for t in found
    ]))


@admin.group("key")
def key() -> None:
    """Create, list and revoke API keys."""


@key.command("create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--scopes", required=True,
              help="Comma-separated scopes (e.g. operators:read,operators:write), or 'all'.")
@click.option("--name", default=None,
              help="Whose key it is (e.g. alice@example.com); approvals record it beside the key id.")
@data_dir_option
@store_option
def key_create(tenant_name: str, scopes: str, name: str | None, data_dir: str | None,
               store_url: str | None) -> None:
    """Create an API key; prints only the key on stdout, once.

    So `KEY=$(fibric admin key create --tenant acme --scopes all)` works.
    Only a hash is stored: the key cannot be shown again.
    """
    wanted = (frozenset(store.SCOPES) if scopes.strip() == "all"
              else frozenset(s.strip() for s in scopes.split(",") if s.strip()))
    with opened(data_dir, store_url) as state:
        found = state.get_tenant(tenant_name)
        record, secret = state.create_api_key(found.id, wanted, name=name)
    click.echo(secret)
    click.echo(
        f"created API key {record.id}{f' ({record.name})' if record.name else ''} for tenant {found.name} "
        f"(scopes: {' '.join(sorted(record.scopes))}); it is shown only this once",
        err=True,
    )


@key.command("list")
@click.option("--tenant", "tenant_name", default=None, help="Only keys of this tenant (name or id).")
@data_dir_option
@store_option
def key_list(tenant_name: str | None, data_dir: str | None, store_url: str | None) -> None:
    """List API keys (never their secrets: the hint is the key's first characters)."""
    with opened(data_dir, store_url) as state:
        names = {t.id: t.name for t in state.list_tenants()}
        tenant_id = state.get_tenant(tenant_name).id if tenant_name else None
        found = state.list_api_keys(tenant_id)
    if not found:
        click.echo("No API keys found.", err=True)
        return
    click.echo(tables.render([
        {"ID": k.id, "NAME": k.name or "", "TENANT": names.get(k.tenant_id, k.tenant_id),
         "HINT": k.hint + "...",
         "SCOPES": ",".join(sorted(k.scopes)) if k.scopes != frozenset(store.SCOPES) else "all",
         "STATE": "revoked" if k.revoked_at else "active",
         "AGE": tables.age(timefmt.rfc3339(k.created_at))}
        for k in found
    ]))


@key.command("revoke")
@click.argument("key_id")
@data_dir_option
@store_option
def key_revoke(key_id: str, data_dir: str | None, store_url: str | None) -> None:
    """Revoke the API key KEY_ID (key_...); requests with it fail from now on."""
    with opened(data_dir, store_url) as state:
        state.revoke_api_key(key_id)
    click.echo(f"key/{key_id} revoked")
