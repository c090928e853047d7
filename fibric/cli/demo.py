"""`fibric demo`: the whole loop in one command, on the embedded defaults.

It starts `fibric serve` (a subprocess, on a free loopback port) on a data
dir (a new temporary one unless given), with a connector catalog offering
the example order system, applies the example specs (the ship-risk
operator, its policy and the order system as its MCP connector, named from
the catalog as a tenant's spec must), ingests the reference's example event, shows the plan the
operator proposes, approves it, prints the receipts and verifies their hash
chain, then stops the server and leaves the data dir for exploring. Every
step is a real API call through the typed client; nothing is simulated.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from ruamel.yaml import YAML

import fibric
from fibric import client as client_module
from fibric import settings, store
from fibric.controller import bootstrap

RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
EXAMPLE_EVENT: dict[str, Any] = {
    "type": "order.updated",
    "entity_key": "order:SO-10884",
    "idempotency_key": "magento:SO-10884:v7",
    "occurred_at": "2026-06-14T08:58:00Z",
    "data": {"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False},
}
APPROVER = "demo@fibric.local"


@click.command("demo")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to keep the demo's state, receipts and order system [default: a new temp dir].")
@click.option("--examples", "examples_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The examples folder (specs/, policies/, mcp/) [default: the checkout's].")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for each step (server start, connector, proposed plan).")
def demo(data_dir: Path | None, examples_dir: Path | None, timeout: float) -> None:
    """Run the loop end to end: event -> proposed plan -> approval -> receipts -> verified chain.

    Leaves the data dir behind; the last lines say how to explore it.
    """
    # An editable install finds the checkout beside the package; `pip install .` runs from the checkout.
    beside = Path(fibric.__file__).resolve().parents[1] / "examples"
    examples = (examples_dir or (beside if beside.is_dir() else Path.cwd() / "examples")).resolve()
    if not (examples / "specs").is_dir() or not (examples / "mcp" / "orders_server.py").is_file() \
            or not (examples / "catalog.yaml").is_file():
        raise click.UsageError(f"no examples at {examples}; pass --examples DIR")
    root = (data_dir or Path(tempfile.mkdtemp(prefix="fibric-demo-"))).resolve()
    specs_dir, catalog = _prepare(root, examples)
    key = _key(root / "data")
    step("1", f"data dir {root}; example specs in {specs_dir}; connector catalog {catalog}")
    with (_serving(root, specs_dir, catalog, timeout) as url,
          client_module.Client(url, key, timeout=timeout) as api):
        step("2", f"fibric serve is up at {url}; waiting for the order system (MCP over stdio)")
        _wait(lambda: api.get_connector("cn_magento").get("status") == "connected", timeout,
              "the example order system never connected (see the server log above)")
        event = api.ingest_event(**EXAMPLE_EVENT)
        if event["dedup"]:
            raise click.ClickException(
                f"{root} already ran the demo: event {EXAMPLE_EVENT['idempotency_key']} was deduplicated, "
                "so no new plan is proposed. Explore it with the commands below, or pass a new --data-dir.")
        step("3", f"ingested event {event['id']} ({event['type']} {event['entity_key']}, "
                  f"dedup={str(event['dedup']).lower()})")
        plan = _proposed_plan(api, timeout)
        step("4", f"plan {plan['id']} proposed by {plan['proposed_by']}, digest {plan['digest']}")
        for action in plan["actions"]:
            click.echo(f"      {action['decision']:<6} {action['capability']:<14} {action['entity_key']}  "
                       f"{json.dumps(action['args'])}")
        disposed = api.request("POST", f"/v1/plans/{plan['id']}/approve",
                               json={"approver": APPROVER, "digest": plan["digest"]},
                               idempotency_key=f"demo-approve-{plan['id']}")
        step("5", f"approved as {APPROVER}: plan {disposed['status']} at {disposed['executed_at']}")
        receipts = [api.get_receipt(r["receipt_id"]) for r in disposed["results"]]
        for receipt in receipts:
            flag = "  <- flagged for a person" if receipt["policy"].get("flagged") else ""
            click.echo(f"      {receipt['id']}  {receipt['decision']:<5} {receipt['outcome']:<12} "
                       f"{receipt['capability']:<14} rule={receipt['policy'].get('rule')}{flag}")
        listed = [api.get_receipt(r["id"]) for r in api.list_receipts()]
        step("6", f"receipt chain: {_check_links(listed)}")
        code, verified = _verified_once_sealed(root / "data", url, key, len(listed), timeout)
    click.echo(verified.rstrip())
    if code != 0:
        raise click.ClickException("the receipt chain does not verify")
    click.echo(f"\nDone. The data dir is left at {root}. Explore it:\n"
               f"  fibric serve --data-dir {root / 'data'} --specs {specs_dir} "
               f"--connector-catalog {catalog}\n"
               f"  fibric audit sql --all --data-dir {root / 'data'} "
               "\"SELECT decision, outcome, capability FROM receipts\"\n"
               f"  sqlite3 {root / 'orders.db'} 'SELECT * FROM effects'   # what really happened")


def step(number: str, text: str) -> None:
    click.echo(click.style(f"[{number}] ", bold=True) + text)


def _prepare(root: Path, examples: Path) -> tuple[Path, Path]:
    """Copy the example repo into the data dir, and install its catalog (this interpreter, this dir).

    Returns the specs folder and the catalog file.
    """
    repo = root / "repo"
    if not repo.exists():
        shutil.copytree(examples / "specs", repo / "specs")
        shutil.copytree(examples / "policies", repo / "policies")
        # Its endpoint is a placeholder (acme.example): the demo stays on this machine.
        (repo / "specs" / "webhooks.yaml").unlink(missing_ok=True)
    path = root / "catalog.yaml"
    yaml = YAML()  # round-trip: the installed catalog keeps the example's comments
    doc = yaml.load((examples / "catalog.yaml").read_text(encoding="utf-8"))
    doc["connectors"]["orders"]["stdio"] = {
        "command": sys.executable, "args": [str(examples / "mcp" / "orders_server.py")],
        "env": {"ORDERS_DB": str(root / "orders.db")},
    }
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(doc, out)
    return repo / "specs", path


def _key(data: Path) -> str:
    """An all-scopes key of the default tenant (bootstrapping the store on the first run)."""
    state = store.open_store(data)
    try:
        created = bootstrap.bootstrap(state, settings.Settings().reseller_id)
        if created is not None:
            return created[1]
        tenant = state.get_tenant(bootstrap.DEFAULT_TENANT)
        return state.create_api_key(tenant.id, frozenset(store.SCOPES))[1]
    finally:
        state.close()


@contextmanager
def _serving(root: Path, specs_dir: Path, catalog: Path, timeout: float) -> Iterator[str]:
    """`fibric serve` on a free port as a subprocess; its log goes to <root>/serve.log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    log_path = root / "serve.log"
    with log_path.open("a", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fibric.cli", "serve", "--data-dir", str(root / "data"), "--port", "0",
             "--specs", str(specs_dir), "--connector-catalog", str(catalog)],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        found: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                log.write(line)
                log.flush()
                match = RUNNING.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            if not ready.wait(timeout) or not found:
                raise click.ClickException(f"fibric serve did not start; see {log_path}")
            yield found[0]
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            reader.join(timeout=10)


def _wait(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise click.ClickException(f"{message} (waited {timeout:.0f} s)")
        time.sleep(0.1)


def _proposed_plan(api: client_module.Client, timeout: float) -> dict[str, Any]:
    """The plan the ship-risk operator proposes for the event (routed by the server's operator runs)."""
    operator = api.get_operator("ship-risk")
    found: list[dict[str, Any]] = []

    def proposed() -> bool:
        plans = api.list_plans(status="proposed", operator_id=operator["id"])
        found[:] = plans[:1]
        return bool(plans)

    _wait(proposed, timeout, "no plan was proposed for the event: the server routes order.updated to the "
                             "ship-risk operator, whose run proposes it; is operator routing running?")
    return api.get_plan(found[0]["id"])


def _check_links(listed: list[dict[str, Any]]) -> str:
    """Each receipt names the hash of the one before it (the list is newest first)."""
    oldest_first = list(reversed(listed))
    for before, after in itertools.pairwise(oldest_first):
        if after.get("prev_hash") is not None and after["prev_hash"] != before.get("hash"):
            raise click.ClickException(f"receipt {after['id']} does not link to {before['id']}")
    return f"{len(listed)} receipts, each linked to the one before it"


def _verified_once_sealed(data: Path, url: str, key: str, receipts: int, timeout: float) -> tuple[int, str]:
    """`fibric audit verify`, once the sealer has sealed every receipt into the auditors' ledger.

    The sealer runs apart from the executor (at most every 0.5 s), so a verify
    right after the approval may find the last receipt not sealed yet; the
    demo shows the copy complete. A broken chain is shown at once.
    """
    verified: list[tuple[int, str]] = []

    def sealed_all() -> bool:
        verified[:] = [_audit_verify(data, url, key)]
        code, text = verified[0]
        return code != 0 or f"; {receipts} sealed, each as recorded" in text

    _wait(sealed_all, timeout, f"the sealer did not seal the {receipts} receipts")
    return verified[0]


def _audit_verify(data: Path, url: str, key: str) -> tuple[int, str]:
    """`fibric audit verify` on the data dir, as an auditor would run it beside the running server."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")},
           "FIBRIC_URL": url, "FIBRIC_KEY": key}
    done = subprocess.run([sys.executable, "-m", "fibric.cli", "audit", "verify", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    return done.returncode, f"$ fibric audit verify --data-dir {data}\n{done.stdout}{done.stderr}"
