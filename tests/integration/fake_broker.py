"""A hostile broker on 127.0.0.1 that names an egress of its choosing in every match, and a
TCP listener that counts who connects to it (the "victim" a broker points volunteers at).

The broker answers ``POST /v1/volunteer/poll`` with a match for ``offer`` naming ``egress``
for the first ``matches`` polls, then holds each poll until it closes; it records answers
and gives no ICE servers. It allows any origin (CORS), so the widget can use it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from ferry.core.broker_messages import (
    AnswerAccepted,
    IceServersResponse,
    MatchOffer,
    PollResponse,
    decode_volunteer_answer,
    encode,
)

FAKE_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
)
"""An offer that passes the message checks (never used for a real connection)."""

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


@dataclass
class Listener:
    """A TCP server on 127.0.0.1 that counts connections and closes them."""

    connections: int = 0
    port: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Listener]:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.connected.set()
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


@dataclass
class FakeBroker:
    """See the module docstring."""

    egress: str
    offer: str = FAKE_OFFER
    matches: int = 3
    polls: int = 0
    answers: list[str] = field(default_factory=list)
    url: str = ""
    _polled: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for_polls(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` polls arrived (a poll after a match: that match was handled)."""
        async with asyncio.timeout(timeout):
            while self.polls < count:
                self._polled.clear()
                await self._polled.wait()

    async def _poll(self, request: web.Request) -> web.Response:
        await request.read()
        self.polls += 1
        self._polled.set()
        if self.polls > self.matches:
            await self._closing.wait()
            return web.Response(body=encode(PollResponse(match=None)), headers=_CORS)
        match = MatchOffer(id=f"match-{self.polls:011d}", offer=self.offer, egress=self.egress)
        return web.Response(
            body=encode(PollResponse(match=match)),
            content_type="application/json",
            headers=_CORS,
        )

    async def _answer(self, request: web.Request) -> web.Response:
        self.answers.append(decode_volunteer_answer(await request.read()).answer)
        return web.Response(
            body=encode(AnswerAccepted()), content_type="application/json", headers=_CORS
        )

    async def _ice_servers(self, request: web.Request) -> web.Response:
        await request.read()
        body = encode(IceServersResponse(ice_servers=(), ttl=60))
        return web.Response(body=body, content_type="application/json", headers=_CORS)

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(headers=_CORS)

    @asynccontextmanager
    async def running(
        self, extra_routes: Callable[[web.Application], None] | None = None
    ) -> AsyncIterator[FakeBroker]:
        app = web.Application()
        handlers: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
            "/v1/volunteer/poll": self._poll,
            "/v1/volunteer/answer": self._answer,
            "/v1/ice-servers": self._ice_servers,
        }
        for path, handler in handlers.items():
            app.router.add_post(path, handler)
            app.router.add_options(path, self._preflight)
        if extra_routes is not None:
            extra_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            self._closing.set()
            await runner.cleanup()
