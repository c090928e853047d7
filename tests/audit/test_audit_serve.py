"""Auditing while `fibric serve` runs: DuckDB lets no other process open the lake's catalog, yet every
command works.

A real server process holds the sealed ledger's catalog; the CLI, finding it
held, asks the server which Parquet files make up the ledger (local admin,
proven by the data dir's token) and reads those, or runs the query in the
server (a tenant's API key), and the server goes on answering meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from audit_support import fill, new_receipt, run

from fibric import store
from fibric.store import audit_sql, ledger_access, receipt_store, sealed

RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


@pytest.fixture
def server(tmp_path: Path, data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    process = subprocess.Popen([sys.executable, "-m", "fibric.cli", "serve", "--port", "0", "--data-dir",
                                str(data_dir)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        url, seen, deadline = None, [], time.monotonic() + 60
        assert process.stderr is not None
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if found := RUNNING.search(line):
                url = found.group(1)
        assert url is not None, "".join(seen)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()


def test_every_audit_command_works_while_the_server_holds_the_ledger(
    data_dir: Path, tmp_path: Path, local_state: store.StateStore, acme: store.Tenant, globex: store.Tenant,
) -> None:
    written = fill(data_dir, [acme.id, globex.id], 6)
    catalog = data_dir / sealed.CATALOG_FILE
    _, acme_key = local_state.create_api_key(acme.id, frozenset(store.SCOPES))
    with _serving(tmp_path, data_dir) as url:
        headers = {"Authorization": f"Bearer {acme_key}"}
        listed = httpx.get(f"{url}/v1/receipts", headers=headers)
        assert listed.status_code == 200 and len(listed.json()["data"]) == 6
        # A receipt of record written beside the server (as a replica would) is sealed by its sealer.
        receipt_store.StoreLedger(local_state).append(new_receipt(globex.id, 7))
        wait_sealed(url, acme_key, "SELECT count(*) FROM receipts", 6)  # the server holds the catalog now
        # The premise: no other process may open the catalog, not even read-only.
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(catalog), read_only=True)
        with pytest.raises(sealed.LedgerHeld):
            sealed.SealedLedger(data_dir, read_only=True).files()
        env: dict[str, str | None] = {"FIBRIC_URL": url}
        where = ["--data-dir", str(data_dir)]

        deadline = time.monotonic() + 30
        while True:  # the sealer's next pass seals globex's 7th
            verified = run(["audit", "verify", *where], env)
            if (f"tenant {globex.id}: 7 receipts" in verified.stdout and "7 sealed" in verified.stdout) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert verified.exit_code == 0, verified.output
        assert "reading the files it named" in verified.stderr
        assert f"ok      tenant {acme.id}: 6 receipts" in verified.stdout
        assert f"ok      tenant {globex.id}: 7 receipts, head tenant_seq 7" in verified.stdout

        mine = run(["audit", "sql", "SELECT count(*) AS n FROM receipts", "--tenant", "acme", "-o", "json",
                    *where], env)
        assert mine.exit_code == 0, mine.output
        assert json.loads(mine.stdout) == [{"n": 6}]
        everyone = run(["audit", "sql", "SELECT count(*) AS n FROM receipts", "--all", "-o", "json", *where],
                       env)
        assert json.loads(everyone.stdout) == [{"n": 13}]

        # A tenant's auditor, with an API key and no access to the data dir: the query runs in the server.
        keyed = run(["audit", "sql", "SELECT tenant_id, count(*) AS n FROM receipts GROUP BY ALL",
                     "-o", "json"], {**env, "FIBRIC_KEY": acme_key})
        assert keyed.exit_code == 0, keyed.output
        assert json.loads(keyed.stdout) == [{"tenant_id": acme.id, "n": 6}]

        out = tmp_path / "all.parquet"
        exported = run(["audit", "export", "--out", str(out), *where], env)
        assert exported.exit_code == 0, exported.output
        key = tmp_path / "audit.key"
        assert run(["audit", "keygen", "--out", str(key)]).exit_code == 0
        checkpoint = tmp_path / "checkpoint.json"
        taken = run(["audit", "checkpoint", "--key", str(key), "--out", str(checkpoint), *where], env)
        assert taken.exit_code == 0, taken.output

        # The server answered throughout and left no snapshot behind.
        assert list((data_dir / audit_sql.SNAPSHOTS).glob("*")) == []
        assert httpx.get(f"{url}/v1/receipts", headers=headers).status_code == 200

    # Server stopped: its token is gone and the catalog is read directly, against the checkpoint.
    assert ledger_access.read(catalog) is None
    direct = run(["audit", "verify", *where, "--checkpoint", str(checkpoint), "--public-key", f"{key}.pub"])
    assert direct.exit_code == 0, direct.output
    assert "reading the files it named" not in direct.stderr
    conn = duckdb.connect()
    try:
        assert conn.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone() == (13,)
    finally:
        conn.close()
    assert written[acme.id][-1].tenant_seq == 6


def test_without_the_token_the_cli_explains_instead_of_guessing(
    data_dir: Path, tmp_path: Path, local_state: store.StateStore, acme: store.Tenant,
) -> None:
    fill(data_dir, [acme.id], 1)
    _, key = local_state.create_api_key(acme.id, frozenset(store.SCOPES))
    with _serving(tmp_path, data_dir) as url:
        wait_sealed(url, key, "SELECT count(*) FROM receipts", 1)
        token = ledger_access.token_path(data_dir / sealed.CATALOG_FILE)
        token.write_text("not-the-token")
        result = run(["audit", "verify", "--data-dir", str(data_dir)], {"FIBRIC_URL": url})
        assert result.exit_code == 2
        assert "is held by another process" in result.stderr and "unauthenticated" in result.stderr.lower()


def wait_sealed(url: str, key: str, sql: str, expected: int, timeout: float = 30.0) -> None:
    """Until the tenant's SQL (which reads the sealed ledger) answers `expected`."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(f"{url}/v1/receipts/query", json={"sql": sql},
                              headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 200 and response.json()["rows"] == [[expected]]:
            return
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


class _serving:
    """`fibric serve --data-dir` as a subprocess, for a `with` block; its base URL."""

    def __init__(self, cwd: Path, data_dir: Path) -> None:
        self._fixture = server.__wrapped__(cwd, data_dir)  # type: ignore[attr-defined]

    def __enter__(self) -> str:
        _, url = next(self._fixture)
        return url

    def __exit__(self, *exc: object) -> None:
        next(self._fixture, None)
