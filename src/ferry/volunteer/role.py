"""The volunteer's lifecycle as a role app (:class:`ferry.roles.RoleApp`): ``ferry volunteer``."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from ferry.roles import console
from ferry.transport.browser_webrtc import BrowserEngineConfig, WebRtcMode, WebRtcStack
from ferry.volunteer.relay import Volunteer, VolunteerConfig


class VolunteerRole:
    """A volunteer polling its broker and relaying until stopped."""

    def __init__(
        self,
        config: VolunteerConfig,
        webrtc_mode: WebRtcMode = WebRtcMode.PYTHON,
        browser: BrowserEngineConfig | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self._registry = registry or CollectorRegistry()
        self._stack = WebRtcStack(
            webrtc_mode, config.webrtc, browser or BrowserEngineConfig(), registry=self._registry
        )
        self.relay: Volunteer | None = None
        """The volunteer, once :meth:`start` made it."""

    async def start(self) -> dict[str, object]:
        """Start the WebRTC stack (a :class:`~ferry.errors.LocalError` if the browser it must
        use does not start) and the polling; the ready file's content."""
        config = self.config
        stack_status = await self._stack.start()
        self.relay = Volunteer(config, peers=self._stack, registry=self._registry)
        self.relay.start()
        detail = "browser engine" if stack_status.stack == "browser" else "Python"
        console.print(f"WebRTC: {detail} ({stack_status.detail})")
        limits = (f", at most {config.max_rate} bytes/s" if config.max_rate else "") + (
            f", at most {config.quota} bytes per UTC day" if config.quota else ""
        )
        console.print(
            f"ferry volunteer polling {config.broker_url} for clients "
            f"(up to {config.capacity} at once{limits})"
        )
        return {
            "broker": config.broker_url,
            "capacity": config.capacity,
            "max_rate": config.max_rate,
            "quota": config.quota,
            "webrtc": stack_status.stack,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``."""
        await stop.wait()

    def stop_now(self) -> None:
        """Nothing to drain."""

    async def close(self) -> None:
        """Stop polling, end every relay, close the WebRTC stack."""
        if self.relay is not None:
            await self.relay.close()
            self.relay = None
        await self._stack.close()
