"""How every ``ferry ROLE`` command runs its role: one app object per role and
:func:`run_role`.

A role app (:class:`RoleApp`) is started, runs until asked to stop, and is closed; the
command line only builds its config. :func:`run_role` owns what every role shares: the event
loop, the signals (SIGINT and SIGTERM ask the role to stop; SIGINT, or a second SIGTERM, asks
it to stop at once, which only the egress's drain distinguishes), the ``--ready-file`` and the
exit status (0 after a stop; 1 with one line on the terminal when a :class:`FerryError`
ends the role). Tests run the same apps in one event loop, without signals or processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from ferry.errors import FerryError

console = Console(stderr=True, highlight=False)
"""Where the roles tell their operator what they are doing (stderr; stdout carries only what
scripts read, such as the egress's bridge line)."""


class RoleApp(Protocol):
    """One role's lifecycle: :meth:`start`, then :meth:`run` until ``stop``, then :meth:`close`."""

    async def start(self) -> dict[str, object]:
        """Start the role; returns what its ready file says once it is usable. May be
        cancelled (a stop while starting); :meth:`close` follows either way."""

    async def run(self, stop: asyncio.Event) -> None:
        """Do the role's work until ``stop`` is set (the egress drains after it)."""

    def stop_now(self) -> None:
        """Stop without waiting (SIGINT, or a second SIGTERM): the egress ends its drain.
        Roles with nothing to drain ignore it."""

    async def close(self) -> None:
        """Release every port, task and engine, whatever :meth:`start` got to (idempotent)."""


class EventLoop(StrEnum):
    """Which asyncio event loop a role runs on (``--event-loop``)."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def new_event_loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for ``choice``'s event loop; asyncio's own if uvloop is not installed.

    uvloop cut the CPU per MB of the client by about a quarter and of the volunteer by about
    a fifth, and did not cost the egress anything (BENCHMARKS.md).
    """
    if choice is EventLoop.UVLOOP:
        try:
            import uvloop
        except ImportError:
            return asyncio.new_event_loop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def write_ready_file(path: Path | None, content: dict[str, object]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (rename), if a path was given."""
    if path is None:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


async def start_unless_stopped(role: RoleApp, stop: asyncio.Event) -> dict[str, object] | None:
    """``role.start()``, cancelled if ``stop`` is set first (then ``None``)."""
    starting = asyncio.create_task(role.start(), name="role-start")
    stopping = asyncio.create_task(stop.wait(), name="role-stop-while-starting")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    if stop.is_set() and (starting.cancelled() or starting.exception() is None):
        return None
    return starting.result()


async def serve_role(role: RoleApp, stop: asyncio.Event, ready_file: Path | None = None) -> None:
    """Start ``role``, write ``ready_file``, run until ``stop``, and close it in every case."""
    try:
        ready = await start_unless_stopped(role, stop)
        if ready is None:
            return
        write_ready_file(ready_file, ready)
        await role.run(stop)
    finally:
        await role.close()


def _install_signal_handlers(role: RoleApp, stop: asyncio.Event) -> None:
    def on_sigterm() -> None:
        if stop.is_set():
            role.stop_now()
        stop.set()

    def on_sigint() -> None:
        stop.set()
        role.stop_now()

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        loop.add_signal_handler(signal.SIGINT, on_sigint)


def run_role(
    role: RoleApp,
    *,
    name: str,
    ready_file: Path | None = None,
    event_loop: EventLoop = EventLoop.ASYNCIO,
) -> None:
    """Run ``role`` on a new ``event_loop`` until SIGINT or SIGTERM (see the module's
    docstring). A :class:`FerryError` prints ``ferry NAME: what went wrong`` and exits 1."""

    async def main() -> None:
        stop = asyncio.Event()
        _install_signal_handlers(role, stop)
        await serve_role(role, stop, ready_file)

    try:
        with asyncio.Runner(loop_factory=new_event_loop_factory(event_loop)) as runner:
            runner.run(main())
    except FerryError as exc:
        console.print(f"[bold red]ferry {name}:[/] {rich_escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
