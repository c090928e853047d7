"""`fibric serve` runs the dispatcher: a webhook created through the API is delivered, signed."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from webhook_support import Receiver

from fibric import webhooks

RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
KEY = re.compile(r"FIBRIC_KEY=(sk_live_[0-9a-f]+)")


class Served:
    def __init__(self, process: subprocess.Popen[str], url: str, key: str, lines: list[str],
                 reader: threading.Thread) -> None:
        self.process, self.url, self.key, self.lines, self.reader = process, url, key, lines, reader

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=20)
        self.reader.join(10)  # it closes the pipe at EOF
        return code


def serve(data_dir: Path, **env: str) -> Served:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    process = subprocess.Popen([sys.executable, "-m", "fibric.cli", "serve", "--port", "0",
                                "--data-dir", str(data_dir)], env={**environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        with process.stderr:
            for line in process.stderr:
                lines.append(line)
                for name, pattern in (("url", RUNNING), ("key", KEY)):
                    if match := pattern.search(line):
                        found[name] = match.group(1)
                if len(found) == 2:
                    ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(30)
    if len(found) != 2:
        process.kill()
        process.wait()
        reader.join(10)
        raise AssertionError("".join(lines))
    return Served(process, found["url"], found["key"], lines, reader)


def test_serve_delivers_a_test_event_signed(tmp_path: Path, receiver: Receiver) -> None:
    served = serve(tmp_path / "data", FIBRIC_WEBHOOKS_ALLOW_PRIVATE="1")
    try:
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.key}"}) as client:
            created = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["plan.proposed"]})
            assert created.status_code == 201, created.text
            hook = created.json()
            assert client.post(f"/v1/webhooks/{hook['id']}/test").status_code == 202
            [got] = receiver.wait_for(1, timeout=15)
            event = webhooks.verify(got.body, got.headers["Fibric-Signature"], hook["signing_secret"])
            assert event["type"] == "webhook.test"
        key_file = tmp_path / "data" / "secret.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert hook["signing_secret"].encode() not in (tmp_path / "data" / "state.db").read_bytes()
    finally:
        assert served.stop() == 0, "".join(served.lines)
    assert hook["signing_secret"] not in "".join(served.lines)  # never logged


def test_serve_refuses_a_loopback_webhook_without_the_development_setting(
    tmp_path: Path, receiver: Receiver
) -> None:
    served = serve(tmp_path / "data")
    try:
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.key}"}) as client:
            for target in (receiver.url, receiver.url.replace("http://", "https://")):
                response = client.post("/v1/webhooks", json={"url": target, "events": ["plan.proposed"]})
                assert response.status_code == 400, response.text
                assert [f["field"] for f in response.json()["error"]["fields"]] == ["url"]
    finally:
        assert served.stop() == 0, "".join(served.lines)
