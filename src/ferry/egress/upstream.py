"""The egress's connections to destinations: resolve, check against the policy, connect.

:func:`connect_upstream` first refuses a name that spells an address
(:meth:`~ferry.egress.policy.DestinationPolicy.check_name`: ``"0x7f000001"`` would otherwise
become 127.0.0.1 inside ``getaddrinfo``), then resolves the name once, checks **every**
address it resolved to, with the port, against the
:class:`~ferry.egress.policy.DestinationPolicy`, refuses the whole destination if any one is
refused, and then connects to the checked addresses themselves, in order. It never hands the
name to the socket layer, so there is no second lookup whose answer could differ from the
checked one (no DNS-rebinding window).

Every failure becomes a :class:`~ferry.errors.StreamRefusedError` whose ``code`` is the
:class:`~ferry.core.codes.ReplyCode` for the client. Its message travels back to the client
and may be logged, so it never contains the destination or any address.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from ferry.core.addresses import AddressType, Target
from ferry.core.codes import DEFAULT_MESSAGE, ReplyCode
from ferry.egress.policy import DestinationPolicy, PolicyDecision
from ferry.errors import ConfigError, StreamRefusedError
from ferry.logs import get_logger, redact

__all__ = [
    "Resolver",
    "SystemResolver",
    "UpstreamConfig",
    "UpstreamMetrics",
    "connect_upstream",
]

_log = get_logger(__name__)

_ERRNO_CODES: dict[int, ReplyCode] = {
    errno.ECONNREFUSED: ReplyCode.CONNECTION_REFUSED,
    errno.EHOSTUNREACH: ReplyCode.HOST_UNREACHABLE,
    errno.ENETUNREACH: ReplyCode.NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: ReplyCode.TIMED_OUT,
}


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Timeouts of the egress's connections to destinations."""

    resolve_timeout: float = 5.0
    """Seconds a name lookup may take before the stream is refused with
    ``NAME_NOT_RESOLVED``."""
    connect_timeout: float = 10.0
    """Seconds all connection attempts to one destination may take together before the
    stream is refused with ``TIMED_OUT``."""
    attempt_timeout: float = 4.0
    """Seconds one address may take to accept before the next resolved address is tried
    (still within ``connect_timeout``), so one unresponsive address does not use it all."""

    def __post_init__(self) -> None:
        for name in ("resolve_timeout", "connect_timeout", "attempt_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")


class Resolver(Protocol):
    """Turns a host name into addresses."""

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        """The addresses of ``host``, most preferred first; may be empty.

        Raises :class:`OSError` (typically :class:`socket.gaierror`) when the name does not
        resolve.
        """
        ...


class SystemResolver:
    """Resolves names with the operating system's resolver (``getaddrinfo``)."""

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        """The TCP addresses ``getaddrinfo`` returns for ``host``, in its order."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (UnicodeError, ValueError) as exc:
            # Names the IDNA codec or the C layer reject (a 64-byte label, "a..b").
            raise socket.gaierror(socket.EAI_NONAME, "not a valid host name") from exc
        addresses: list[IPv4Address | IPv6Address] = []
        for family, _type, _proto, _canonical_name, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(sockaddr[0], str):
                continue
            addresses.append(ip_address(sockaddr[0]))
        return addresses


class UpstreamMetrics:
    """Counters of refused and failed upstream connections, on the registry given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused_by_policy = Counter(
            "ferry_egress_policy_refusals",
            "Destinations refused by the destination policy, by reason (the refused "
            "address's class, numeric_name, denied_by_operator or denied_port).",
            ["reason"],
            registry=registry,
        )
        self.failures = Counter(
            "ferry_egress_upstream_failures",
            "Upstream connections that failed, by stream reply code.",
            ["code"],
            registry=registry,
        )


async def connect_upstream(
    target: Target,
    policy: DestinationPolicy,
    config: UpstreamConfig,
    resolver: Resolver,
    *,
    metrics: UpstreamMetrics | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection to ``target`` if the policy allows every address it has.

    Literal addresses are not resolved. Raises :class:`~ferry.errors.StreamRefusedError`
    with ``code``: ``NOT_ALLOWED`` when ``policy`` refuses the name before resolution (an
    address spelled as a name) or any resolved address with the target's port;
    ``NAME_NOT_RESOLVED`` when the name does not resolve (or not within
    ``resolve_timeout``) or has no addresses; ``CONNECTION_REFUSED``, ``HOST_UNREACHABLE``,
    ``NETWORK_UNREACHABLE`` or ``GENERAL_FAILURE`` from the last address tried; ``TIMED_OUT``
    when ``connect_timeout`` passed.
    """
    try:
        if target.address_type is AddressType.DOMAIN:
            _enforce(policy.check_name(target.host), target, metrics)
        addresses = await _resolve(target, config, resolver)
        for address in addresses:
            _enforce(policy.check(address, target.port), target, metrics)
        return await _connect_in_order(addresses, target.port, config)
    except StreamRefusedError as error:
        if metrics is not None:
            metrics.failures.labels(code=ReplyCode(error.code).name.lower()).inc()
        raise


def _enforce(decision: PolicyDecision, target: Target, metrics: UpstreamMetrics | None) -> None:
    """Raise ``StreamRefusedError(NOT_ALLOWED)`` (counted by reason) if ``decision`` refuses."""
    if decision.allowed:
        return
    if metrics is not None:
        metrics.refused_by_policy.labels(reason=decision.reason).inc()
    _log.debug("refused destination %s (reason: %s)", redact(target), decision.reason)
    raise StreamRefusedError(decision.message, code=ReplyCode.NOT_ALLOWED)


async def _resolve(
    target: Target, config: UpstreamConfig, resolver: Resolver
) -> list[IPv4Address | IPv6Address]:
    """The distinct addresses to try for ``target``, in the resolver's order."""
    if target.address_type is not AddressType.DOMAIN:
        return [ip_address(target.host)]
    try:
        async with asyncio.timeout(config.resolve_timeout):
            resolved = await resolver.resolve(target.host, target.port)
    except TimeoutError:
        raise StreamRefusedError(
            "the destination's name could not be resolved in time",
            code=ReplyCode.NAME_NOT_RESOLVED,
        ) from None
    except (OSError, UnicodeError, ValueError):
        raise StreamRefusedError(
            DEFAULT_MESSAGE[ReplyCode.NAME_NOT_RESOLVED], code=ReplyCode.NAME_NOT_RESOLVED
        ) from None
    addresses = list(dict.fromkeys(resolved))
    if not addresses:
        raise StreamRefusedError(
            "the destination's name has no addresses", code=ReplyCode.NAME_NOT_RESOLVED
        )
    return addresses


async def _connect_in_order(
    addresses: list[IPv4Address | IPv6Address], port: int, config: UpstreamConfig
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first of ``addresses`` that accepts within the timeouts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.connect_timeout
    last_error = StreamRefusedError(
        DEFAULT_MESSAGE[ReplyCode.GENERAL_FAILURE], code=ReplyCode.GENERAL_FAILURE
    )
    for address in addresses:
        remaining = deadline - loop.time()
        if remaining <= 0:
            last_error = StreamRefusedError(
                DEFAULT_MESSAGE[ReplyCode.TIMED_OUT], code=ReplyCode.TIMED_OUT
            )
            break
        try:
            async with asyncio.timeout(min(config.attempt_timeout, remaining)):
                # A literal address: asyncio does not look it up again.
                return await asyncio.open_connection(str(address), port)
        except TimeoutError:
            last_error = StreamRefusedError(
                DEFAULT_MESSAGE[ReplyCode.TIMED_OUT], code=ReplyCode.TIMED_OUT
            )
        except OSError as exc:
            code = _ERRNO_CODES.get(exc.errno or 0, ReplyCode.GENERAL_FAILURE)
            last_error = StreamRefusedError(DEFAULT_MESSAGE[code], code=code)
    raise last_error
