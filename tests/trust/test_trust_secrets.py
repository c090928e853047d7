"""Tenant secrets: set once, named by specs, never shown again, sealed at rest, walled per tenant."""

from __future__ import annotations

import json

import live_server
from click.testing import CliRunner
from trust_support import api, connector, error, webhook

from fibric import settings, store
from fibric.api import create_app
from fibric.cli import root
from fibric.store import receipt_store, secretbox, vault

ALL = frozenset(store.SCOPES)


def test_a_secret_is_set_listed_by_fingerprint_and_deleted(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, ALL) as client:
        created = client.put("/v1/secrets/orders-token", json={"value": "s3cret-value"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["object"] == "secret" and body["name"] == "orders-token"
        assert body["fingerprint"].startswith("hmac-sha256:") and "s3cret-value" not in created.text

        again = client.put("/v1/secrets/orders-token", json={"value": "s3cret-value"})
        assert again.status_code == 200 and again.json()["fingerprint"] == body["fingerprint"]
        changed = client.put("/v1/secrets/orders-token", json={"value": "other-value"})
        assert changed.json()["fingerprint"] != body["fingerprint"]

        listed = client.get("/v1/secrets")
        assert [s["name"] for s in listed.json()["data"]] == ["orders-token"]
        assert "value" not in listed.text and "other-value" not in listed.text

        deleted = client.delete("/v1/secrets/orders-token")
        assert deleted.json() == {"id": "orders-token", "object": "secret", "deleted": True}
        assert client.get("/v1/secrets").json()["data"] == []
        assert error(client.delete("/v1/secrets/orders-token"), 404)["code"] == "not_found"


def test_a_secret_is_sealed_at_rest(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, ALL) as client:
        assert client.put("/v1/secrets/hook", json={"value": "plain-text-never-stored"}).status_code == 201
    with state.backend.transaction(write=False) as cur:
        cur.execute("SELECT sealed, fingerprint FROM tenant_secrets")
        rows = cur.fetchall()
    assert len(rows) == 1 and "plain-text-never-stored" not in json.dumps([list(r) for r in rows])


def test_another_tenants_secret_reads_as_not_found(
    state: store.StateStore, tenant: store.Tenant, other_tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, ALL) as mine:
        assert mine.put("/v1/secrets/shared-name", json={"value": "acme"}).status_code == 201
    with api(state, ledger, other_tenant, ALL) as theirs:
        assert theirs.get("/v1/secrets").json()["data"] == []
        assert error(theirs.delete("/v1/secrets/shared-name"), 404)["code"] == "not_found"
        assert theirs.put("/v1/secrets/shared-name", json={"value": "globex"}).status_code == 201  # their own
    with api(state, ledger, tenant, ALL) as mine:
        [kept] = mine.get("/v1/secrets").json()["data"]
    assert kept["name"] == "shared-name"


def test_scopes_and_bad_input(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, frozenset({"secrets:read"})) as reader:
        assert error(reader.put("/v1/secrets/x", json={"value": "v"}), 403)["code"] == "insufficient_scope"
        assert reader.get("/v1/secrets").status_code == 200
    with api(state, ledger, tenant, frozenset({"secrets:write"})) as writer:
        assert error(writer.get("/v1/secrets"), 403)["code"] == "insufficient_scope"
        bad_name = error(writer.put("/v1/secrets/-bad-", json={"value": "v"}), 400)
        assert [f["field"] for f in bad_name["fields"]] == ["name"]
        empty = error(writer.put("/v1/secrets/x", json={"value": ""}), 400)
        assert [f["field"] for f in empty["fields"]] == ["value"]
        unknown = error(writer.put("/v1/secrets/x", json={"value": "v", "shown": True}), 400)
        assert [f["field"] for f in unknown["fields"]] == ["shown"]


def test_a_secret_named_by_a_spec_cannot_be_deleted(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, ALL) as client:
        assert client.put("/v1/secrets/ops-hook", json={"value": "whsec_x"}).status_code == 201
        documents = [webhook("ops", secret_ref="ops-hook"),
                     connector("orders", {"http": {"url": "https://orders.example/mcp",
                                                   "bearer_token_ref": "ops-hook"}})]
        assert client.post("/v1/apply", json={"documents": documents}).status_code == 200
        refused = error(client.delete("/v1/secrets/ops-hook"), 409)
        assert "webhook/ops" in refused["message"] and "connector/orders" in refused["message"]
        assert [s["name"] for s in client.get("/v1/secrets").json()["data"]] == ["ops-hook"]


def test_the_cli_reads_the_value_from_stdin_and_never_prints_it(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    app = create_app(settings.Settings(), state, None, receipts=ledger)
    _, key = state.create_api_key(tenant.id, ALL)
    runner = CliRunner()
    with live_server.serving(app) as url:
        env = {"FIBRIC_URL": url, "FIBRIC_KEY": key}
        set_result = runner.invoke(root.cli, ["secret", "set", "orders-token"], input="tok-from-stdin\n",
                                   env=env)
        assert set_result.exit_code == 0, set_result.output
        assert "secret/orders-token set (hmac-sha256:" in set_result.output
        box = secretbox.for_store(state, settings.Settings())  # the server's: the key beside its store
        assert vault.reveal(state, box, tenant.id, "orders-token") == "tok-from-stdin"  # newline dropped
        listed = runner.invoke(root.cli, ["secret", "list"], env=env)
        assert "orders-token" in listed.output and "tok-from-stdin" not in listed.output
        empty = runner.invoke(root.cli, ["secret", "set", "x"], input="", env=env)
        assert empty.exit_code == 2 and "value" in empty.output
        deleted = runner.invoke(root.cli, ["secret", "delete", "orders-token"], env=env)
        assert deleted.exit_code == 0, deleted.output
    assert vault.page(state, tenant.id) == []
