"""Desired state as YAML: the four kinds, their loader and set-level checks."""

from fibric.specs.checks import Report, check_models, check_set
from fibric.specs.dump import document_data, to_yaml
from fibric.specs.inline_files import resolve
from fibric.specs.loader import Loaded, Source, format_path, load_paths, load_text, validate_data
from fibric.specs.models import (
    API_VERSION,
    KINDS,
    WEBHOOK_EVENTS,
    Connector,
    Document,
    Operator,
    Policy,
    Webhook,
    build,
    kind_from_alias,
)
from fibric.specs.schema import json_schema

__all__ = [
    "API_VERSION",
    "KINDS",
    "WEBHOOK_EVENTS",
    "Connector",
    "Document",
    "Loaded",
    "Operator",
    "Policy",
    "Report",
    "Source",
    "Webhook",
    "build",
    "check_models",
    "check_set",
    "document_data",
    "format_path",
    "json_schema",
    "kind_from_alias",
    "load_paths",
    "load_text",
    "resolve",
    "to_yaml",
    "validate_data",
]
