"""LLM routes: the config file, its validation errors, and which tenant may use which route."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibric import proposers
from fibric.settings import LlmSettings, Settings

ROUTE = {"base_url": "https://api.example.com/v1", "model": "gpt-4o-mini", "api_key_env": "EXAMPLE_KEY",
         "tenants": ["t_acme"]}


def test_routes_file_in_yaml_is_read_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n"
        "  openai:\n"
        "    base_url: https://api.example.com/v1\n"
        "    model: gpt-4o-mini\n"
        "    api_key_env: EXAMPLE_KEY\n"
        "    tenants: '*'\n"
        "    timeout_seconds: 20\n", encoding="utf-8")

    llm = Settings.from_env({"FIBRIC_LLM_ROUTES_FILE": str(path)}).llm
    proposer = proposers.for_model("openai", "t_any", llm, environ={"EXAMPLE_KEY": "k"})

    assert llm.routes_file == path
    assert isinstance(proposer, proposers.LlmProposer)
    assert proposer.name == "llm:openai"


def test_routes_file_in_json(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text('{"routes": {"local": {"base_url": "http://127.0.0.1:11434/v1", "model": "llama3",'
                    ' "tenants": ["t_acme"]}}}', encoding="utf-8")

    llm = LlmSettings.from_env({"FIBRIC_LLM_ROUTES_FILE": str(path)})
    proposer = proposers.for_model("local", "t_acme", llm, environ={})

    assert proposer.name == "llm:local"


@pytest.mark.parametrize(("text", "message"), [
    ("routes: [a", "cannot read"),
    ("openai: {}", "expected a mapping with one key, 'routes'"),
    ("routes: {}\nextra: 1", "expected a mapping with one key, 'routes'"),
])
def test_an_unreadable_routes_file_fails_start_up(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ValueError, match=message):
        LlmSettings.from_env({"FIBRIC_LLM_ROUTES_FILE": str(path)})


def test_a_missing_routes_file_fails_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"FIBRIC_LLM_ROUTES_FILE .*nope\.yaml: cannot read"):
        LlmSettings.from_env({"FIBRIC_LLM_ROUTES_FILE": str(tmp_path / "nope.yaml")})


@pytest.mark.parametrize(("route", "message"), [
    ({**ROUTE, "base_url": "api.example.com"}, "routes.openai.base_url: String should match pattern"),
    ({**ROUTE, "api_key": "sk-123"}, "routes.openai.api_key: unknown field"),
    ({k: v for k, v in ROUTE.items() if k != "model"}, "routes.openai.model: Field required"),
    ({k: v for k, v in ROUTE.items() if k != "tenants"}, "routes.openai.tenants: Field required"),
    ({**ROUTE, "timeout_seconds": 0}, "routes.openai.timeout_seconds: Input should be greater than 0"),
    ({**ROUTE, "max_retries": 50}, "routes.openai.max_retries: Input should be less than or equal to 10"),
    ({**ROUTE, "api_key_env": "not a var"}, "routes.openai.api_key_env: String should match pattern"),
    ("https://api.example.com", "routes.openai: Input should be a valid dictionary"),
])
def test_bad_routes_are_named_by_field(route: object, message: str) -> None:
    llm = LlmSettings(routes={"openai": route})

    with pytest.raises(proposers.ProposalError) as caught:
        proposers.check_routes(llm)

    assert str(caught.value).startswith(f"LLM routes: {message}")


def test_rules_is_not_a_route_name() -> None:
    with pytest.raises(proposers.ProposalError, match=r"routes\.rules: a route name"):
        proposers.check_routes(LlmSettings(routes={"rules": ROUTE}))


def test_unknown_route_and_another_tenants_route_read_the_same() -> None:
    llm = LlmSettings(routes={"openai": ROUTE})
    expected = "model '{}' is neither 'rules' nor an LLM route configured for this tenant"

    with pytest.raises(proposers.ProposalError) as unknown:
        proposers.for_model("claude", "t_acme", llm, environ={"EXAMPLE_KEY": "k"})
    with pytest.raises(proposers.ProposalError) as other_tenant:
        proposers.for_model("openai", "t_other", llm, environ={"EXAMPLE_KEY": "k"})

    assert str(unknown.value) == expected.format("claude")
    assert str(other_tenant.value) == expected.format("openai")


def test_a_route_whose_key_variable_is_unset_is_an_error() -> None:
    llm = LlmSettings(routes={"openai": ROUTE})

    with pytest.raises(proposers.ProposalError,
                       match="LLM route 'openai': environment variable EXAMPLE_KEY is not set"):
        proposers.for_model("openai", "t_acme", llm, environ={})


def test_a_broken_route_fails_its_own_runs_only() -> None:
    llm = LlmSettings(routes={"openai": ROUTE, "broken": {**ROUTE, "base_url": "nope"}})

    assert proposers.for_model("openai", "t_acme", llm, environ={"EXAMPLE_KEY": "k"}).name == "llm:openai"
    with pytest.raises(proposers.ProposalError, match=r"routes\.broken\.base_url"):
        proposers.for_model("broken", "t_acme", llm, environ={"EXAMPLE_KEY": "k"})
