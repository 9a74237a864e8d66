"""Broker HTTP messages (``docs/protocol.md`` §2), decoded strictly and encoded canonically.

Every message is a JSON object in UTF-8 of at most :data:`MAX_BODY_BYTES`. Requests (client
offer, volunteer poll, volunteer answer) carry ``"version": 1``; responses do not. Decoding is
strict, in this order, and stops at the first problem:

1. the body is at most 64 KiB (``reason="too_large"``);
2. it is UTF-8 (``"not_utf8"``) holding one JSON value (``"not_json"``) that is an object
   (``"not_object"``) with no key given twice (``"duplicate_field"``);
3. for requests, ``version`` is present and is the integer 1 (``"bad_version"``);
4. every key is one this message has (``"unknown_field"``) and none is missing
   (``"missing_field"``);
5. each value has its type (``"wrong_type"``; a JSON ``true`` is not an integer) and obeys its
   rule: SDP (``"bad_sdp"``), identifier (``"bad_id"``), egress URL (``"bad_egress"``),
   capacity (``"bad_capacity"``), pairing code (``"bad_pairing"``), NAT type (``"bad_nat"``),
   volunteer kind (``"bad_kind"``), ICE server (``"bad_ice_server"``), time to live
   (``"bad_ttl"``).

Optional fields (``pairing``, ``nat``, ``kind``, a poll response's ``ice_servers``) may be
left out; when present they obey
their rule (``null`` is none of them). A left-out ``nat`` or ``kind`` decodes as
``"unknown"`` and is left out again when encoded.

A failure raises :class:`MessageError`, whose ``field`` names the offending field (dotted for
nested ones, as ``match.offer``; ``None`` when the body as a whole is wrong) and whose
``reason`` is the label above, used by the broker as a metrics label.

This module is sans-IO: no sockets, no asyncio, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

from ferry.core.ice_servers import MAX_ICE_SERVERS, IceServer, IceServerError
from ferry.core.nat_behaviour import NatClass
from ferry.errors import ProtocolError

PROTOCOL_VERSION = 1
"""The only value of ``version`` this code speaks."""

MAX_BODY_BYTES = 64 * 1024
"""Largest body, request or response, in bytes."""

MAX_SDP_BYTES = 32 * 1024
"""Largest SDP offer or answer, in UTF-8 bytes."""

MAX_EGRESS_URL_LENGTH = 2048
"""Longest egress URL, in characters."""

MIN_CAPACITY = 1
"""Smallest ``capacity`` a volunteer may announce in a poll."""

MAX_CAPACITY = 1000
"""Largest ``capacity`` a volunteer may announce in a poll."""

NatType = Literal["restricted", "unrestricted", "unknown"]
"""How a peer's NAT behaves (§2.1; :class:`ferry.core.nat_behaviour.NatClass`, as Snowflake
classifies): ``restricted`` when its mapping depends on the destination (a "symmetric" NAT,
which cannot reach another restricted peer), ``unrestricted`` with an endpoint-independent
mapping or no NAT, ``unknown`` when not measured."""

NAT_TYPES: tuple[NatType, ...] = get_args(NatType)
"""Every value of ``nat``."""


def nat_type(nat_class: NatClass) -> NatType:
    """The wire value of a measured NAT class."""
    for value in NAT_TYPES:
        if value == nat_class.value:
            return value
    raise AssertionError(f"no wire value for {nat_class!r}")  # pragma: no cover


VolunteerKind = Literal["browser", "python", "python-browser-engine", "unknown"]
"""Which implementation a volunteer runs (§2.2): the widget (``browser``), ``ferry volunteer``
on aiortc (``python``) or on its browser engine (``python-browser-engine``); ``unknown`` when
its poll does not say."""

VOLUNTEER_KINDS: tuple[VolunteerKind, ...] = get_args(VolunteerKind)
"""Every volunteer kind (``unknown`` is never sent: the field is left out instead)."""

_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{16,64}")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]
"""A value as :func:`json.loads` returns it."""


class MessageError(ProtocolError):
    """A broker message broke a rule of ``docs/protocol.md`` §2.

    ``field`` names the field at fault (dotted when nested, e.g. ``match.offer``), or is
    ``None`` when the body as a whole is wrong (too large, not JSON, not an object).
    """

    def __init__(self, message: str, *, field: str | None, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.field = field


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientOffer:
    """``POST /v1/client/offer`` request: a client asks for a volunteer."""

    offer: str
    """The client's SDP offer (starts with ``v=0``, has an ``m=application`` line)."""
    egress: str
    """The ``ws://``/``wss://`` URL of the egress from the client's bridge line."""
    pairing: str | None = None
    """A private pairing code: only volunteers polling with the same code serve this client.
    ``None`` (the field left out): any volunteer without a pairing code."""
    nat: NatType = "unknown"
    """The client's NAT type as it measured it; ``"unknown"`` when the field is left out."""


@dataclass(frozen=True, slots=True)
class ClientAnswer:
    """``POST /v1/client/offer`` 200 response: the matched volunteer's answer."""

    answer: str
    """The volunteer's SDP answer."""


@dataclass(frozen=True, slots=True)
class VolunteerPoll:
    """``POST /v1/volunteer/poll`` request: a volunteer offers to relay."""

    volunteer_id: str
    """The volunteer's self-chosen identifier, 16..64 characters of ``[A-Za-z0-9_-]``."""
    capacity: int
    """How many more clients the volunteer can take now, 1..1000."""
    pairing: str | None = None
    """A private pairing code: the volunteer serves only clients offering with the same code.
    ``None`` (the field left out): any client without a pairing code."""
    nat: NatType = "unknown"
    """The volunteer's NAT type as it measured it; ``"unknown"`` when the field is left out."""
    kind: VolunteerKind = "unknown"
    """``"browser"`` (the widget), ``"python"`` (``ferry volunteer`` on aiortc) or
    ``"python-browser-engine"`` (``ferry volunteer`` on its browser engine); ``"unknown"``
    when the field is left out. Used for metrics only."""


@dataclass(frozen=True, slots=True)
class MatchOffer:
    """A client's offer handed to a volunteer, nested in :class:`PollResponse`."""

    id: str
    """The match identifier the volunteer quotes in its answer (16..64 of ``[A-Za-z0-9_-]``)."""
    offer: str
    """The client's SDP offer."""
    egress: str
    """The egress URL the volunteer must relay this client to."""


@dataclass(frozen=True, slots=True)
class PollResponse:
    """``POST /v1/volunteer/poll`` 200 response."""

    match: MatchOffer | None
    """The client to serve, or ``None`` when no client came within the poll's wait."""
    ice_servers: tuple[IceServer, ...] = ()
    """STUN and TURN servers to answer this match with (TURN credentials minted for it);
    left out of the JSON when empty (§2.10)."""


@dataclass(frozen=True, slots=True)
class VolunteerAnswer:
    """``POST /v1/volunteer/answer`` request: a volunteer's answer to a match."""

    match_id: str
    """The ``id`` of the :class:`MatchOffer` being answered."""
    answer: str
    """The volunteer's SDP answer."""


@dataclass(frozen=True, slots=True)
class AnswerAccepted:
    """``POST /v1/volunteer/answer`` 200 response: the waiting client got the answer."""

    ok: bool = True
    """Always ``True``; a refused answer is an :class:`ErrorBody` with status 404."""


@dataclass(frozen=True, slots=True)
class EgressList:
    """``GET /v1/egresses`` 200 response."""

    egresses: tuple[str, ...]
    """The egress URLs this broker sends volunteers to."""


@dataclass(frozen=True, slots=True)
class NetworkStatsResponse:
    """``GET /v1/stats`` 200 response: the network's live state, rounded up to multiples of 8."""

    volunteers_online: int
    """Volunteers that polled recently (rounded up to a multiple of 8)."""
    clients_helped_last_hour: int
    """Clients handed a volunteer in the last hour (rounded up to a multiple of 8)."""


@dataclass(frozen=True, slots=True)
class IceServersRequest:
    """``POST /v1/ice-servers`` request: a peer asks which STUN and TURN servers to use
    (§2.10). It carries nothing but the version."""


MIN_ICE_TTL = 1
"""Shortest ``ttl`` of an :class:`IceServersResponse`, in seconds."""

MAX_ICE_TTL = 86400
"""Longest ``ttl`` of an :class:`IceServersResponse`, in seconds (a day)."""


@dataclass(frozen=True, slots=True)
class IceServersResponse:
    """``POST /v1/ice-servers`` 200 response (§2.10)."""

    ice_servers: tuple[IceServer, ...]
    """This peer's STUN and TURN servers (at most :data:`MAX_ICE_SERVERS`; may be empty)."""
    ttl: int
    """Seconds the list may be used for new connections (TURN credentials stay valid at
    least this long), 1..86400."""


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """The body of every non-200 broker response."""

    error: str
    """A sentence for a human saying what was wrong."""
    field: str | None
    """The request field at fault, or ``None`` when no single field is."""


BrokerMessage = (
    ClientOffer
    | ClientAnswer
    | VolunteerPoll
    | PollResponse
    | VolunteerAnswer
    | AnswerAccepted
    | EgressList
    | NetworkStatsResponse
    | IceServersRequest
    | IceServersResponse
    | ErrorBody
)
"""Every message :func:`encode` accepts."""


# --- field rules (shared with the broker's configuration checks) ----------------------------


def check_sdp(value: str, field: str) -> None:
    """Raise :class:`MessageError` unless ``value`` is an acceptable SDP (§2)."""
    if len(value.encode("utf-8", errors="surrogatepass")) > MAX_SDP_BYTES:
        raise MessageError(
            f"{field} is longer than {MAX_SDP_BYTES} bytes", field=field, reason="bad_sdp"
        )
    if not value.startswith("v=0"):
        raise MessageError(
            f'{field} is not an SDP: it must begin with "v=0"', field=field, reason="bad_sdp"
        )
    if not any(line.startswith("m=application ") for line in value.splitlines()):
        raise MessageError(
            f'{field} has no "m=application" line: ferry needs a data channel',
            field=field,
            reason="bad_sdp",
        )


def check_identifier(value: str, field: str) -> None:
    """Raise :class:`MessageError` unless ``value`` is 16..64 of ``[A-Za-z0-9_-]``."""
    if _IDENTIFIER.fullmatch(value) is None:
        raise MessageError(
            f"{field} must be 16 to 64 characters of A-Z, a-z, 0-9, '_' or '-'",
            field=field,
            reason="bad_id",
        )


def check_egress_url(value: str, field: str) -> None:
    """Raise :class:`MessageError` unless ``value`` is a ``ws://``/``wss://`` URL (§2)."""

    def refuse(why: str) -> MessageError:
        return MessageError(f"{field} {why}", field=field, reason="bad_egress")

    if len(value) > MAX_EGRESS_URL_LENGTH:
        raise refuse(f"is longer than {MAX_EGRESS_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(value) is not None:
        raise refuse("contains spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise refuse(f"is not a valid URL ({exc})") from exc
    if parts.scheme not in ("ws", "wss"):
        raise refuse("must be a ws:// or wss:// URL")
    if not parts.hostname:
        raise refuse("has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry a user name or password")
    if parts.fragment or value.endswith("#"):
        raise refuse("must not have a #fragment")


def check_pairing(value: str, field: str) -> None:
    """Raise :class:`MessageError` unless ``value`` is a pairing code (16..64 of
    ``[A-Za-z0-9_-]``: long enough that a censor cannot guess one)."""
    if _IDENTIFIER.fullmatch(value) is None:
        raise MessageError(
            f"{field} must be 16 to 64 characters of A-Z, a-z, 0-9, '_' or '-'",
            field=field,
            reason="bad_pairing",
        )


def check_capacity(value: int, field: str) -> None:
    """Raise :class:`MessageError` unless ``value`` is within 1..1000."""
    if not MIN_CAPACITY <= value <= MAX_CAPACITY:
        raise MessageError(
            f"{field} must be between {MIN_CAPACITY} and {MAX_CAPACITY}, not {value}",
            field=field,
            reason="bad_capacity",
        )


# --- decoding -------------------------------------------------------------------------------


def _reject_constant(name: str) -> JsonValue:
    raise ValueError(f"{name} is not JSON")


def _object_without_duplicates(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    result: dict[str, JsonValue] = {}
    for key, value in pairs:
        if key in result:
            raise MessageError(
                f"field {key!r} is given twice", field=key[:64], reason="duplicate_field"
            )
        result[key] = value
    return result


def _parse_object(body: bytes) -> dict[str, JsonValue]:
    if len(body) > MAX_BODY_BYTES:
        raise MessageError(
            f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} are allowed",
            field=None,
            reason="too_large",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(
            f"the body is not UTF-8 (bad byte at offset {exc.start})",
            field=None,
            reason="not_utf8",
        ) from exc
    try:
        value: JsonValue = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except MessageError:
        raise
    except (ValueError, RecursionError) as exc:
        raise MessageError(
            f"the body is not valid JSON ({exc})", field=None, reason="not_json"
        ) from exc
    if not isinstance(value, dict):
        raise MessageError("the body must be a JSON object", field=None, reason="not_object")
    return value


def _check_version(fields: dict[str, JsonValue]) -> None:
    if "version" not in fields:
        raise MessageError(
            'the request has no "version" field', field="version", reason="missing_field"
        )
    version = fields["version"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise MessageError(
            f"version must be {PROTOCOL_VERSION}, not {json.dumps(version)[:32]}",
            field="version",
            reason="bad_version",
        )


def _check_keys(
    fields: dict[str, JsonValue],
    expected: tuple[str, ...],
    prefix: str,
    optional: tuple[str, ...] = (),
) -> None:
    for key in fields:
        if key not in expected and key not in optional:
            name = prefix + key[:64]
            raise MessageError(f"unknown field {name!r}", field=name, reason="unknown_field")
    for key in expected:
        if key not in fields:
            name = prefix + key
            raise MessageError(f"missing field {name!r}", field=name, reason="missing_field")


def _string(fields: dict[str, JsonValue], key: str, prefix: str) -> str:
    value = fields[key]
    if not isinstance(value, str):
        name = prefix + key
        raise MessageError(f"{name} must be a string", field=name, reason="wrong_type")
    return value


def _integer(fields: dict[str, JsonValue], key: str, prefix: str) -> int:
    value = fields[key]
    if type(value) is not int:
        name = prefix + key
        raise MessageError(f"{name} must be an integer", field=name, reason="wrong_type")
    return value


def _request_fields(
    body: bytes, expected: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, JsonValue]:
    fields = _parse_object(body)
    _check_version(fields)
    _check_keys(fields, ("version", *expected), "", optional)
    return fields


def _optional_pairing(fields: dict[str, JsonValue]) -> str | None:
    if "pairing" not in fields:
        return None
    pairing = _string(fields, "pairing", "")
    check_pairing(pairing, "pairing")
    return pairing


def _optional_nat(fields: dict[str, JsonValue]) -> NatType:
    if "nat" not in fields:
        return "unknown"
    value = _string(fields, "nat", "")
    for nat in NAT_TYPES:
        if value == nat:
            return nat
    raise MessageError(
        'nat must be "restricted", "unrestricted" or "unknown"', field="nat", reason="bad_nat"
    )


def _optional_kind(fields: dict[str, JsonValue]) -> VolunteerKind:
    if "kind" not in fields:
        return "unknown"
    value = _string(fields, "kind", "")
    for kind in VOLUNTEER_KINDS:
        if value == kind and kind != "unknown":
            return kind
    raise MessageError(
        'kind must be "browser", "python" or "python-browser-engine"',
        field="kind",
        reason="bad_kind",
    )


def decode_client_offer(body: bytes) -> ClientOffer:
    """Decode a ``POST /v1/client/offer`` body; raise :class:`MessageError` if invalid."""
    fields = _request_fields(body, ("offer", "egress"), ("pairing", "nat"))
    offer = _string(fields, "offer", "")
    check_sdp(offer, "offer")
    egress = _string(fields, "egress", "")
    check_egress_url(egress, "egress")
    return ClientOffer(
        offer=offer, egress=egress, pairing=_optional_pairing(fields), nat=_optional_nat(fields)
    )


def decode_client_answer(body: bytes) -> ClientAnswer:
    """Decode the 200 response to a client offer; raise :class:`MessageError` if invalid."""
    fields = _parse_object(body)
    _check_keys(fields, ("answer",), "")
    answer = _string(fields, "answer", "")
    check_sdp(answer, "answer")
    return ClientAnswer(answer=answer)


def decode_volunteer_poll(body: bytes) -> VolunteerPoll:
    """Decode a ``POST /v1/volunteer/poll`` body; raise :class:`MessageError` if invalid."""
    fields = _request_fields(body, ("volunteer_id", "capacity"), ("pairing", "nat", "kind"))
    volunteer_id = _string(fields, "volunteer_id", "")
    check_identifier(volunteer_id, "volunteer_id")
    capacity = _integer(fields, "capacity", "")
    check_capacity(capacity, "capacity")
    return VolunteerPoll(
        volunteer_id=volunteer_id,
        capacity=capacity,
        pairing=_optional_pairing(fields),
        nat=_optional_nat(fields),
        kind=_optional_kind(fields),
    )


def _decode_match_offer(value: JsonValue) -> MatchOffer:
    prefix = "match."
    if not isinstance(value, dict):
        raise MessageError("match must be an object or null", field="match", reason="wrong_type")
    _check_keys(value, ("id", "offer", "egress"), prefix)
    match_id = _string(value, "id", prefix)
    check_identifier(match_id, "match.id")
    offer = _string(value, "offer", prefix)
    check_sdp(offer, "match.offer")
    egress = _string(value, "egress", prefix)
    check_egress_url(egress, "match.egress")
    return MatchOffer(id=match_id, offer=offer, egress=egress)


def decode_poll_response(body: bytes) -> PollResponse:
    """Decode the 200 response to a volunteer poll; raise :class:`MessageError` if invalid."""
    fields = _parse_object(body)
    _check_keys(fields, ("match",), "", ("ice_servers",))
    value = fields["match"]
    ice_servers = _ice_servers(fields["ice_servers"]) if "ice_servers" in fields else ()
    return PollResponse(
        match=None if value is None else _decode_match_offer(value), ice_servers=ice_servers
    )


def _ice_server(value: JsonValue, name: str) -> IceServer:
    if not isinstance(value, dict):
        raise MessageError(f"{name} must be an object", field=name, reason="wrong_type")
    _check_keys(value, ("url",), name + ".", ("username", "credential"))
    url = _string(value, "url", name + ".")
    username = _string(value, "username", name + ".") if "username" in value else None
    credential = _string(value, "credential", name + ".") if "credential" in value else None
    try:
        return IceServer(url, username=username, credential=credential)
    except IceServerError as exc:
        field = f"{name}.url" if exc.reason == "bad_url" else name
        raise MessageError(f"{field}: {exc}", field=field, reason="bad_ice_server") from exc


def _ice_servers(value: JsonValue) -> tuple[IceServer, ...]:
    if not isinstance(value, list):
        raise MessageError("ice_servers must be a list", field="ice_servers", reason="wrong_type")
    if len(value) > MAX_ICE_SERVERS:
        raise MessageError(
            f"ice_servers holds {len(value)} servers; at most {MAX_ICE_SERVERS} are allowed",
            field="ice_servers",
            reason="bad_ice_server",
        )
    return tuple(_ice_server(entry, f"ice_servers.{index}") for index, entry in enumerate(value))


def decode_ice_servers_request(body: bytes) -> IceServersRequest:
    """Decode a ``POST /v1/ice-servers`` body; raise :class:`MessageError` if invalid."""
    _request_fields(body, ())
    return IceServersRequest()


def decode_ice_servers_response(body: bytes) -> IceServersResponse:
    """Decode the 200 response to ``POST /v1/ice-servers``; raise :class:`MessageError` if
    invalid."""
    fields = _parse_object(body)
    _check_keys(fields, ("ice_servers", "ttl"), "")
    ice_servers = _ice_servers(fields["ice_servers"])
    ttl = _integer(fields, "ttl", "")
    if not MIN_ICE_TTL <= ttl <= MAX_ICE_TTL:
        raise MessageError(
            f"ttl must be between {MIN_ICE_TTL} and {MAX_ICE_TTL} seconds, not {ttl}",
            field="ttl",
            reason="bad_ttl",
        )
    return IceServersResponse(ice_servers=ice_servers, ttl=ttl)


def decode_volunteer_answer(body: bytes) -> VolunteerAnswer:
    """Decode a ``POST /v1/volunteer/answer`` body; raise :class:`MessageError` if invalid."""
    fields = _request_fields(body, ("match_id", "answer"))
    match_id = _string(fields, "match_id", "")
    check_identifier(match_id, "match_id")
    answer = _string(fields, "answer", "")
    check_sdp(answer, "answer")
    return VolunteerAnswer(match_id=match_id, answer=answer)


def decode_answer_accepted(body: bytes) -> AnswerAccepted:
    """Decode the 200 response to a volunteer answer; raise :class:`MessageError` if invalid."""
    fields = _parse_object(body)
    _check_keys(fields, ("ok",), "")
    if fields["ok"] is not True:
        raise MessageError("ok must be true", field="ok", reason="wrong_type")
    return AnswerAccepted()


def decode_egress_list(body: bytes) -> EgressList:
    """Decode the ``GET /v1/egresses`` response; raise :class:`MessageError` if invalid."""
    fields = _parse_object(body)
    _check_keys(fields, ("egresses",), "")
    values = fields["egresses"]
    if not isinstance(values, list):
        raise MessageError("egresses must be a list", field="egresses", reason="wrong_type")
    egresses: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise MessageError("egresses must hold strings", field="egresses", reason="wrong_type")
        check_egress_url(value, "egresses")
        egresses.append(value)
    return EgressList(egresses=tuple(egresses))


def decode_network_stats(body: bytes) -> NetworkStatsResponse:
    """Decode the ``GET /v1/stats`` response; raise :class:`MessageError` if invalid."""
    fields = _parse_object(body)
    keys = ("volunteers_online", "clients_helped_last_hour")
    _check_keys(fields, keys, "")
    counts = [_integer(fields, key, "") for key in keys]
    for key, count in zip(keys, counts, strict=True):
        if count < 0:
            raise MessageError(f"{key} must not be negative", field=key, reason="wrong_type")
    return NetworkStatsResponse(volunteers_online=counts[0], clients_helped_last_hour=counts[1])


def decode_error_body(body: bytes) -> ErrorBody:
    """Decode the body of a non-200 broker response; raise :class:`MessageError` if invalid."""
    fields = _parse_object(body)
    _check_keys(fields, ("error", "field"), "")
    error = _string(fields, "error", "")
    field = fields["field"]
    if field is not None and not isinstance(field, str):
        raise MessageError("field must be a string or null", field="field", reason="wrong_type")
    return ErrorBody(error=error, field=field)


DECODERS: dict[str, Callable[[bytes], BrokerMessage]] = {
    "client_offer": decode_client_offer,
    "client_answer": decode_client_answer,
    "volunteer_poll": decode_volunteer_poll,
    "poll_response": decode_poll_response,
    "volunteer_answer": decode_volunteer_answer,
    "answer_accepted": decode_answer_accepted,
    "egress_list": decode_egress_list,
    "network_stats": decode_network_stats,
    "ice_servers_request": decode_ice_servers_request,
    "ice_servers_response": decode_ice_servers_response,
    "error_body": decode_error_body,
}
"""Each decoder by the message name the test vectors (``tests/vectors/``) use."""


# --- encoding -------------------------------------------------------------------------------


def _match_fields(match: MatchOffer) -> dict[str, JsonValue]:
    return {"id": match.id, "offer": match.offer, "egress": match.egress}


def _ice_server_fields(servers: tuple[IceServer, ...]) -> list[JsonValue]:
    entries: list[JsonValue] = []
    for server in servers:
        entry: dict[str, JsonValue] = {"url": server.url}
        if server.username is not None:
            entry["username"] = server.username
        if server.credential is not None:
            entry["credential"] = server.credential
        entries.append(entry)
    return entries


def _fields(message: BrokerMessage) -> dict[str, JsonValue]:
    match message:
        case ClientOffer(offer=offer, egress=egress, pairing=pairing, nat=nat):
            fields: dict[str, JsonValue] = {
                "version": PROTOCOL_VERSION,
                "offer": offer,
                "egress": egress,
            }
            if pairing is not None:
                fields["pairing"] = pairing
            if nat != "unknown":
                fields["nat"] = nat
            return fields
        case ClientAnswer(answer=answer):
            return {"answer": answer}
        case VolunteerPoll(
            volunteer_id=volunteer_id, capacity=capacity, pairing=pairing, nat=nat, kind=kind
        ):
            fields = {
                "version": PROTOCOL_VERSION,
                "volunteer_id": volunteer_id,
                "capacity": capacity,
            }
            if pairing is not None:
                fields["pairing"] = pairing
            if nat != "unknown":
                fields["nat"] = nat
            if kind != "unknown":
                fields["kind"] = kind
            return fields
        case PollResponse(match=match, ice_servers=ice_servers):
            fields = {"match": None if match is None else _match_fields(match)}
            if ice_servers:
                fields["ice_servers"] = _ice_server_fields(ice_servers)
            return fields
        case IceServersRequest():
            return {"version": PROTOCOL_VERSION}
        case IceServersResponse(ice_servers=ice_servers, ttl=ttl):
            return {"ice_servers": _ice_server_fields(ice_servers), "ttl": ttl}
        case VolunteerAnswer(match_id=match_id, answer=answer):
            return {"version": PROTOCOL_VERSION, "match_id": match_id, "answer": answer}
        case AnswerAccepted():
            return {"ok": True}
        case EgressList(egresses=egresses):
            return {"egresses": list(egresses)}
        case NetworkStatsResponse(
            volunteers_online=volunteers_online, clients_helped_last_hour=helped
        ):
            return {"volunteers_online": volunteers_online, "clients_helped_last_hour": helped}
        case ErrorBody(error=error, field=field):
            return {"error": error, "field": field}
    raise TypeError(f"not a broker message: {type(message).__name__}")  # pragma: no cover


def encode(message: BrokerMessage) -> bytes:
    """The JSON body of ``message`` (compact, ASCII-only; requests get ``"version": 1``).

    Encoding does not validate: encode only messages you decoded or built from valid parts.
    """
    return json.dumps(_fields(message), separators=(",", ":")).encode("ascii")
