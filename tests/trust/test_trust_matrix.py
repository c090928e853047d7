"""The tenant wall against what a tenant declares: every refused spec, through the API, with every scope set.

An attacker holding an ordinary tenant key tries to make the server run a
command, reach loopback/private/link-local/metadata addresses (every
spelling of the webhook SSRF matrix) or read a server variable. Each try is
a 400 naming the field and the setting that would allow it (or a 403 when
the key lacks the kind's write scope), in a real apply and in a server
dry-run, and nothing is stored or started. The same specs pass when the
installation allows them (its catalog, its egress allowlist, its own specs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from egress_matrix import REFUSED
from trust_support import api, connector, doc, error, fields, webhook

from fibric import errors, specs, store, trust
from fibric.controller import applier
from fibric.store import receipt_store

READS = frozenset(s for s in store.SCOPES if s.endswith(":read"))
SCOPE_SETS = {
    "all": frozenset(store.SCOPES),
    "connectors": frozenset({"connectors:read", "connectors:write"}),
    "webhooks": frozenset({"webhooks:read", "webhooks:write"}),
    "connectors+secrets": frozenset({"connectors:write", "secrets:read", "secrets:write"}),
    "read-only": READS,
}


def attacks(marker: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(id, document, the field the 400 names) for every way to cross the wall."""
    shell = f"id > {marker}; cp state.db /tmp/stolen.db"
    found: list[tuple[str, dict[str, Any], str]] = [
        ("stdio-shell", connector("evil", {"stdio": {"command": "sh", "args": ["-c", shell]}}),
         "spec.transport.stdio"),
        ("stdio-python", connector("evil", {"stdio": {"command": sys.executable,
                                                      "args": ["-c", f"open({str(marker)!r}, 'w')"]}}),
         "spec.transport.stdio"),
        ("stdio-env", connector("evil", {"stdio": {"command": "true", "env": {"LD_PRELOAD": "/tmp/x.so"}}}),
         "spec.transport.stdio"),
        ("http-token-from-server-variable",
         connector("evil", {"http": {"url": "https://mcp.example.com/mcp", "bearer_token_env": "HOME"}}),
         "spec.transport.http.bearer_token_env"),
        ("catalog-entry-not-offered", connector("evil", {"catalog": "shell"}), "spec.transport.catalog"),
        ("webhook-secret-from-server-variable", webhook("evil", secret_env="FIBRIC_SECRET_KEY"),
         "spec.secret_env"),
        ("webhook-secret-from-path", webhook("evil", secret_env="PATH"), "spec.secret_env"),
    ]
    for url, reason in REFUSED:
        found.append((f"http-connector {url} ({reason})",
                      connector("evil", {"http": {"url": url.replace("/h", "/mcp")}}),
                      "spec.transport.http.url"))
        found.append((f"webhook {url} ({reason})", webhook("evil", url=url), "spec.url"))
    return found


ATTACKS = attacks(Path("/tmp/fibric-marker"))


@pytest.mark.parametrize(("document", "field"), [(d, f) for _, d, f in ATTACKS],
                         ids=[i for i, _, _ in ATTACKS])
@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
def test_no_tenant_can_declare_a_process_a_private_address_or_a_server_variable(
    sqlite_state: store.StateStore, ledger: receipt_store.Ledger, document: dict[str, Any], field: str,
    dry_run: bool,
) -> None:
    """On SQLite only: the refusal happens before the store is written, and both stores run the rest."""
    state = sqlite_state
    tenant = state.create_tenant("acme", "rs_test")
    with api(state, ledger, tenant, SCOPE_SETS["all"]) as client:
        response = client.post("/v1/apply", json={"documents": [document], "dry_run": dry_run})
    body = error(response, 400)
    assert body["code"] == "invalid_request"
    assert fields(body) == [f"documents[0].{field}"]
    if field != "spec.transport.catalog":  # that one lists the entries the installation offers instead
        assert "installation" in body["message"]
    assert state.list_objects(tenant.id, document["kind"]) == []


SAMPLES = [ATTACKS[0], ATTACKS[3], ATTACKS[5], next(a for a in ATTACKS if "169.254.169.254" in a[0])]


@pytest.mark.parametrize("scopes", SCOPE_SETS, ids=list(SCOPE_SETS))
@pytest.mark.parametrize(("document", "field"), [(d, f) for _, d, f in SAMPLES],
                         ids=[i for i, _, _ in SAMPLES])
def test_every_scope_set_is_refused_before_anything_is_stored(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger, scopes: str,
    document: dict[str, Any], field: str,
) -> None:
    """A key with the kind's write scope gets the 400; any other key the 403; none gets a 200."""
    kind = document["kind"]
    with api(state, ledger, tenant, SCOPE_SETS[scopes]) as client:
        response = client.post("/v1/apply", json={"documents": [document]})
    if f"{kind.lower()}s:write" in SCOPE_SETS[scopes]:
        assert fields(error(response, 400)) == [f"documents[0].{field}"]
    else:
        assert error(response, 403)["code"] == "insufficient_scope"
    assert state.list_objects(tenant.id, kind) == []


def test_the_refusal_names_the_setting_that_would_allow_it(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, SCOPE_SETS["all"]) as client:
        stdio = error(client.post("/v1/apply", json={"documents": [ATTACKS[0][1]]}), 400)
        url = error(client.post("/v1/apply", json={"documents": [
            connector("evil", {"http": {"url": "https://127.0.0.1:9/mcp"}})]}), 400)
    assert "FIBRIC_CONNECTOR_CATALOG" in stdio["message"] and "transport.catalog" in stdio["message"]
    assert "FIBRIC_EGRESS_ALLOW" in url["message"] and "loopback" in url["message"]


def test_a_created_webhook_cannot_name_a_server_variable_either(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    with api(state, ledger, tenant, SCOPE_SETS["all"]) as client:
        response = client.post("/v1/webhooks", json={"url": "https://hooks.example/h",
                                                     "events": ["plan.proposed"], "secret_env": "HOME"})
    assert error(response, 400)["code"] == "invalid_request"
    assert state.list_objects(tenant.id, "Webhook") == []


def test_a_spec_naming_a_secret_needs_the_secrets_write_scope(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    """Naming a secret sends its value where the spec points, so it is as strong as writing the secret."""
    hook = webhook("ops", secret_ref="ops-hook")
    with api(state, ledger, tenant, frozenset({"webhooks:write"})) as client:
        denied = client.post("/v1/apply", json={"documents": [hook]})
    assert (error(denied, 403)["code"], "secrets:write" in denied.text) == ("insufficient_scope", True)
    with api(state, ledger, tenant, frozenset({"webhooks:write", "secrets:write"})) as client:
        assert client.post("/v1/apply", json={"documents": [hook]}).status_code == 200


# --- the same specs, allowed by the installation ----------------------------------------------


def test_the_installation_allows_what_it_lists(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    catalog = trust.Catalog.parse("connectors:\n  shell:\n    stdio: {command: sh, args: [-c, 'true']}\n",
                                  "catalog.yaml")
    boundary = trust.Boundary(catalog=catalog,
                              egress=trust.Egress.parse(["127.0.0.1", "10.0.0.0/8", "orders.internal"]))
    documents = [
        connector("by-catalog", {"catalog": "shell"}),
        connector("loopback", {"http": {"url": "http://127.0.0.1:9/mcp"}}),
        connector("private", {"http": {"url": "https://10.1.2.3/mcp", "bearer_token_ref": "orders-token"}}),
        connector("internal-name", {"http": {"url": "http://orders.internal:9000/mcp"}}),
        webhook("loopback-hook", url="http://127.0.0.1:9/h"),
    ]
    with api(state, ledger, tenant, SCOPE_SETS["all"], boundary) as client:
        response = client.post("/v1/apply", json={"documents": documents})
        assert response.status_code == 200, response.text
        # Still refused: what the allowlist does not name, and server variables.
        still = client.post("/v1/apply", json={"documents": [
            connector("other", {"http": {"url": "https://192.168.1.1/mcp"}}),
            connector("env", {"http": {"url": "https://10.0.0.1/mcp", "bearer_token_env": "HOME"}})]})
    assert sorted(fields(error(still, 400))) == ["documents[0].spec.transport.http.url",
                                                 "documents[1].spec.transport.http.bearer_token_env"]
    stored = {o.name: o.origin for o in state.list_objects(tenant.id, "Connector")}
    assert stored == {"by-catalog": "tenant", "loopback": "tenant", "private": "tenant",
                      "internal-name": "tenant"}


def test_the_installation_own_specs_may_run_commands_and_read_variables(
    state: store.StateStore, tenant: store.Tenant
) -> None:
    documents = [connector("local", {"stdio": {"command": "python", "args": ["server.py"]}}),
                 connector("env", {"http": {"url": "http://127.0.0.1:9/mcp", "bearer_token_env": "TOKEN"}}),
                 webhook("env-hook", url="http://10.0.0.1/h", secret_env="HOOK_SECRET")]
    loaded = [specs.Loaded(specs.validate_data(d), specs.Source(file=f"documents[{n}]"))
              for n, d in enumerate(documents)]
    result = applier.apply(state, tenant.id, loaded, origin=trust.Origin.INSTALLATION)
    assert [c.action for c in result.changes] == ["created"] * 3
    assert {o.origin for k in ("Connector", "Webhook") for o in state.list_objects(tenant.id, k)} == {
        "installation"}
    with pytest.raises(errors.SpecInvalid, match="may not start a process"):  # the same spec from a tenant
        applier.apply(state, tenant.id, [_renamed(loaded[0], "again")])


def test_a_tenant_change_to_an_installation_spec_is_checked_and_owned_by_the_tenant(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    """Re-applying the installation's spec unchanged grants nothing new; changing it makes it the tenant's."""
    raw = connector("local", {"stdio": {"command": "python", "args": ["server.py"]}})
    loaded = [specs.Loaded(specs.validate_data(raw), specs.Source(file="documents[0]"))]
    applier.apply(state, tenant.id, loaded, origin=trust.Origin.INSTALLATION)
    with api(state, ledger, tenant, SCOPE_SETS["all"]) as client:
        unchanged = client.post("/v1/apply", json={"documents": [raw]})
        assert unchanged.status_code == 200 and unchanged.json()["changes"][0]["action"] == "unchanged"
        changed = dict(raw, spec={**raw["spec"], "transport": {"stdio": {"command": "sh"}}})
        assert error(client.post("/v1/apply", json={"documents": [changed]}), 400)
        relabelled = dict(raw, metadata={"name": "local", "labels": {"team": "ops"}})
        assert client.post("/v1/apply", json={"documents": [relabelled]}).status_code == 200
    [stored] = state.list_objects(tenant.id, "Connector")
    assert (stored.origin, stored.spec["transport"]["stdio"]["command"]) == ("installation", "python")


def _renamed(item: specs.Loaded, name: str) -> specs.Loaded:
    data = specs.document_data(item.document)
    data["metadata"]["name"] = name
    return specs.Loaded(specs.validate_data(data), item.source)


def test_unknown_documents_still_name_their_field(
    state: store.StateStore, tenant: store.Tenant, ledger: receipt_store.Ledger
) -> None:
    both = connector("evil", {"catalog": "orders", "stdio": {"command": "sh"}})
    with api(state, ledger, tenant, SCOPE_SETS["all"]) as client:
        body = error(client.post("/v1/apply", json={"documents": [both, doc("Webhook", "w", {
            "url": "https://h.example/h", "events": ["plan.proposed"], "secret_env": "A",
            "secret_ref": "b"})]}), 400)
    assert "documents[0].spec.transport" in fields(body) and "documents[1].spec" in fields(body)


# --- policies read their input, nothing of the host ----------------------------------------------

HOST_READS = {
    "call": 'reasons := [json.marshal(opa.runtime().env)]',
    "spaced": 'reasons := [json.marshal(opa . runtime ().env)]',
    "bracket": 'reasons := [json.marshal(opa["runtime"]().env)]',
    "template": 'reasons := [$"{opa.runtime().env.FIBRIC_SECRET_KEY}"]',
    "with": 'reasons := [json.marshal(x.env)] if x := time.now_ns() with time.now_ns as opa.runtime',
    "import": 'reasons := [json.marshal(runtime().env)]',
    "http": 'reasons := [http.send({"method": "get", "url": "http://169.254.169.254/"}).raw_body]',
}


@pytest.mark.parametrize("spelling", HOST_READS, ids=list(HOST_READS))
def test_no_tenant_policy_can_read_the_servers_environment(
    sqlite_state: store.StateStore, ledger: receipt_store.Ledger, spelling: str
) -> None:
    """rego-cpp's opa.runtime() returns the server's environment; decision reasons land in receipts."""
    imports = "import rego.v1\nimport opa.runtime\n" if spelling == "import" else "import rego.v1\n"
    rego = (f"package leak\n\n{imports}\n{HOST_READS[spelling]}\n\n"
            'decision := {"decision": "ALLOW", "rule": "leak", "reasons": reasons}\n')
    policy = doc("Policy", "leak", {"rego": rego})
    state = sqlite_state
    tenant = state.create_tenant("acme", "rs_test")
    with api(state, ledger, tenant, SCOPE_SETS["all"]) as client:
        applied = client.post("/v1/apply", json={"documents": [policy]})
        created = client.post("/v1/policies", json={"name": "leak", "rego": rego})
    for response in (applied, created):
        body = error(response, 400)
        assert body["code"] == "invalid_request"
        assert "a policy may read only its input" in body["message"] or "may import only" in body["message"]
        assert "leak.rego:" in body["message"]  # the module and line, like every other Rego problem
    assert set(fields(error(applied, 400))) == {"documents[0].spec.rego"}
    assert state.list_objects(tenant.id, "Policy") == []
