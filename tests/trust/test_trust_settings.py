"""The installation's side of the wall: the allowlist and the catalog, as an operator writes them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from click.testing import CliRunner

from fibric import errors, settings, trust
from fibric.cli import root


def test_the_allowlist_takes_names_wildcards_addresses_and_networks() -> None:
    egress = trust.Egress.parse(
        ["orders.internal", "*.corp.example", "127.0.0.1", "10.0.0.0/8", " ", "[::1]"])
    assert egress.allows_host("orders.internal") and egress.allows_host("ORDERS.internal.")
    assert egress.allows_host("mcp.corp.example") and not egress.allows_host("corp.example.evil")
    assert egress.allows_host("127.0.0.1") and egress.allows_host("0x7f000001")  # any spelling of it
    assert egress.allows_host("[::1]") and egress.allows_address(ipaddress.ip_address("10.2.3.4"))
    assert not egress.allows_host("127.0.0.2") and not egress.allows_host("192.168.1.1")
    egress.check_url("http://10.9.9.9:9000/mcp")  # http too, inside an allowed network
    with pytest.raises(trust.Refused, match="private"):
        egress.check_url("https://192.168.1.1/mcp")
    with pytest.raises(trust.Refused, match="https"):
        egress.check_url("http://mcp.example.com/mcp")


@pytest.mark.parametrize("entry", ["not a host", "http://x", "10.0.0.0/33", "-bad-.com"])
def test_a_bad_allowlist_entry_names_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="FIBRIC_EGRESS_ALLOW"):
        trust.Egress.parse([entry])


def test_the_allowlist_comes_from_the_flag_or_the_variable() -> None:
    config = settings.Settings.from_env({"FIBRIC_EGRESS_ALLOW": "a.internal, 10.0.0.0/8"})
    assert config.trust.egress_allow == ("a.internal", "10.0.0.0/8")
    flagged = settings.Settings.from_env({"FIBRIC_EGRESS_ALLOW": "a.internal"}, egress_allow=("b.internal",))
    assert flagged.trust.egress_allow == ("b.internal",)


def test_a_catalog_problem_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("connectors:\n  orders:\n    stdio: {command: python}\n"
                    "  Bad_Name:\n    stdio: {command: x}\n"
                    "  both:\n    stdio: {command: x}\n    http: {url: 'https://x.example/mcp'}\n"
                    "  typo:\n    stdio: {comand: x}\n", encoding="utf-8")
    with pytest.raises(errors.SpecInvalid) as caught:
        trust.Catalog.load(path)
    shown = [str(p) for p in caught.value.problems]
    assert shown[0].startswith(f"{path}:4:3: connectors.Bad_Name")
    assert any(s.startswith(f"{path}:6:3: connectors.both") and "exactly one" in s for s in shown)
    assert any(s.startswith(f"{path}:10:") and "unknown field" in s for s in shown)


def test_serve_refuses_a_bad_catalog_or_allowlist_with_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("connectors: [orders]\n", encoding="utf-8")
    runner = CliRunner()
    bad_catalog = runner.invoke(root.cli, ["serve", "--data-dir", str(tmp_path / "d"),
                                           "--connector-catalog", str(path)])
    assert bad_catalog.exit_code == 2 and "connector catalog" in bad_catalog.output
    missing = runner.invoke(root.cli, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--connector-catalog", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    bad_entry = runner.invoke(root.cli, ["serve", "--data-dir", str(tmp_path / "d"), "--egress-allow", "a b"])
    assert bad_entry.exit_code == 2 and "FIBRIC_EGRESS_ALLOW" in bad_entry.output
