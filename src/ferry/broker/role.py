"""The broker's lifecycle as a role app (:class:`ferry.roles.RoleApp`): ``ferry broker``."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.roles import console


def ice_summary(config: BrokerConfig) -> str:
    """One line on the ICE servers a broker hands out (never the TURN secret)."""
    stun = sum(1 for server in config.ice_servers if not server.is_turn)
    turn = len(config.ice_servers) - stun
    if not config.ice_servers:
        return (
            "ICE servers: none (peers gather host candidates only; peers behind two home "
            "routers will not connect: see --ice-server)"
        )
    credentials = (
        ""
        if not turn
        else f" (credentials valid {config.turn_credential_ttl:g} s, minted per peer)"
        if config.turn_secret is not None
        else " (with their configured credentials)"
    )
    return (
        f"ICE servers: {stun} STUN, {turn} TURN{credentials}; at most "
        f"{config.ice_servers_per_peer} of each kind per peer, chosen at random"
    )


class BrokerRole:
    """A broker listening until stopped; its ready file names its URL."""

    def __init__(self, config: BrokerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self._registry = registry or CollectorRegistry()
        self.server: Broker | None = None
        """The broker, once :meth:`start` made it."""

    async def start(self) -> dict[str, object]:
        """Listen; ``{"broker": URL}``."""
        self.server = Broker(self.config, registry=self._registry)
        url = await self.server.start()
        console.print(f"ferry broker listening on {url}, sending volunteers to:")
        for egress_url in self.config.allowed_egresses:
            console.print(f"  {egress_url}")
        console.print(ice_summary(self.config))
        return {"broker": url}

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``."""
        await stop.wait()

    def stop_now(self) -> None:
        """Nothing to drain."""

    async def close(self) -> None:
        """Stop listening and close the store."""
        if self.server is not None:
            await self.server.close()
            self.server = None
