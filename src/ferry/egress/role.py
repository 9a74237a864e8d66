"""The egress's lifecycle as a role app (:class:`ferry.roles.RoleApp`): ``ferry egress``.

A stop (the first SIGTERM) drains: new sessions are refused at once and open streams get up
to ``drain_seconds``; :meth:`EgressRole.stop_now` (SIGINT, or a second SIGTERM) ends the drain.
With a :class:`~ferry.egress.policy_reload.SettingsSource` the destination policy is read again
on SIGHUP.
"""

from __future__ import annotations

import asyncio
import signal

import typer
from prometheus_client import CollectorRegistry

from ferry.egress.policy_reload import PolicyReloader, SettingsSource
from ferry.egress.server import Egress, EgressConfig
from ferry.roles import console


class EgressRole:
    """An egress listening for volunteers until stopped, then draining."""

    def __init__(
        self,
        config: EgressConfig,
        *,
        settings: SettingsSource | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``settings``: where SIGHUP re-reads the policy from (``None``: no SIGHUP handler)."""
        self.config = config
        self._settings = settings
        self._registry = registry or CollectorRegistry()
        self._stop_now = asyncio.Event()
        self._reloading = False
        self.server: Egress | None = None
        """The egress, once :meth:`start` made it."""

    async def start(self) -> dict[str, object]:
        """Listen; the relay URL, the bridge line and (if on) the admin URL."""
        self.server = server = Egress(self.config, registry=self._registry)
        bridge = await server.start()
        if self._settings is not None:
            reloader = PolicyReloader(server, self._settings, server.metrics.registry)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.reload)
            self._reloading = True
        state_dir = self.config.state_dir
        if server.created_identity:
            console.print(f"Created a new egress identity in {state_dir}.")
        console.print(f"ferry egress listening for volunteers at {bridge.url}")
        if self.config.policy.allow_private:
            console.print("[yellow]Private and loopback destinations are allowed.[/]")
        console.print(f"Bridge line for clients (also in {state_dir / 'bridge-line'}):")
        typer.echo(str(bridge))
        ready: dict[str, object] = {"egress": bridge.url, "bridge": str(bridge)}
        if server.admin_url is not None:
            console.print(f"Admin address (/healthz, /metrics): {server.admin_url}")
            ready["admin"] = server.admin_url
        return ready

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``, then drain until the streams end, ``drain_seconds`` pass or
        :meth:`stop_now` is called."""
        await stop.wait()
        assert self.server is not None
        await self.server.drain(stop_now=self._stop_now)

    def stop_now(self) -> None:
        """End the drain (or skip it, if called before the stop)."""
        self._stop_now.set()

    async def close(self) -> None:
        """Close every session and relay and stop listening."""
        if self._reloading:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._reloading = False
        if self.server is not None:
            await self.server.close()
            self.server = None
