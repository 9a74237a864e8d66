"""The datagram channel interface every path of a ferry session implements.

A QUIC session needs nothing from the network but a way to send and receive whole
datagrams. A WebRTC data channel (client ↔ volunteer), a WebSocket (volunteer ↔ egress) and
an in-memory pair (tests) all provide it through :class:`DatagramChannel`.

Semantics, which every implementation keeps:

* ``send()`` never blocks and never raises for a full queue: like a router, a channel whose
  queue is above its high-water mark drops the datagram and returns ``False``. QUIC's loss
  recovery and congestion control make up for it. On a closed channel it returns ``False``.
* Received datagrams are delivered, in arrival order, to the ``on_datagram`` handler given to
  :meth:`DatagramChannel.start`; datagrams that arrive before ``start`` are held (bounded).
* ``on_close`` is called exactly once, when the channel closes for any reason (either side
  closed it, the transport failed), and never before ``start``. After it, ``is_open`` is
  false and ``send()`` returns ``False``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

DatagramHandler = Callable[[bytes], None]
CloseHandler = Callable[[], None]


class DatagramChannel(Protocol):
    """A bidirectional, message-preserving, unreliable channel for QUIC datagrams."""

    @property
    def is_open(self) -> bool:
        """True until the channel has closed."""
        ...

    def start(self, on_datagram: DatagramHandler, on_close: CloseHandler) -> None:
        """Begin delivering datagrams to ``on_datagram``; ``on_close`` runs once at close."""
        ...

    def send(self, datagram: bytes) -> bool:
        """Queue one datagram; ``False`` if it was dropped (queue full or channel closed)."""
        ...

    async def close(self) -> None:
        """Close the channel (idempotent); ``on_close`` runs if it has not yet."""
        ...


class DatagramInbox:
    """The receiving half of a channel, as the semantics above ask: datagrams that arrive
    before :meth:`start` are held (bounded, the oldest dropped), then handed over in arrival
    order; ``on_close`` is reported exactly once, and never before :meth:`start`.

    Shared by the channels that can receive before they are started (aiortc's data channel,
    the browser engine's, the in-memory pair); each keeps its own ``is_open``.
    """

    __slots__ = ("_close_reported", "_held", "_on_close", "_on_datagram")

    def __init__(self, max_held: int) -> None:
        self._held: deque[bytes] = deque(maxlen=max_held)
        self._on_datagram: DatagramHandler | None = None
        self._on_close: CloseHandler | None = None
        self._close_reported = False

    def start(self, on_datagram: DatagramHandler, on_close: CloseHandler, *, closed: bool) -> None:
        """Hand over what was held, then deliver as it comes; report the close at once if the
        channel is ``closed`` already."""
        self._on_datagram, self._on_close = on_datagram, on_close
        while self._held:
            on_datagram(self._held.popleft())
        if closed:
            self.report_close()

    def deliver(self, datagram: bytes) -> None:
        """Hold ``datagram`` until :meth:`start`, or pass it on (the handler's exceptions
        propagate to the caller)."""
        if self._on_datagram is None:
            self._held.append(datagram)
        else:
            self._on_datagram(datagram)

    def drop_held(self) -> None:
        """Forget what is held (the channel closed before it was started)."""
        self._held.clear()

    def report_close(self) -> None:
        """Call ``on_close`` if started and not called yet."""
        if not self._close_reported and self._on_close is not None:
            self._close_reported = True
            self._on_close()


class MemoryDatagramChannel:
    """One end of an in-memory channel pair, for unit tests of code above the transports.

    Delivery is synchronous: ``send()`` on one end calls the other end's handler before it
    returns (or holds the datagram until the other end starts). ``loss`` is an optional
    predicate deciding, per datagram, whether to drop it, to inject deterministic loss.
    """

    def __init__(self, *, max_held: int = 1024) -> None:
        self._peer: MemoryDatagramChannel | None = None
        self._inbox = DatagramInbox(max_held)
        self._open = True
        self.loss: Callable[[bytes], bool] | None = None
        self.sent_datagrams = 0
        self.dropped_datagrams = 0

    @classmethod
    def pair(cls) -> tuple[MemoryDatagramChannel, MemoryDatagramChannel]:
        """Two connected ends."""
        left, right = cls(), cls()
        left._peer, right._peer = right, left
        return left, right

    @property
    def is_open(self) -> bool:
        return self._open

    def start(self, on_datagram: DatagramHandler, on_close: CloseHandler) -> None:
        self._inbox.start(on_datagram, on_close, closed=not self._open)

    def send(self, datagram: bytes) -> bool:
        if not self._open or self._peer is None:
            return False
        if self.loss is not None and self.loss(datagram):
            self.dropped_datagrams += 1
            return False
        self.sent_datagrams += 1
        self._peer._deliver(bytes(datagram))
        return True

    def _deliver(self, datagram: bytes) -> None:
        if self._open:
            self._inbox.deliver(datagram)

    async def close(self) -> None:
        self._close_local()
        if self._peer is not None:
            self._peer._close_local()

    def _close_local(self) -> None:
        if self._open:
            self._open = False
            self._inbox.report_close()
