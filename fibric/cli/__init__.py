"""The `fibric` command line: a thin adapter over the client and the core (see root.py)."""

from fibric.cli.root import cli, main

__all__ = ["cli", "main"]
