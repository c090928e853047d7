"""Requests/s with metrics and JSON logs on, as a ratio to the same server with them off, in the same run.

Three servers run as real subprocesses on loopback, each `create_app` over a
fresh SQLite store seeded with the same specs (as bench/bench_api.py's
fibric server), rate ceilings lifted:

- off: FIBRIC_METRICS=off, text logs at WARNING (no access line is written);
- metrics: FIBRIC_METRICS=on (/metrics served, a histogram sample per
  request), logs as off;
- metrics+json: metrics on, and FIBRIC_LOG_FORMAT=json at INFO into a file:
  an access line per request (fibric.access), uvicorn's own access log off,
  as `fibric serve` runs with JSON logs.

The load is bench_api.py's keep-alive client (GET /v1/operators, POST
/v1/events with new keys) over --concurrency connections. The servers run
at once and take turns, --rounds times, each round in a new order; each
figure is the median over the rounds, and ratios are to `off` in the same
round. At the end the metrics+json server's
/metrics is scraped once and its request count checked against what was
sent, and its log's lines are counted.

Run: python bench/bench_observability.py [--requests 1000] [--concurrency 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import uvicorn
from prometheus_client import parser

sys.path.insert(0, str(Path(__file__).parent))
import _servers
import bench_api

VARIANTS = ("off", "metrics", "metrics+json")


def serve(port: int, variant: str, data_dir: Path) -> None:
    """Fibric's app over a fresh store, observed as `variant` says; the key goes to DATA_DIR/key."""
    from fibric import logs, metrics, settings, store
    from fibric.api import create_app, protocol

    json_logs = variant == "metrics+json"
    if json_logs:
        logs.configure(logs.LogSettings.from_env({"FIBRIC_LOG_FORMAT": "json"}),
                       stream=(data_dir.parent / f"{data_dir.name}.log").open("a", encoding="utf-8"))
    else:
        logs.configure(logs.LogSettings(), level=logging.WARNING)
    state = store.open_store(data_dir)
    tenant = state.create_tenant("bench", "rs_fibric")
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    lifted = settings.RateLimitSettings(reads_per_minute=10**9, writes_per_minute=10**9,
                                        events_per_minute=10**9)
    mode = metrics.Mode.from_env({"FIBRIC_METRICS": "off" if variant == "off" else "on"})
    app = create_app(settings.Settings(store=settings.StoreSettings(data_dir=data_dir), rate_limits=lifted),
                     state, metrics=metrics.Metrics(mode))
    (data_dir / "key").write_text(secret)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                http=protocol.FibricH11Protocol, h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES)


def scenarios(key: str, count: int, round_: int) -> dict[str, list[bytes]]:
    return {
        "GET /v1/operators": [bench_api.raw("GET", "/v1/operators", key)] * count,
        "POST /v1/events": [bench_api.raw("POST", "/v1/events", key, bench_api.event(f"r{round_}-{n}"))
                            for n in range(count)],
    }


def counted(url: str) -> float:
    """The /v1 requests /metrics says the server answered."""
    text = httpx.get(url + "/metrics", timeout=30).text
    samples = [s for family in parser.text_string_to_metric_families(text) for s in family.samples]
    return sum(s.value for s in samples if s.name == "fibric_http_request_duration_seconds_count"
               and s.labels["route"].startswith("/v1/"))


Rates = dict[str, dict[str, float]]  # variant -> scenario -> requests/s


def bench(count: int, concurrency: int, rounds: int) -> tuple[list[Rates], dict[str, float]]:
    """Each round's requests/s by variant and scenario, and what the metrics+json server recorded.

    The three servers run at once and take turns, a round at a time, in a new
    order each round: on a shared machine, what the neighbours do then falls
    on all three alike, and each round's ratios compare moments close together.
    """
    checks: dict[str, float] = {}
    results: list[Rates] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        urls, keys = {}, {}
        for variant in VARIANTS:
            data = Path(tmp) / variant.replace("+", "-")
            server = _servers.python_server(Path(__file__), variant, str(data))
            _, urls[variant] = servers.enter_context(server)
            keys[variant] = (data / "key").read_text()
            bench_api.seed(urls[variant], keys[variant])
            for requests in scenarios(keys[variant], 100, -1).values():  # warm-up
                asyncio.run(bench_api.load(urls[variant], requests, concurrency, {200, 202}))
        for round_ in range(rounds):
            rates: Rates = {}
            turn = round_ % len(VARIANTS)
            for variant in VARIANTS[turn:] + VARIANTS[:turn]:
                rates[variant] = {name: asyncio.run(bench_api.load(urls[variant], requests, concurrency,
                                                                   {200, 202}))
                                  for name, requests in scenarios(keys[variant], count, round_).items()}
            results.append(rates)
        checks["requests counted"] = counted(urls["metrics+json"])
        log = Path(tmp) / "metrics-json.log"
        checks["log lines"] = len(log.read_text(encoding="utf-8").splitlines())
        checks["log bytes"] = log.stat().st_size
    return results, checks


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1].isdigit():  # a server, as _servers.python_server starts it
        serve(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
        return
    options = argparse.ArgumentParser(description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_argument("--requests", type=int, default=1000, help="per scenario, server and round")
    options.add_argument("--concurrency", type=int, default=16)
    options.add_argument("--rounds", type=int, default=5)
    args = options.parse_args()
    rounds, checks = bench(args.requests, args.concurrency, args.rounds)
    print(f"{args.requests} requests per scenario and round over {args.concurrency} connections, median of "
          f"{args.rounds} rounds (requests/s; ratio = variant / off in the same round)")
    for name in rounds[0]["off"]:
        line = f"  {name:20} off {statistics.median(r['off'][name] for r in rounds):7.0f}"
        for variant in VARIANTS[1:]:
            rate = statistics.median(r[variant][name] for r in rounds)
            ratio = statistics.median(r[variant][name] / r["off"][name] for r in rounds)
            line += f"   {variant} {rate:7.0f} ratio {ratio:.2f}"
        print(line)
    sent = 2 * (args.rounds * args.requests + 100) + 1  # the rounds, the warm-up, the seeding apply
    print(f"  metrics+json: /metrics counted {checks['requests counted']:.0f} of the {sent} /v1 "
          f"requests sent; the log has {checks['log lines']:.0f} lines, "
          f"{checks['log bytes'] / max(1, checks['log lines']):.0f} bytes each")


if __name__ == "__main__":
    main()
