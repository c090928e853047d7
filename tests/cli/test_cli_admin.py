"""`fibric admin` on the state store itself, on both backends."""

from __future__ import annotations

import hashlib

import pytest
from cli_support import KEY, raw_rows, run

from fibric import errors, store


def location_args(store_location: str) -> list[str]:
    if store_location.startswith("postgresql://"):
        return ["--store", store_location]
    return ["--data-dir", store_location]


def test_tenant_create_and_list(store_location: str) -> None:
    where = location_args(store_location)
    created = run(["admin", "tenant", "create", "acme", "--reseller", "rs_acme", *where])
    assert created.exit_code == 0, created.output
    assert created.stdout.startswith("tenant/acme created (t_")

    listed = run(["admin", "tenant", "list", *where])
    assert listed.exit_code == 0, listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "RESELLER", "AGE"]
    assert row.split()[0] == "acme" and row.split()[2] == "rs_acme"

    again = run(["admin", "tenant", "create", "acme", *where])
    assert again.exit_code == 1
    assert "tenant 'acme' already exists" in again.stderr
    bad = run(["admin", "tenant", "create", "Not A Slug", *where])
    assert bad.exit_code == 2
    assert "tenant name must be a slug" in bad.stderr


def test_key_create_prints_only_the_key_once_and_stores_only_its_hash(store_location: str) -> None:
    where = location_args(store_location)
    assert run(["admin", "tenant", "create", "acme", *where]).exit_code == 0

    result = run(["admin", "key", "create", "--tenant", "acme", "--scopes", "all", *where])

    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert result.stdout == secret + "\n"  # nothing else on stdout: KEY=$(fibric ...) works
    assert KEY.fullmatch(secret)
    assert "shown only this once" in result.stderr
    assert secret not in result.stderr
    rows = raw_rows(store_location, "SELECT secret_hash, scopes FROM api_keys")
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(), " ".join(sorted(store.SCOPES)))]
    dumped = repr(raw_rows(store_location, "SELECT * FROM api_keys"))
    assert secret not in dumped

    state = store.open_store(store_location)
    try:
        assert state.authenticate(secret).scopes == frozenset(store.SCOPES)
    finally:
        state.close()

    listed = run(["admin", "key", "list", *where])
    assert listed.exit_code == 0
    assert secret not in listed.output
    assert secret[:12] + "..." in listed.stdout
    assert "all" in listed.stdout.split()


def test_key_create_with_named_scopes_and_bad_scopes(store_location: str) -> None:
    where = location_args(store_location)
    assert run(["admin", "tenant", "create", "acme", *where]).exit_code == 0
    good = run(["admin", "key", "create", "--tenant", "acme", "--scopes",
                "operators:read, policies:read", *where])
    assert good.exit_code == 0, good.output
    state = store.open_store(store_location)
    try:
        principal = state.authenticate(good.stdout.strip())
        assert principal.scopes == {"operators:read", "policies:read"}
    finally:
        state.close()

    bad = run(["admin", "key", "create", "--tenant", "acme", "--scopes", "operators:read,root", *where])
    assert bad.exit_code == 2
    assert "unknown scope(s) root" in bad.stderr
    assert bad.stdout == ""
    missing = run(["admin", "key", "create", "--tenant", "nope", "--scopes", "all", *where])
    assert missing.exit_code == 1
    assert "no tenant 'nope'" in missing.stderr
    assert missing.stdout == ""


def test_key_revoke_stops_the_key(store_location: str) -> None:
    where = location_args(store_location)
    assert run(["admin", "tenant", "create", "acme", *where]).exit_code == 0
    assert run(["admin", "tenant", "create", "globex", *where]).exit_code == 0
    secret = run(["admin", "key", "create", "--tenant", "acme", "--scopes", "all", *where]).stdout.strip()
    other = run(["admin", "key", "create", "--tenant", "globex", "--scopes", "all", *where]).stdout.strip()
    state = store.open_store(store_location)
    try:
        key_id = state.authenticate(secret).key_id

        revoked = run(["admin", "key", "revoke", key_id, *where])
        assert revoked.exit_code == 0, revoked.output
        assert revoked.stdout == f"key/{key_id} revoked\n"
        with pytest.raises(errors.Unauthenticated, match="revoked"):
            state.authenticate(secret)
        assert state.authenticate(other).key_id != key_id  # the other key still works
    finally:
        state.close()

    listed = run(["admin", "key", "list", "--tenant", "acme", *where])
    rows = listed.stdout.splitlines()[1:]
    assert len(rows) == 1 and "revoked" in rows[0].split()
    unknown = run(["admin", "key", "revoke", "key_doesnotexist", *where])
    assert unknown.exit_code == 1
    assert "no API key 'key_doesnotexist'" in unknown.stderr


def test_admin_reads_the_data_dir_from_the_environment(tmp_path: object) -> None:
    data_dir = str(tmp_path)
    created = run(["admin", "tenant", "create", "acme"], env={"FIBRIC_DATA_DIR": data_dir})
    assert created.exit_code == 0, created.output
    listed = run(["admin", "tenant", "list", "--data-dir", data_dir])
    assert "acme" in listed.stdout
