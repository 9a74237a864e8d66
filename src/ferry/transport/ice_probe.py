"""Which STUN and TURN servers answer, before aiortc gathers candidates with them.

aiortc hands aioice **one** STUN and **one** TURN server (the first of each in the list), and
aioice waits up to 5 s for each before it gives up on it, silently. A broker hands out
several servers precisely so that one the censor blocks does not stop a peer, so the Python
stack asks them all first: :class:`IceServerProbe` sends a STUN Binding request to every
server reached over UDP (a TURN server answers Binding requests on its port too) at once,
and the first to answer of each kind is the one aiortc gets. A server that does not answer
within ``timeout`` is logged by its URL (never the peer's own address) and left out of later
connections for ``remember_silent`` seconds.

When a TURN server was used but the offer or answer came out without a relay candidate, the
TURN server refused the allocation: :meth:`IceServerProbe.explain_turn_failure` allocates once
with aioice's TURN client to learn the error (``401 Unauthorized`` for a wrong or expired
credential) and logs it, so that an operator sees "the TURN server refused the credentials"
instead of a data channel that does not open.

The browser engine needs none of this: Chromium uses every server it is given and reports
the ones that fail (``icecandidateerror``), which :mod:`ferry.transport.browser_webrtc` logs
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aioice import stun, turn

from ferry.core.ice_servers import IceServer
from ferry.logs import PUBLIC_ADDRESSES, get_logger
from ferry.tasks import TaskOwner

log = get_logger(__name__)

_RETRANSMIT_AFTER = (0.0, 0.25, 0.5, 1.0)
"""When a probe (re)sends its Binding request, in seconds from its start (within the
timeout)."""


@dataclass(frozen=True, slots=True)
class IceProbeConfig:
    """How long ICE servers may take to answer."""

    timeout: float = 2.0
    """Seconds every server gets to answer a Binding request before it counts as silent (and
    the connection goes on with those that answered)."""
    remember_silent: float = 300.0
    """Seconds a silent server is left out of new connections before it is tried again."""
    turn_check_timeout: float = 5.0
    """Seconds the check of a failed TURN allocation may take."""


def _probed(server: IceServer) -> bool:
    """Servers reached over plain UDP, which a Binding request can test."""
    parsed = server.parsed
    if parsed.scheme == "stun":
        return True
    return parsed.scheme == "turn" and parsed.transport in (None, "udp")


class _BindingProtocol(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes, answered: asyncio.Future[None]) -> None:
        self._transaction_id = transaction_id
        self._answered = answered

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.transaction_id == self._transaction_id and not self._answered.done():
            self._answered.set_result(None)


class IceServerProbe:
    """Finds the servers that answer; one per peer factory, shared by its connections."""

    def __init__(self, config: IceProbeConfig | None = None) -> None:
        self.config = config or IceProbeConfig()
        self._silent_until: dict[str, float] = {}
        self._tasks = TaskOwner("ice-probe")
        self._explained: dict[str, float] = {}

    async def choose(self, servers: Sequence[IceServer]) -> tuple[IceServer, ...]:
        """The servers aiortc should use: the first of each kind (STUN, TURN) to answer a
        Binding request, or the first TURN server reached over TCP or TLS (not probed). Waits
        until one of each kind answered or ``timeout`` passed; the other probes go on in the
        background only to log the servers that stay silent."""
        now = time.monotonic()
        candidates = [s for s in servers if self._silent_until.get(s.url, 0.0) <= now]
        probed = [s for s in candidates if _probed(s)]
        unprobed_turn = [s for s in candidates if s.is_turn and not _probed(s)]
        if not probed:
            return tuple(unprobed_turn[:1])
        answered: list[IceServer] = []
        settled = asyncio.Event()
        kinds = {server.is_turn for server in probed}
        unfinished = len(probed)

        def finished(server: IceServer, answered_now: bool) -> None:
            nonlocal unfinished
            unfinished -= 1
            if answered_now:
                answered.append(server)
            if unfinished == 0 or {s.is_turn for s in answered} == kinds:
                settled.set()

        for server in probed:
            self._tasks.spawn(self._probe(server, finished), name="probe")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout + 0.5):
                await settled.wait()
        stun_server = next((s for s in answered if not s.is_turn), None)
        turn_server = next((s for s in answered if s.is_turn), None)
        chosen = [s for s in (stun_server, turn_server) if s is not None]
        if turn_server is None and unprobed_turn:
            chosen.append(unprobed_turn[0])
        return tuple(chosen)

    async def _probe(self, server: IceServer, finished: Callable[[IceServer, bool], None]) -> None:
        answered = False
        try:
            answered = await self._binding_answered(server)
        finally:
            finished(server, answered)

    async def _binding_answered(self, server: IceServer) -> bool:
        parsed = server.parsed
        loop = asyncio.get_running_loop()
        kind = "TURN" if server.is_turn else "STUN"
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_DGRAM),
                self.config.timeout,
            )
        except (OSError, TimeoutError) as error:
            self._silent(server, f"its name could not be resolved ({error})")
            return False
        family, _, _, _, address = infos[0]
        request = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.REQUEST,
            transaction_id=secrets.token_bytes(12),
        )
        answered: asyncio.Future[None] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _BindingProtocol(request.transaction_id, answered), family=family
            )
        except OSError as error:
            self._silent(server, f"no socket could be opened to it ({error.strerror})")
            return False
        started = loop.time()
        try:
            for send_at in _RETRANSMIT_AFTER:
                delay = started + send_at - loop.time()
                if send_at >= self.config.timeout:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, delay)):
                        await asyncio.shield(answered)
                if answered.done():
                    break
                with contextlib.suppress(OSError):
                    transport.sendto(bytes(request), address[:2])
            if not answered.done():
                remaining = started + self.config.timeout - loop.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, remaining)):
                        await asyncio.shield(answered)
        finally:
            transport.close()
        if answered.done():
            self._silent_until.pop(server.url, None)
            return True
        self._silent(
            server,
            f"it did not answer within {self.config.timeout:g} s; the other {kind} "
            "servers are used (is it blocked, or down?)",
        )
        return False

    def _silent(self, server: IceServer, why: str) -> None:
        kind = "TURN" if server.is_turn else "STUN"
        self._silent_until[server.url] = time.monotonic() + self.config.remember_silent
        log.warning(
            "the %s server %s is left out: %s", kind, server.url, why, extra=_naming(server)
        )

    def explain_turn_failure(self, server: IceServer) -> None:
        """Allocate once on ``server`` (in the background, bounded) and log why it fails; at
        most once a minute per server."""
        now = time.monotonic()
        if self._explained.get(server.url, 0.0) > now:
            return
        self._explained[server.url] = now + 60.0
        self._tasks.spawn(self._explain_turn_failure(server), name="turn-check")

    async def _explain_turn_failure(self, server: IceServer) -> None:
        why = await self.turn_error(server)
        log.warning(
            "the TURN server %s gave no relay candidate: %s", server.url, why, extra=_naming(server)
        )

    async def turn_error(self, server: IceServer) -> str:
        """Why an allocation on ``server`` fails (or ``"it allocated now"``), in words."""
        parsed = server.parsed
        try:
            async with asyncio.timeout(self.config.turn_check_timeout):
                _, protocol = await turn.create_turn_endpoint(
                    asyncio.DatagramProtocol,
                    server_addr=(parsed.host, parsed.port),
                    username=server.username,
                    password=server.credential,
                    ssl=parsed.scheme == "turns",
                    transport=parsed.transport or ("tcp" if parsed.scheme == "turns" else "udp"),
                )
        except TimeoutError:
            return f"it did not answer within {self.config.turn_check_timeout:g} s"
        except stun.TransactionFailed as error:
            return _refusal_words(server, error)
        except (OSError, ConnectionError) as error:
            return f"it cannot be reached ({error})"
        except stun.TransactionTimeout:
            return "it did not answer"
        protocol_transport = getattr(protocol, "transport", None)
        if protocol_transport is not None:
            protocol_transport.close()
        return "it allocated a relay when asked again (the first attempt was lost)"

    async def close(self) -> None:
        """Stop the probes still running in the background."""
        await self._tasks.close()


def _naming(server: IceServer) -> dict[str, tuple[str, ...]]:
    """The ``extra=`` that lets the log name ``server`` by its address (a public server the
    broker or the user gave, not a peer: the scrubber would redact it otherwise)."""
    return {PUBLIC_ADDRESSES: (server.parsed.host.strip("[]"),)}


def _refusal_words(server: IceServer, error: stun.TransactionFailed) -> str:
    code_and_reason = error.response.attributes.get("ERROR-CODE")
    if not isinstance(code_and_reason, tuple) or len(code_and_reason) != 2:
        return "it refused the allocation"
    code, reason = code_and_reason
    if code == 401:
        expiry = _username_expiry(server.username)
        if expiry is not None and expiry < time.time():
            return (
                f"it refused the credentials (401 {reason}): they expired "
                f"{time.time() - expiry:.0f} s ago (ask the broker again; check the clocks)"
            )
        return (
            f"it refused the credentials (401 {reason}): the broker's --turn-secret-file "
            "does not hold the TURN server's static-auth-secret, or the user name and "
            "password given are wrong"
        )
    if code == 403:
        return f"it forbids this allocation (403 {reason})"
    if code == 486:
        return f"this user has too many allocations (486 {reason})"
    if code == 508:
        return f"it has no relay capacity left (508 {reason})"
    return f"it refused the allocation ({code} {reason})"


def _username_expiry(username: str | None) -> int | None:
    """The expiry in a TURN REST user name (``"<unix seconds>:<random>"``), if it is one."""
    if username is None:
        return None
    head, colon, _ = username.partition(":")
    return int(head) if colon and head.isdigit() and len(head) <= 12 else None
