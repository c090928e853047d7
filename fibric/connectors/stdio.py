"""The stdio transport: an MCP server as a child process, with an explicit environment.

Why not the SDK's `stdio_client`: it always passes HOME, LOGNAME, SHELL,
TERM and USER through, while a connector's server must get exactly the
variables its spec names plus PATH (the control plane's secrets stay ours).
Owning the process also tells us the moment it dies and what it printed to
stderr, which become the connector's status.

Messages are newline-delimited JSON-RPC on stdin/stdout, as the MCP spec
says. Shutdown follows the spec too: close stdin, wait, then SIGTERM and
SIGKILL the child's process group; every wait is bounded and shielded, so a
cancelled connector never leaks a server process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress

import anyio
import anyio.abc
import anyio.streams.memory
from mcp import types as mcp_types
from mcp.shared.message import SessionMessage

from fibric import specs
from fibric.connectors import link as links

log = logging.getLogger(__name__)

MessageSender = anyio.streams.memory.MemoryObjectSendStream[SessionMessage | Exception]

EXIT_GRACE_SECONDS = 2.0  # after stdin closes, before SIGTERM
TERM_GRACE_SECONDS = 2.0  # after SIGTERM, before SIGKILL
MAX_LINE_BYTES = 64 * 1024 * 1024  # one JSON-RPC message; larger is a broken server
EXIT_POLL_SECONDS = 0.25


def child_environment(spec: specs.models.StdioTransport, environ: Mapping[str, str]) -> dict[str, str]:
    """Exactly the spec's variables, plus the control plane's PATH unless the spec sets one."""
    env = {"PATH": environ["PATH"]} if "PATH" in environ else {}
    env.update(spec.env)
    return env


def describe(spec: specs.models.StdioTransport) -> str:
    return "stdio: " + " ".join([spec.command, *spec.args])


@asynccontextmanager
async def open_stdio(
    spec: specs.models.StdioTransport, environ: Mapping[str, str]
) -> AsyncIterator[links.Link]:
    """Start the server and yield its link; on exit, stop it (and its children)."""
    try:
        # Shielded: a cancellation landing mid-spawn would leave a live, unreaped child.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                [spec.command, *spec.args],
                env=child_environment(spec, environ),
                cwd=spec.cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so we can stop its children too
            )
    except OSError as e:
        raise OSError(f"cannot start '{spec.command}': {e.strerror or e}") from e

    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    link = links.Link(read_stream, write_stream, describe(spec), pid=process.pid)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_read_stdout, process, link, read_writer)
            tg.start_soon(_write_stdin, process, link, read_writer, write_reader)
            tg.start_soon(_read_stderr, process, link)
            tg.start_soon(_watch_exit, process, link, read_writer)
            try:
                yield link
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process, link)
                tg.cancel_scope.cancel()
    finally:
        # Also reached when cancelled before the task group ran: never leave the child behind.
        with anyio.CancelScope(shield=True):
            await _stop(process, link)
        for stream in (read_writer, read_stream, write_stream, write_reader):
            stream.close()


async def _gone(
    process: anyio.abc.Process, link: links.Link, read_writer: MessageSender, reason: str
) -> None:
    """Mark the link closed *before* ending the read stream, so a caller woken by the end
    of the stream already sees the session as dead and waits for a fresh one."""
    with anyio.move_on_after(0.5):
        while process.returncode is None:
            await anyio.sleep(0.01)
        await link.stderr_done.wait()  # its last words explain the exit
    if process.returncode is not None:
        link.returncode = process.returncode
        reason = f"server exited with code {process.returncode}"
    link.close(reason)
    read_writer.close()


async def _read_stdout(process: anyio.abc.Process, link: links.Link, read_writer: MessageSender) -> None:
    if process.stdout is None:
        return
    buffer = b""
    reason = "server closed its stdout"
    try:
        async for chunk in process.stdout:
            buffer += chunk
            if len(buffer) > MAX_LINE_BYTES and b"\n" not in buffer:
                reason = f"server sent a line over {MAX_LINE_BYTES} bytes"
                break
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    await read_writer.send(_parse(line))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        pass
    finally:
        with anyio.CancelScope(shield=True):
            await _gone(process, link, read_writer, reason)


async def _write_stdin(
    process: anyio.abc.Process,
    link: links.Link,
    read_writer: MessageSender,
    write_reader: anyio.streams.memory.MemoryObjectReceiveStream[SessionMessage],
) -> None:
    if process.stdin is None:
        return
    try:
        async with write_reader:
            async for message in write_reader:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                await process.stdin.send(data.encode("utf-8"))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        await _gone(process, link, read_writer, "server stopped reading its stdin")


async def _read_stderr(process: anyio.abc.Process, link: links.Link) -> None:
    pending = b""
    try:
        if process.stderr is None:
            return
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async for chunk in process.stderr:
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    _keep(link, raw)
                pending = pending[-4096:]
        _keep(link, pending)
    finally:
        link.stderr_done.set()


def _keep(link: links.Link, raw: bytes) -> None:
    text = raw.decode("utf-8", "replace").rstrip()
    if text:
        link.stderr_tail.append(text[:500])
        log.debug("%s: %s", link.describe, text)


async def _watch_exit(process: anyio.abc.Process, link: links.Link, read_writer: MessageSender) -> None:
    # Not process.wait(): on 3.11 it also waits for pipe EOF, which a grandchild
    # holding the pipe can delay forever.
    while process.returncode is None:
        await anyio.sleep(EXIT_POLL_SECONDS)
    await _gone(process, link, read_writer, "server exited")


def _parse(line: bytes) -> SessionMessage | Exception:
    """One stdout line; a bad line is handed to the session as an error, not a crash."""
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as e:
        return ValueError(f"server wrote a line that is not JSON-RPC: {line[:200]!r} ({e})")


async def _stop(process: anyio.abc.Process, link: links.Link) -> None:
    """Close stdin, give the server a moment, then stop its whole process group (idempotent)."""
    if link.stopped:
        return
    link.stopped = True
    if process.stdin is not None:
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await process.stdin.aclose()
    if not await _exited(process, EXIT_GRACE_SECONDS):
        _signal_group(process, signal.SIGTERM)
        if not await _exited(process, TERM_GRACE_SECONDS):
            _signal_group(process, signal.SIGKILL)
            if not await _exited(process, TERM_GRACE_SECONDS):
                log.warning("MCP server %s (pid %s) survived SIGKILL", link.describe, process.pid)
    if link.returncode is None:
        link.returncode = process.returncode
    # Children the server left behind in its group would hold our pipes open.
    _signal_group(process, signal.SIGKILL)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await stream.aclose()
    with anyio.move_on_after(TERM_GRACE_SECONDS):
        await process.aclose()
    link.close(f"server stopped (exit code {process.returncode})")


async def _exited(process: anyio.abc.Process, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(0.02)
    return process.returncode is not None


def _signal_group(process: anyio.abc.Process, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
