"""The one exception tree of ferry.

Every error ferry raises on purpose is a :class:`FerryError`. The tree splits, as h11
does, by whose fault the error is::

    FerryError
    ├── LocalError            we (or the operator) misused something: bad config, bad API use
    │   └── ConfigError       a setting or command-line value is invalid
    └── RemoteError           a peer misbehaved or the network failed us
        ├── ProtocolError     bytes from a peer broke a wire format (SOCKS, HTTP, broker JSON,
        │                     stream header, WebSocket relay framing)
        ├── BrokerError       the broker refused or could not serve a rendezvous
        │   ├── NoVolunteerError   no volunteer answered within the bounded wait
        │   └── BrokerRateLimitedError  the broker said "too many requests" (HTTP 429)
        ├── ChannelClosedError     a datagram channel (data channel, WebSocket) is gone
        ├── SessionError      the QUIC session to the egress failed or was lost
        │   └── EgressIdentityError  the egress's certificate does not match the bridge line
        └── StreamRefusedError    the egress refused a stream; carries the reply code

Each layer translates the errors of the layer below it (aiohttp, aiortc, aioquic, OSError)
into one of these, so a caller only ever catches ferry's own types. Messages are written
for the person who will read them: what was wrong and, where possible, what to do.
"""

from __future__ import annotations


class FerryError(Exception):
    """Base class of every error ferry raises on purpose."""


class LocalError(FerryError):
    """We, or the operator, misused something: the fix is on this side."""


class ConfigError(LocalError):
    """A setting, flag or bridge line is invalid."""


class RemoteError(FerryError):
    """A peer misbehaved or the network failed: the fix is on the other side."""


class ProtocolError(RemoteError):
    """Bytes from a peer do not follow a ferry wire format.

    ``reason`` is a short machine-readable label used as a metrics label, ``str(error)``
    the human explanation.
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class BrokerError(RemoteError):
    """The broker refused a request or could not be reached.

    ``retry_after`` is how many seconds the broker asked us to wait before the next request
    (its ``Retry-After`` header with a 429 or 503), or ``None`` when it did not say.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoVolunteerError(BrokerError):
    """No volunteer was matched within the bounded wait."""


class BrokerRateLimitedError(BrokerError):
    """The broker refused the request as one too many from our address (HTTP 429)."""


class ChannelClosedError(RemoteError):
    """A datagram channel (WebRTC data channel or WebSocket) is closed."""


class SessionError(RemoteError):
    """The QUIC session to the egress could not be set up or was lost."""


class EgressIdentityError(SessionError):
    """The egress presented a certificate whose fingerprint is not the pinned one."""


class StreamRefusedError(RemoteError):
    """The egress refused to open a stream; ``code`` is the stream reply code."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code
