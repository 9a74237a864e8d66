"""The routing key: what keeps every path of one client on one egress process.

An egress may run as several processes behind one URL (a load balancer such as nginx in
front, ``ferry egress --workers N``). A client spreads its QUIC session over several
volunteers, each with its own WebSocket to the egress, and all of them must reach the one
process that holds the session's QUIC state. So the client draws a random routing key for its
group of paths, writes it into every WebRTC offer it sends (one SDP session attribute,
``a=x-ferry-route:KEY``, docs/protocol.md §3.1), and each volunteer opens its egress WebSocket
at ``…/v1/relay?route=KEY``; the balancer hashes the ``route`` parameter consistently.

The key is 16 random bytes in unpadded base64url (22 characters), drawn afresh for every new
group of paths and unrelated to anything about the client: it says only "these paths belong
together". A volunteer accepts exactly that form and nothing else (a hostile client must not
inject anything into the URL); an offer without the attribute (an older client) is relayed
without a key, and the balancer then sends it to one fixed process.

Sans-IO: no sockets, no asyncio; the widget (``web/widget.js``) implements the same reading,
and both are pinned by ``tests/vectors/route_keys.json``.
"""

from __future__ import annotations

import re
import secrets

from ferry.errors import ProtocolError

__all__ = [
    "ROUTE_ATTRIBUTE",
    "ROUTE_KEY_BYTES",
    "ROUTE_PARAMETER",
    "is_route_key",
    "new_route_key",
    "relay_url_with_route",
    "route_key_of",
    "with_route_key",
]

ROUTE_KEY_BYTES = 16
"""Random bytes in a routing key (22 characters of base64url)."""

ROUTE_ATTRIBUTE = "x-ferry-route"
"""The SDP session attribute that carries the key: ``a=x-ferry-route:KEY``."""

ROUTE_PARAMETER = "route"
"""The query parameter of the egress URL the volunteer puts the key in."""

_KEY = re.compile(r"[A-Za-z0-9_-]{21}[AQgw]")
"""16 bytes in unpadded base64url: 21 free characters, then one whose low 4 bits are 0."""

_PREFIX = f"a={ROUTE_ATTRIBUTE}"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def new_route_key() -> str:
    """A fresh random routing key."""
    return secrets.token_urlsafe(ROUTE_KEY_BYTES)


def is_route_key(value: str) -> bool:
    """Whether ``value`` is a routing key in its one accepted form."""
    return _KEY.fullmatch(value) is not None


def with_route_key(sdp: str, key: str) -> str:
    """``sdp`` with the session attribute carrying ``key`` added before its first media
    section (the offer the client sends; its own peer keeps the SDP without it)."""
    if not is_route_key(key):
        raise ValueError("not a routing key")
    lines = sdp.split("\r\n")
    for index, line in enumerate(lines):
        if line.startswith("m="):
            return "\r\n".join([*lines[:index], f"{_PREFIX}:{key}", *lines[index:]])
    raise ValueError("the SDP has no media section")


def route_key_of(sdp: str) -> str | None:
    """The routing key in a client's offer, ``None`` if it has none.

    Raises :class:`ProtocolError` (reason ``"bad_route"``) when the attribute is there but
    not exactly one well-formed key in the session section.
    """
    found: list[str] = []
    in_session = True
    for line in _LINE_BREAK.split(sdp):
        if line.startswith("m="):
            in_session = False
        if not line.startswith(_PREFIX):
            continue
        value = line[len(_PREFIX) :]
        if not in_session or not value.startswith(":") or not is_route_key(value[1:]):
            raise ProtocolError(
                "the offer's routing key is malformed (it must be 22 characters of base64url "
                "in the session section)",
                reason="bad_route",
            )
        found.append(value[1:])
    if len(found) > 1:
        raise ProtocolError("the offer carries more than one routing key", reason="bad_route")
    return found[0] if found else None


def relay_url_with_route(url: str, key: str | None) -> str:
    """The egress WebSocket URL with ``route=KEY`` added to its query (``url`` unchanged
    without a key)."""
    if key is None:
        return url
    if not is_route_key(key):
        raise ValueError("not a routing key")
    # Egress URLs carry no #fragment (docs/protocol.md §2): the key goes at the very end.
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{ROUTE_PARAMETER}={key}"
