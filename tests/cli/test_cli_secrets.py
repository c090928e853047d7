"""A new webhook's signing secret never reaches `apply`'s output or `serve`'s log; it goes to a 0600 file.

CI logs and server logs are read by many; the secret is for the receiver
alone. `apply --secrets-out DIR` and `serve --specs` write it to a file only
its owner can read, and what they print says where. Without a folder, apply
says how to get a new one. The end-to-end test proves the file holds the
secret the deliveries are signed with.
"""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cli_support import KEY, run
from served_process import RUNNING

import fibric
from fibric import client, settings, store, timefmt, webhooks
from fibric.store import secretbox, webhook_store

Env = dict[str, str | None]
Delivery = tuple[bytes, dict[str, str]]
WEBHOOK = """\
apiVersion: fibric.io/v1
kind: Webhook
metadata:
  name: {name}
spec:
  url: {url}
  events: [plan.proposed]
"""


def signing_secrets(state: store.StateStore, tenant_id: str, name: str) -> list[str]:
    """The secrets the server signs a webhook's deliveries with, read from the store."""
    endpoint = webhook_store.read(state, tenant_id, state.get_object(tenant_id, "Webhook", name).id)
    return endpoint.signing_secrets(secretbox.for_store(state, settings.Settings()), {}, timefmt.now())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_apply_never_prints_the_secret_and_says_how_to_get_one(
        repo: Path, api_env: Env, state: store.StateStore, tenant: store.Tenant) -> None:
    result = run(["apply", "-f", str(repo / "webhook.yaml")], api_env)

    assert result.exit_code == 0, result.output
    [secret] = signing_secrets(state, tenant.id, "ops-channel")
    assert secret.startswith("whsec_")
    assert "whsec_" not in result.stdout and "whsec_" not in result.stderr
    assert result.stdout == "webhook/ops-channel created\n"
    webhook_id = state.get_object(tenant.id, "Webhook", "ops-channel").id
    assert "webhook/ops-channel: a signing secret was created; it is not printed" in result.stderr
    assert f"POST /v1/webhooks/{webhook_id}/rotate_secret" in result.stderr

    # the advice works: rotation shows a new secret once, and the one nobody saw stops signing now
    with client.Client(str(api_env["FIBRIC_URL"]), str(api_env["FIBRIC_KEY"])) as api:
        rotated = api.rotate_webhook_secret(webhook_id, grace_period_seconds=0)["signing_secret"]
    assert signing_secrets(state, tenant.id, "ops-channel") == [rotated]


def test_apply_writes_the_secret_to_a_file_only_its_owner_reads(
        repo: Path, api_env: Env, state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> None:
    folder = tmp_path / "ci" / "secrets"

    result = run(["apply", "-f", str(repo), "--secrets-out", str(folder)], api_env)

    assert result.exit_code == 0, result.output
    written = folder / "webhook-ops-channel.secret"
    secret = written.read_text(encoding="utf-8")
    assert signing_secrets(state, tenant.id, "ops-channel") == [secret]
    assert (mode(written), mode(folder)) == (0o600, 0o700)
    assert [p.name for p in folder.iterdir()] == [written.name]  # other kinds have no secret
    assert secret not in result.stdout and secret not in result.stderr
    assert "webhook/ops-channel created" in result.stdout.splitlines()
    assert f"webhook/ops-channel signing secret written to {written} (mode 0600)" in result.stderr

    # re-applied: nothing new, the file stays as it is
    again = run(["apply", "-f", str(repo), "--secrets-out", str(folder)], api_env)
    assert again.exit_code == 0 and "secret" not in again.output
    assert written.read_text(encoding="utf-8") == secret


def test_a_secret_file_that_was_there_is_made_private_before_the_secret_goes_in(
        repo: Path, api_env: Env, state: store.StateStore, tenant: store.Tenant, tmp_path: Path) -> None:
    stale = tmp_path / "webhook-ops-channel.secret"
    stale.write_text("an older webhook's secret, and longer than the new one will be")
    stale.chmod(0o644)

    result = run(["apply", "-f", str(repo / "webhook.yaml"), "--secrets-out", str(tmp_path)], api_env)

    assert result.exit_code == 0, result.output
    assert mode(stale) == 0o600
    assert [stale.read_text(encoding="utf-8")] == signing_secrets(state, tenant.id, "ops-channel")


def test_apply_changes_nothing_when_the_secrets_folder_cannot_be_made(
        repo: Path, api_env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    result = run(["apply", "-f", str(repo), "--secrets-out", str(blocker / "secrets")], api_env)

    assert result.exit_code == 2
    assert f"--secrets-out {blocker / 'secrets'}: cannot create it" in result.stderr
    assert run(["get", "webhooks", "-o", "json"], api_env).stdout.strip() == "[]"


@contextmanager
def receiving() -> Iterator[tuple[str, queue.Queue[Delivery]]]:
    """An HTTP receiver on loopback that answers 200 and queues each (body, headers) it is sent."""
    got: queue.Queue[Delivery] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.put((self.rfile.read(int(self.headers.get("Content-Length") or 0)), dict(self.headers)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.1)


def verify_a_test_delivery(api: client.Client, got: queue.Queue[Delivery], name: str, secret: str) -> None:
    [webhook] = [w for w in api.list_webhooks() if w["name"] == name]
    api.test_webhook(webhook["id"])
    body, headers = got.get(timeout=20)
    assert webhooks.verify(body, headers["Fibric-Signature"], secret)["type"] == "webhook.test"


def test_serve_and_apply_keep_secrets_out_of_every_stream_and_sign_with_them(tmp_path: Path) -> None:
    data, specs_dir, out = tmp_path / "data", tmp_path / "specs", tmp_path / "ci-secrets"
    specs_dir.mkdir()
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    with receiving() as (url, got), stdout.open("w") as out_file, stderr.open("w") as err_file:
        (specs_dir / "hook.yaml").write_text(WEBHOOK.format(name="ops-hook", url=url))
        process = subprocess.Popen(
            [sys.executable, "-m", "fibric.cli", "serve", "--port", "0", "--data-dir", str(data),
             "--specs", str(specs_dir), "--watch"],
            cwd=tmp_path, env={**environ, "FIBRIC_WEBHOOKS_ALLOW_PRIVATE": "1"},
            stdout=out_file, stderr=err_file, text=True)
        try:
            wait_until(lambda: RUNNING.search(stderr.read_text()) or process.poll() is not None, 60, "server")
            log = stderr.read_text()
            running, key = RUNNING.search(log), KEY.search(log)
            assert running and key, log

            # serve --specs: the secret is in the data dir, 0600; the log says where
            written = data.absolute() / "secrets" / "webhook-default-ops-hook.secret"
            from_serve = written.read_text(encoding="utf-8")
            assert (mode(written), mode(written.parent)) == (0o600, 0o700)
            assert (f"webhook/ops-hook: a signing secret was created and written to {written} (mode 0600)"
                    in log)
            with client.Client(running.group(1), key.group(0)) as api:
                verify_a_test_delivery(api, got, "ops-hook", from_serve)

                # serve --watch: a webhook added to the folder later gets its file too
                (specs_dir / "later.yaml").write_text(WEBHOOK.format(name="later-hook", url=url))
                later = written.with_name("webhook-default-later-hook.secret")
                wait_until(later.exists, 30, "secret file from the watcher")
                time.sleep(0.2)  # written just after it was created
                from_watch = later.read_text(encoding="utf-8")
                verify_a_test_delivery(api, got, "later-hook", from_watch)

                # apply --secrets-out against the same server
                spec = tmp_path / "ci-hook.yaml"
                spec.write_text(WEBHOOK.format(name="ci-hook", url=url))
                applied = run(["apply", "-f", str(spec), "--secrets-out", str(out)],
                              {"FIBRIC_URL": running.group(1), "FIBRIC_KEY": key.group(0)})
                assert applied.exit_code == 0, applied.output
                from_apply = (out / "webhook-ci-hook.secret").read_text(encoding="utf-8")
                verify_a_test_delivery(api, got, "ci-hook", from_apply)
                assert from_apply not in applied.stdout and from_apply not in applied.stderr
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    streams = stdout.read_text() + stderr.read_text()
    assert code == 0, streams
    for secret in (from_serve, from_watch, from_apply):
        assert secret.startswith("whsec_") and secret not in streams
    assert "whsec_" not in streams
    [banner] = [line for line in streams.splitlines() if f"fibric {fibric.__version__}: store=" in line]
    assert f"store=sqlite:{data.absolute() / 'state.db'}" in banner and "policy_engine=embedded" in banner
