"""The client's lifecycle as a role app (:class:`ferry.roles.RoleApp`): ``ferry client`` and
``ferry client --check``."""

from __future__ import annotations

import asyncio
import contextlib

from rich.markup import escape as rich_escape

from ferry.client.app import ClientApp, ClientConfig
from ferry.client.messages import Catalogue
from ferry.client.self_check import StepOutcome, StepResult, format_result, format_summary
from ferry.client.status import format_status
from ferry.errors import FerryError
from ferry.roles import console


class ClientRole:
    """A client whose start ends once its session to the egress is up (it prints each failed
    attempt meanwhile), and which then prints its status every ``status_every`` seconds."""

    def __init__(self, config: ClientConfig, words: Catalogue, status_every: float = 0.0) -> None:
        """``status_every``: seconds between status lines; 0 = none."""
        self.config = config
        self._words = words
        self._status_every = status_every
        self.app: ClientApp | None = None
        """The client, once :meth:`start` made it."""

    def _session_failed(self, exc: FerryError) -> None:
        waiting = self._words.text("cli.not_yet", detail=exc)
        console.print(f"[yellow]{rich_escape(waiting)}[/]")

    async def start(self) -> dict[str, object]:
        """Open the proxy port (and page) and wait for the first session to the egress; a
        :class:`~ferry.errors.LocalError` if the proxy port or the browser engine fails."""
        words = self._words
        self.app = client = ClientApp(self.config, on_session_failure=self._session_failed)
        proxy_host, proxy_port = await client.start()
        console.print(words.text("cli.proxy", address=f"{proxy_host}:{proxy_port}"))
        if client.page_url:
            console.print(words.text("cli.page", url=client.page_url))
        stack_status = client.webrtc.stack_status()
        if stack_status.stack == "browser":
            console.print(f"WebRTC: browser engine ({stack_status.detail})")
        else:
            console.print(f"WebRTC: Python ({stack_status.detail})")
            console.print(f"[yellow]Warning:[/] {stack_status.warning}")
        console.print(words.text("cli.looking"))
        await client.wait_for_session()
        console.print(f"[green]{words.text('cli.connected')}[/]")
        return {
            "proxy": f"{proxy_host}:{proxy_port}",
            "broker": self.config.broker_url,
            "egress": self.config.tunnel.bridge.url,
            **({"ui": client.page_url} if client.page_url else {}),
            "webrtc": client.webrtc.stack_status().stack,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Serve the proxy until ``stop`` (the reconnect loop keeps a session up)."""
        client = self.app
        assert client is not None and client.tunnel is not None
        while self._status_every > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._status_every)
            if not stop.is_set() and client.tunnel is not None:
                status = format_status(client.tunnel.status(), self._words, client.nat.behaviour)
                console.print(status)
        await stop.wait()

    def stop_now(self) -> None:
        """Nothing to drain."""

    async def close(self) -> None:
        """Close the page, the proxy port, the tunnel and the browser engine."""
        if self.app is not None:
            await self.app.close()
            self.app = None


class ClientCheckRole:
    """``ferry client --check``: :meth:`start` runs the self-check and prints each step;
    :attr:`failed` says whether one failed. It has nothing to run after."""

    def __init__(self, config: ClientConfig, words: Catalogue) -> None:
        self.config = config
        self._words = words
        self._app: ClientApp | None = None
        self.failed = False
        """A step failed."""
        self._shown = 0

    def _show(self, result: StepResult) -> None:
        self._shown += 1
        colour = {"ok": "green", "failed": "bold red", "bypassed": "yellow"}.get(
            result.outcome.value, "dim"
        )
        text = format_result(result, self._shown, self._words)
        console.print(f"[{colour}]{rich_escape(text)}[/]")

    async def start(self) -> dict[str, object]:
        """Run every step in order; the summary is printed last."""
        self._app = ClientApp(self.config)
        console.print(f"[bold]{self._words.text('cli.check_heading')}[/]")
        results = await self._app.self_check().run(self._show)
        self.failed = any(result.outcome is StepOutcome.FAILED for result in results)
        console.print(f"[bold]{rich_escape(format_summary(results, self._words))}[/]")
        return {}

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing: the check is done."""

    def stop_now(self) -> None:
        """Nothing to drain."""

    async def close(self) -> None:
        """Close what the check opened."""
        if self._app is not None:
            await self._app.close()
            self._app = None
