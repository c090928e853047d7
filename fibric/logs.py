"""How `fibric serve` logs: text for people (the default), or one JSON object per line for machines.

`FIBRIC_LOG_FORMAT=json` switches the root handler's formatter to `JsonFormatter`:
each record becomes `{"time", "level", "logger", "message", ...}` plus the
fields its call passed as `extra` (the access log's request_id, tenant_id,
route, method, status, duration_ms; a disposal's plan_id, idempotency_key,
decision, outcome, receipt_id), and `exception` with the traceback when
there is one. Two loggers carry the structured lines (docs/operations.md#logs):
`fibric.access`, one line per request (fibric/api/access.py), and
`fibric.disposal`, one line per action the executor disposes of.

Nothing Fibric logs carries an API key, a signing secret or a request body;
as a second line of defence both formats blank anything shaped like one
(`sk_live_...`, `whsec_...`) before it is written.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT = "%(levelname)s:     %(name)s: %(message)s"
SECRET = re.compile(r"\b(sk_live_|whsec_)[A-Za-z0-9+/=_-]+")
# What every LogRecord has; anything else on a record came from `extra`.
STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"  # FIBRIC_LOG_FORMAT: text | json

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LogSettings:
        """The format `FIBRIC_LOG_FORMAT` names (default text); ValueError naming the variable otherwise."""
        value = environ.get("FIBRIC_LOG_FORMAT", "").strip().lower() or "text"
        if value not in FORMATS:
            raise ValueError(f"FIBRIC_LOG_FORMAT must be text or json, not {value!r}")
        return cls(value)


def redact(text: str) -> str:
    """`text` with anything shaped like an API key or a signing secret blanked."""
    return SECRET.sub(r"\1[redacted]", text) if "sk_live_" in text or "whsec_" in text else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD and not key.startswith("_") and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(line, default=str, separators=(",", ":")))


def formatter(config: LogSettings) -> logging.Formatter:
    return JsonFormatter() if config.format == "json" else TextFormatter(TEXT)


def configure(config: LogSettings, *, stream: TextIO | None = None,
              level: int = logging.INFO) -> logging.Handler:
    """Replace the root logger's handlers with one writing `config`'s format to `stream` (stderr).

    Run uvicorn with `log_config=None` and `access_log=False` beside it: its
    own loggers then reach this handler too, and `fibric.access` is the
    access log (uvicorn's would print each request a second time).
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(config))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
