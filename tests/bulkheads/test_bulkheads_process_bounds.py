"""The per-process bounds come from the environment: a bad value stops `serve` naming it, a good one is used.

FIBRIC_RUN_CONCURRENCY (operator runs at once), FIBRIC_WEBHOOKS_CONCURRENCY
(deliveries in flight) and FIBRIC_SLOW_THREADS (the API's slow pool) are read
once by Settings.from_env; `fibric serve` refuses a value that is not a whole
number of at least 1 with exit code 2 and the variable's name, and the
system `build` makes runs the router and the dispatcher with the values given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fibric import cli, settings, system
from fibric.cli import serve
from fibric.controller import dispatch

BOUNDS = ["FIBRIC_RUN_CONCURRENCY", "FIBRIC_WEBHOOKS_CONCURRENCY", "FIBRIC_SLOW_THREADS"]


@pytest.fixture
def umask_kept() -> Iterator[None]:
    """`serve` sets this process's umask first thing; the tests after this one keep theirs."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.mark.parametrize("variable", BOUNDS)
@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
@pytest.mark.usefixtures("umask_kept")
def test_a_bad_bound_stops_serve_with_the_variables_name(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable} must be a whole number, at least 1, not '{value}'$"):
        settings.Settings.from_env({variable: value})

    result = CliRunner().invoke(cli.cli, ["serve", "--data-dir", str(tmp_path / "data")],
                                env={variable: value})

    assert result.exit_code == 2, result.output
    assert f"{variable} must be a whole number, at least 1, not '{value}'" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_unset_bounds_keep_their_defaults() -> None:
    config = settings.Settings.from_env({})
    assert (config.bulkheads.run_concurrency, config.webhooks.concurrency, config.server.slow_threads) == (
        4, 16, 40)


def test_good_bounds_are_what_the_system_runs_with(tmp_path: Path) -> None:
    config = settings.Settings.from_env({
        "FIBRIC_DATA_DIR": str(tmp_path / "data"), "FIBRIC_RUN_CONCURRENCY": "7",
        "FIBRIC_WEBHOOKS_CONCURRENCY": " 3 ", "FIBRIC_SLOW_THREADS": "5", "FIBRIC_TENANT_RUNS": "2"})

    with system.build(config) as running:
        [dispatcher] = [s for s in running.controller.services if isinstance(s, dispatch.Dispatcher)]
        assert running.router.concurrency == 7
        assert running.router.tenant_runs == 2
        assert dispatcher.config.concurrency == 3

    line = serve.banner(config)
    assert "process_caps=deliveries:3,runs:7" in line
    assert "slow_threads=5" in line
