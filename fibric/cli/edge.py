"""Where errors leave the CLI: exit codes and messages, never a traceback for expected failures.

The core and the client raise Fibric's error tree (fibric/errors.py,
`client.ApiError`); this module is the one place they become what a shell
sees. Exit code 2 means "bad input, fix it" (a spec problem, a 400), 1 means
anything else (not found, conflict, unreachable), like kubectl.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

import click

from fibric import client, errors

if TYPE_CHECKING:
    from fibric import store

BAD_INPUT = 2
FAILED = 1


class Failure(click.ClickException):
    """Something failed that fixing the input will not fix (not found, conflict, unreachable)."""

    exit_code = FAILED


class BadInput(click.ClickException):
    """The input can never succeed as given: fix it and retry."""

    exit_code = BAD_INPUT


class SpecFailure(click.ClickException):
    """Spec problems, one `file:line:col: field: message` line each, so editors and CI can jump to them."""

    exit_code = BAD_INPUT

    def __init__(self, problems: Iterable[errors.SpecProblem], summary: str = "") -> None:
        self.problems = list(problems)
        count = len(self.problems)
        self.summary = summary or f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(self.summary)

    def show(self, file: IO[Any] | None = None) -> None:
        for problem in self.problems:
            click.echo(str(problem), err=True)
        click.echo(f"Error: {self.summary}", err=True)


def failure(error: errors.FibricError, *, always_bad_input: bool = False) -> click.ClickException:
    """The click exception for one of our errors.

    `always_bad_input` gives every error exit code 2, for commands whose exit 1
    means something else (diff: drift).
    """
    if isinstance(error, errors.SpecInvalid):
        return SpecFailure(error.problems)
    bad_input = isinstance(error, client.ApiError) and error.status in (400, 413)
    return BadInput(str(error)) if bad_input or always_bad_input else Failure(str(error))


def warn(problems: Iterable[errors.SpecProblem]) -> None:
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


def open_store(location: str) -> store.StateStore:
    """The state store at `location`; an unusable data dir is a message, not a traceback."""
    from fibric import store  # the server's store: loaded by the commands that open it, not by all

    try:
        return store.open_store(location)
    except store.OPEN_ERRORS as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Failure(f"cannot open the state store at {location}: {reason}") from e
