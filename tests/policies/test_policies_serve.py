"""`fibric serve` evaluates with the engine its settings name: embedded by default, OPA when configured.

The OPA case runs the real `fibric serve` process against the OPA-protocol
server of these tests: applying the example specs must push the example
policy to it, which is how a platform engineer sees that the setting took.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fake_opa import FakeOpa

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"
TIMEOUT = 30.0


def serve(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    return subprocess.Popen(
        [sys.executable, "-m", "fibric.cli", "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--specs", str(EXAMPLES), "--connector-catalog", str(EXAMPLES.parent / "catalog.yaml")],
        cwd=tmp_path, env={**clean, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def test_serve_pushes_policies_to_the_configured_opa_server(tmp_path: Path, fake_opa: FakeOpa) -> None:
    process = serve(tmp_path, FIBRIC_POLICY_ENGINE="opa", FIBRIC_OPA_URL=fake_opa.url)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not fake_opa.modules:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.1)
        # The version is mounted under its own package; the example's rules are what was pushed.
        assert any("notify_cap := 3" in module for module in fake_opa.modules.values()), fake_opa.requests
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr


def test_an_opa_engine_without_a_url_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    process = serve(tmp_path, FIBRIC_POLICY_ENGINE="opa")
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 2
    assert "policies.engine 'opa' needs policies.url" in stderr
    assert "Traceback" not in stderr
