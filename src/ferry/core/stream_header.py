"""The stream request and stream reply at the head of every QUIC stream (``docs/protocol.md`` §5).

The client opens one bidirectional QUIC stream per proxied TCP connection and writes a
*stream request* naming the destination; the egress answers with a *stream reply* carrying a
:class:`~ferry.core.codes.ReplyCode` and a sentence for a human. After both, the stream
carries raw TCP bytes.

Stream request (client → egress)::

    +-----+------+----------+----------+
    | VER | ATYP | DST.ADDR | DST.PORT |
    |  1  |  1   | variable |    2     |
    +-----+------+----------+----------+
    VER  = 0x01
    ATYP = 0x01 IPv4 (4 bytes) | 0x03 domain (1 length byte + 1..255 bytes) | 0x04 IPv6 (16)
    DST.PORT = 1..65535, network order

Stream reply (egress → client)::

    +-----+------+--------+---------+
    | VER | CODE | MSGLEN | MESSAGE |
    |  1  |  1   |   1    | 0..255  |
    +-----+------+--------+---------+

Both decoders are incremental and sans-IO: feed them bytes as they arrive, in chunks of any
size; ``feed`` returns ``None`` until the header is complete and then the decoded value, after
which :attr:`leftover` holds the bytes that followed the header in the last chunk (the first
payload bytes). Bytes that break the format raise :class:`~ferry.errors.ProtocolError` whose
``reason`` is one of the labels listed on each decoder, for use as a metrics label.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ferry.core.addresses import AddressType, Target
from ferry.core.codes import ReplyCode
from ferry.errors import LocalError, ProtocolError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "STREAM_HEADER_VERSION",
    "StreamReply",
    "StreamReplyDecoder",
    "StreamRequest",
    "StreamRequestDecoder",
    "encode_reply",
    "encode_request",
]

STREAM_HEADER_VERSION = 0x01
"""The VER byte of both the stream request and the stream reply."""

MAX_MESSAGE_BYTES = 255
"""The longest reply message, in UTF-8 bytes (MSGLEN is one byte)."""

_FIXED_REQUEST_BYTES = {AddressType.IPV4: 4, AddressType.IPV6: 16}


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A decoded stream request: the destination the client wants the egress to reach."""

    target: Target
    """The destination: a domain name (not yet resolved) or a literal address, and a port."""


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A decoded stream reply: whether the egress connected and why not."""

    code: ReplyCode
    """``SUCCEEDED`` when the egress reached the destination, otherwise why it did not."""
    message: str
    """A sentence for a human, at most 255 UTF-8 bytes; never the resolved address."""


def encode_request(target: Target) -> bytes:
    """The stream request bytes that ask the egress for ``target``.

    Literal addresses are sent as ``ATYP`` 1 or 4, everything else as a domain name.
    """
    address_type = target.address_type
    port = target.port.to_bytes(2, "big")
    if address_type is AddressType.DOMAIN:
        name = target.host.encode("ascii")
        return bytes([STREAM_HEADER_VERSION, address_type, len(name)]) + name + port
    packed = ipaddress.ip_address(target.host).packed
    return bytes([STREAM_HEADER_VERSION, address_type]) + packed + port


def encode_reply(code: ReplyCode, message: str) -> bytes:
    """The stream reply bytes for ``code`` and ``message``.

    ``message`` is encoded as UTF-8 and cut to at most 255 bytes, never inside a character.
    """
    encoded = message.encode("utf-8")
    if len(encoded) > MAX_MESSAGE_BYTES:
        # Cutting at 255 bytes may split a multi-byte character; drop its partial bytes.
        encoded = encoded[:MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
    return bytes([STREAM_HEADER_VERSION, ReplyCode(code), len(encoded)]) + encoded


class StreamRequestDecoder:
    """Incrementally decodes one stream request.

    ``reason`` labels of the :class:`~ferry.errors.ProtocolError` it raises:

    - ``version``: VER is not 0x01;
    - ``address_type``: ATYP is not 1, 3 or 4;
    - ``empty_domain``: a domain name of length 0;
    - ``non_ascii_domain``: a domain name with a byte above 0x7F (names travel as IDNA);
    - ``domain_character``: a domain name with a control character, space or DEL;
    - ``port_zero``: DST.PORT is 0;
    - ``truncated``: the stream ended (:meth:`feed_eof`) before the request was complete.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._request: StreamRequest | None = None
        self._leftover = b""

    @property
    def request(self) -> StreamRequest | None:
        """The decoded request once complete, else ``None``."""
        return self._request

    @property
    def leftover(self) -> bytes:
        """The bytes that followed the request in the chunk that completed it."""
        return self._leftover

    def feed(self, data: bytes) -> StreamRequest | None:
        """Add ``data``; return the request once it is complete, ``None`` while more is needed.

        Raises :class:`~ferry.errors.ProtocolError` as soon as the bytes seen break the
        format, and :class:`~ferry.errors.LocalError` if called again after the request was
        complete (the payload belongs to the caller, starting with :attr:`leftover`).
        """
        if self._request is not None:
            raise LocalError("the stream request is already decoded; read leftover instead")
        self._buffer += data
        buffer = self._buffer
        if not buffer:
            return None
        if buffer[0] != STREAM_HEADER_VERSION:
            raise ProtocolError(
                f"stream request version {buffer[0]:#04x} is not {STREAM_HEADER_VERSION:#04x}",
                reason="version",
            )
        if len(buffer) < 2:
            return None
        try:
            address_type = AddressType(buffer[1])
        except ValueError:
            raise ProtocolError(
                f"stream request address type {buffer[1]:#04x} is not 0x01, 0x03 or 0x04",
                reason="address_type",
            ) from None
        if address_type is AddressType.DOMAIN:
            if len(buffer) < 3:
                return None
            name_length = buffer[2]
            if name_length == 0:
                raise ProtocolError(
                    "stream request has an empty domain name", reason="empty_domain"
                )
            address_end = 3 + name_length
            if len(buffer) < address_end:
                return None
            host = _decode_domain(bytes(buffer[3:address_end]))
        else:
            address_end = 2 + _FIXED_REQUEST_BYTES[address_type]
            if len(buffer) < address_end:
                return None
            host = str(ipaddress.ip_address(bytes(buffer[2:address_end])))
        total = address_end + 2
        if len(buffer) < total:
            return None
        port = int.from_bytes(buffer[address_end:total], "big")
        if port == 0:
            raise ProtocolError("stream request asks for port 0", reason="port_zero")
        self._request = StreamRequest(Target(host, port))
        self._leftover = bytes(buffer[total:])
        self._buffer = bytearray()
        return self._request

    def feed_eof(self) -> None:
        """The peer finished the stream; raise ``ProtocolError`` if the request is incomplete."""
        if self._request is None:
            raise ProtocolError(
                f"the stream ended after {len(self._buffer)} bytes of an incomplete stream request",
                reason="truncated",
            )


class StreamReplyDecoder:
    """Incrementally decodes one stream reply.

    ``reason`` labels of the :class:`~ferry.errors.ProtocolError` it raises:

    - ``version``: VER is not 0x01;
    - ``reply_code``: CODE is not a known :class:`~ferry.core.codes.ReplyCode`;
    - ``message_encoding``: MESSAGE is not valid UTF-8;
    - ``truncated``: the stream ended (:meth:`feed_eof`) before the reply was complete.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._reply: StreamReply | None = None
        self._leftover = b""

    @property
    def reply(self) -> StreamReply | None:
        """The decoded reply once complete, else ``None``."""
        return self._reply

    @property
    def leftover(self) -> bytes:
        """The bytes that followed the reply in the chunk that completed it."""
        return self._leftover

    def feed(self, data: bytes) -> StreamReply | None:
        """Add ``data``; return the reply once it is complete, ``None`` while more is needed.

        Raises :class:`~ferry.errors.ProtocolError` as soon as the bytes seen break the
        format, and :class:`~ferry.errors.LocalError` if called again after the reply was
        complete.
        """
        if self._reply is not None:
            raise LocalError("the stream reply is already decoded; read leftover instead")
        self._buffer += data
        buffer = self._buffer
        if not buffer:
            return None
        if buffer[0] != STREAM_HEADER_VERSION:
            raise ProtocolError(
                f"stream reply version {buffer[0]:#04x} is not {STREAM_HEADER_VERSION:#04x}",
                reason="version",
            )
        if len(buffer) < 2:
            return None
        try:
            code = ReplyCode(buffer[1])
        except ValueError:
            raise ProtocolError(
                f"stream reply code {buffer[1]:#04x} is not a known reply code",
                reason="reply_code",
            ) from None
        if len(buffer) < 3:
            return None
        total = 3 + buffer[2]
        if len(buffer) < total:
            return None
        try:
            message = bytes(buffer[3:total]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                "stream reply message is not valid UTF-8", reason="message_encoding"
            ) from None
        self._reply = StreamReply(code, message)
        self._leftover = bytes(buffer[total:])
        self._buffer = bytearray()
        return self._reply

    def feed_eof(self) -> None:
        """The peer finished the stream; raise ``ProtocolError`` if the reply is incomplete."""
        if self._reply is None:
            raise ProtocolError(
                f"the stream ended after {len(self._buffer)} bytes of an incomplete stream reply",
                reason="truncated",
            )


def _decode_domain(raw: bytes) -> str:
    """The domain name in ``raw``, which must be printable ASCII without spaces."""
    if any(byte > 0x7F for byte in raw):
        raise ProtocolError(
            "stream request domain name is not ASCII (names must be sent in IDNA form)",
            reason="non_ascii_domain",
        )
    if any(byte <= 0x20 or byte == 0x7F for byte in raw):
        raise ProtocolError(
            "stream request domain name contains a control character or space",
            reason="domain_character",
        )
    return raw.decode("ascii")
