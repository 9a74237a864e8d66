"""The byte-stream interface between the local proxy and the session that carries it.

The client's local proxy (``ferry.client.local_proxy``) accepts an application's TCP
connection, learns its :class:`~ferry.core.addresses.Target`, and asks a
:class:`StreamOpener` for a :class:`ByteStream` to it. The real opener is the client's QUIC
session (one QUIC stream per connection); tests use in-memory openers.

EOF semantics follow trio's: ``receive_some()`` returns ``b""`` exactly once the peer has
finished sending (and on every call after); ``send_eof()`` half-closes our direction.
"""

from __future__ import annotations

from typing import Protocol

from ferry.core.addresses import Target


class ByteStream(Protocol):
    """A reliable, ordered, bidirectional byte stream with half-close."""

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        """Wait for and return up to ``max_bytes``; ``b""`` at EOF.

        Raises :class:`ferry.errors.RemoteError` if the stream was reset or its session lost.
        """
        ...

    async def send_all(self, data: bytes) -> None:
        """Send ``data``, waiting while the stream's send buffer is above its limit.

        Raises :class:`ferry.errors.RemoteError` if the stream or its session is gone.
        """
        ...

    async def send_eof(self) -> None:
        """Finish our direction (TCP half-close)."""
        ...

    def abort(self) -> None:
        """Reset both directions at once; never raises."""
        ...


class StreamOpener(Protocol):
    """Opens a :class:`ByteStream` to a target through whatever carries the session."""

    async def open_stream(self, target: Target) -> ByteStream:
        """Open a stream to ``target``.

        Raises :class:`ferry.errors.StreamRefusedError` (with the egress's reply code) when
        the egress refused, :class:`ferry.errors.NoVolunteerError` when no volunteer could be
        reached within the bounded wait, :class:`ferry.errors.SessionError` when the session
        to the egress failed.
        """
        ...
