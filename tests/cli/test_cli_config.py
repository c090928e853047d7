"""The configuration reference is the settings' own account of themselves, and serve's banner tells the truth.

docs/configuration.md is rendered from fibric/settings.py; these tests fail
when the page is stale, when a FIBRIC_* variable read anywhere in fibric/ is
missing from it, or when a flag it names is not the command's. The banner
names what a server runs with and keeps every credential of its URLs to itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import fibric
from fibric import cli, settings
from fibric.cli import serve

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"
VARIABLE = re.compile(r"\bFIBRIC_[A-Z0-9_]*[A-Z0-9]\b")


def documented() -> list[settings.Entry]:
    return [entry for _, entries in settings.reference() for entry in entries]


def test_the_committed_page_is_the_rendered_one() -> None:
    rendered = subprocess.run([sys.executable, "-m", "fibric.settings", "--markdown"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    assert rendered == settings.markdown()
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/configuration.md is stale: python -m fibric.settings --markdown > docs/configuration.md")


def test_every_variable_fibric_names_is_in_the_reference_once() -> None:
    named = {name for path in (ROOT / "fibric").rglob("*.py")
             for name in VARIABLE.findall(path.read_text(encoding="utf-8"))}
    listed = [entry.env for entry in documented() if entry.env]
    assert len(listed) == len(set(listed)), sorted(v for v in listed if listed.count(v) > 1)
    assert named - set(listed) == set()
    assert len(named) >= 45  # the grep found them all, not none
    page = PAGE.read_text(encoding="utf-8")
    assert all(f"`{name}`" in page for name in named)


def test_every_setting_has_a_meaning_and_a_default() -> None:
    entries = documented()
    assert {e.setting for e in entries} >= {"server.port", "store.url", "policies.engine", "reseller_id"}
    assert all(e.meaning.strip() and e.default.strip() for e in entries)


def test_the_flags_it_names_are_the_commands_flags() -> None:
    serve_flags = {opt for p in serve.serve.params for opt in p.opts if opt.startswith("--")}
    root_flags = {opt for p in cli.cli.params for opt in p.opts if opt.startswith("--")}
    named = {e.flag for e in documented() if e.flag}
    client = {e.flag for e in documented() if e.flag and e.setting == "fibric/cli/root.py"}
    assert serve_flags == named - client
    assert client <= root_flags


def test_a_setting_says_what_its_default_is() -> None:
    by_setting = {e.setting: e for e in documented()}
    assert by_setting["server.port"].default == "`8080`"
    assert by_setting["server.port"].env == "FIBRIC_PORT" and by_setting["server.port"].flag == "--port"
    assert by_setting["policies.workers"].default == "`0`: max(2, CPUs)"
    assert by_setting["store.url"].default == "SQLite in the data dir"
    assert "| `bulkheads.shutdown_seconds` | `FIBRIC_SHUTDOWN_SECONDS` |  | `10` |" in settings.markdown()


def test_the_banner_names_what_the_server_runs_with(tmp_path: Path) -> None:
    config = settings.Settings.from_env({"FIBRIC_DATA_DIR": str(tmp_path), "FIBRIC_POLICY_WORKERS": "3",
                                         "FIBRIC_RATE_LIMIT_WRITES": "77", "FIBRIC_HOST": "0.0.0.0"})

    line = serve.banner(config)

    assert "\n" not in line
    assert line.startswith(f"fibric {fibric.__version__}: ")
    for part in (f"store=sqlite:{tmp_path / 'state.db'}", f"ledger=ducklake:{tmp_path / 'ledger.ducklake'}",
                 f"ledger_data={tmp_path / 'ledger'}", "policy_engine=embedded", "policy_workers=3",
                 "listen=0.0.0.0:8080", "max_body_bytes=8388608",
                 "rate_limits=reads:1000,writes:77,events:600/min",
                 "rate_counters=process", "pools=executor:8,delivery:4,connectors:4,controller:4",
                 "tenant_caps=deliveries:4,connector_calls:16,runs:2"):
        assert part in line.split(), (part, line)


def test_the_banner_never_shows_a_credential() -> None:
    config = settings.Settings.from_env({
        "FIBRIC_STORE": "postgresql://u:secret@db.example:5433/fibric?sslmode=require&password=qsecret",
        "FIBRIC_LEDGER_CATALOG": "postgres:dbname=lake host=lakedb user=u password='cat secret'",
        "FIBRIC_LEDGER_DATA_PATH": "s3://AKIA:s3secret@bucket/ledger",
        "FIBRIC_REDIS_URL": "redis://:redissecret@redis:6379/0",
        "FIBRIC_POLICY_ENGINE": "opa", "FIBRIC_OPA_URL": "https://u:opasecret@opa:8181",
    })

    line = serve.banner(config)

    assert "secret" not in line and "u:" not in line and "AKIA" not in line, line
    for part in ("store=postgresql://db.example:5433/fibric",
                 "ledger='ducklake:postgres:dbname=lake host=lakedb'", "ledger_data=s3://bucket/ledger", "rate_counters=redis://redis:6379/0",
                 "policy_engine=opa:https://opa:8181"):
        assert part in line, (part, line)
