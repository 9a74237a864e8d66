"""The broker's HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Written by hand from ``docs/protocol.md`` §2 and ``ferry.core.broker_messages``; a test
(``tests/integration/test_broker_openapi.py``) checks that the two agree (paths, fields and
enumerations) and runs schemathesis against a live broker with it. The schemas describe what
a valid message looks like; the broker's own decoder is stricter in places a schema cannot
say (an SDP must have an ``m=application`` line on a line of its own, an egress URL must parse).
"""

from __future__ import annotations

from ferry.core.broker_messages import (
    MAX_CAPACITY,
    MAX_EGRESS_URL_LENGTH,
    MAX_ICE_TTL,
    MIN_CAPACITY,
    MIN_ICE_TTL,
    NAT_TYPES,
    PROTOCOL_VERSION,
    JsonValue,
)
from ferry.core.ice_servers import MAX_CREDENTIAL_LENGTH, MAX_ICE_SERVERS, MAX_URL_LENGTH

API_VERSION = "1.2.0"
"""The document's ``info.version``: the ``/v1`` API, with ``nat``, ``kind``, 429 and ICE
servers."""

_IDENTIFIER: JsonValue = {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"}
_SDP: JsonValue = {
    "type": "string",
    "description": "An SDP of at most 32 KiB (UTF-8) beginning with v=0 and holding an "
    "m=application line (a data channel).",
    "pattern": "^v=0",
}
_EGRESS: JsonValue = {
    "type": "string",
    "description": "A ws:// or wss:// URL with a host, no user name, password or #fragment.",
    "pattern": "^wss?://",
    "maxLength": MAX_EGRESS_URL_LENGTH,
}
_NAT: JsonValue = {
    "type": "string",
    "enum": list(NAT_TYPES),
    "description": "The sender's NAT type; left out means unknown.",
}


def _ref(name: str) -> JsonValue:
    return {"$ref": f"#/components/schemas/{name}"}


_ICE_SERVERS: JsonValue = {"type": "array", "maxItems": MAX_ICE_SERVERS, "items": _ref("IceServer")}
_CREDENTIAL: JsonValue = {
    "type": "string",
    "pattern": "^[!-~]+$",
    "minLength": 1,
    "maxLength": MAX_CREDENTIAL_LENGTH,
}


def _json_body(schema: JsonValue) -> JsonValue:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> JsonValue:
    return {"description": description, **_dict(_json_body(_ref("ErrorBody")))}


def _unavailable(description: str) -> JsonValue:
    """A 503: when the broker is full, closing or without its store, ``Retry-After`` says
    when to come back (docs/protocol.md §2.9)."""
    return {
        **_dict(_error(description)),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    }


def _dict(value: JsonValue) -> dict[str, JsonValue]:
    assert isinstance(value, dict)
    return value


_ERRORS: dict[str, JsonValue] = {
    "400": _error("The body broke a rule; field names the field at fault."),
    "413": _error("The body is larger than 64 KiB."),
    "415": _error("The body was not sent as application/json."),
}

_RATE_LIMITED: JsonValue = {
    "description": "Too many requests from this source; retry after Retry-After seconds.",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    **_dict(_json_body(_ref("ErrorBody"))),
}


def _request(*, required: list[str], properties: dict[str, JsonValue]) -> JsonValue:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["version", *required],
        "properties": {"version": {"const": PROTOCOL_VERSION}, **properties},
    }


def _object(
    required: list[str], properties: dict[str, JsonValue], *, description: str | None = None
) -> JsonValue:
    """A response body: exactly these properties, ``required`` among them."""
    described: dict[str, JsonValue] = {} if description is None else {"description": description}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list[JsonValue](required),
        **described,
        "properties": properties,
    }


def _counter_of_eight() -> JsonValue:
    return {"type": "integer", "minimum": 0, "multipleOf": 8}


def _schemas() -> dict[str, JsonValue]:
    return {
        "ClientOffer": _request(
            required=["offer", "egress"],
            properties={"offer": _SDP, "egress": _EGRESS, "pairing": _IDENTIFIER, "nat": _NAT},
        ),
        "ClientAnswer": _object(["answer"], {"answer": _SDP}),
        "VolunteerPoll": _request(
            required=["volunteer_id", "capacity"],
            properties={
                "volunteer_id": _IDENTIFIER,
                "capacity": {"type": "integer", "minimum": MIN_CAPACITY, "maximum": MAX_CAPACITY},
                "pairing": _IDENTIFIER,
                "nat": _NAT,
                "kind": {"type": "string", "enum": ["browser", "python"]},
            },
        ),
        "MatchOffer": _object(
            ["id", "offer", "egress"], {"id": _IDENTIFIER, "offer": _SDP, "egress": _EGRESS}
        ),
        "PollResponse": _object(
            ["match"],
            {
                "match": {"oneOf": [{"type": "null"}, _ref("MatchOffer")]},
                "ice_servers": _ICE_SERVERS,
            },
        ),
        "IceServersRequest": _request(required=[], properties={}),
        "IceServersResponse": _object(
            ["ice_servers", "ttl"],
            {
                "ice_servers": _ICE_SERVERS,
                "ttl": {"type": "integer", "minimum": MIN_ICE_TTL, "maximum": MAX_ICE_TTL},
            },
        ),
        "IceServer": _object(
            ["url"],
            {
                "url": {
                    "type": "string",
                    "pattern": "^(stuns?|turns?):",
                    "maxLength": MAX_URL_LENGTH,
                },
                "username": _CREDENTIAL,
                "credential": _CREDENTIAL,
            },
            description="A STUN or TURN server (docs/protocol.md §2.10); username and "
            "credential only for TURN, both or neither.",
        ),
        "VolunteerAnswer": _request(
            required=["match_id", "answer"],
            properties={"match_id": _IDENTIFIER, "answer": _SDP},
        ),
        "AnswerAccepted": _object(["ok"], {"ok": {"const": True}}),
        "EgressList": _object(["egresses"], {"egresses": {"type": "array", "items": _EGRESS}}),
        "NetworkStats": _object(
            ["volunteers_online", "clients_helped_last_hour"],
            {
                "volunteers_online": _counter_of_eight(),
                "clients_helped_last_hour": _counter_of_eight(),
            },
        ),
        "ErrorBody": _object(
            ["error", "field"],
            {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
        ),
    }


def _post(
    summary: str, request: str, response: str, extra: dict[str, JsonValue]
) -> dict[str, JsonValue]:
    responses: dict[str, JsonValue] = {
        "200": {"description": "Done.", **_dict(_json_body(_ref(response)))},
        **_ERRORS,
        **extra,
    }
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, **_dict(_json_body(_ref(request)))},
            "responses": responses,
        }
    }


def _get(summary: str, response: JsonValue, media_type: str = "application/json") -> JsonValue:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {
                    "description": "Done.",
                    "content": {media_type: {"schema": response}},
                }
            },
        }
    }


def openapi_document() -> dict[str, JsonValue]:
    """The OpenAPI 3.1 description of the broker's HTTP API (``docs/protocol.md`` §2)."""
    paths: dict[str, JsonValue] = {
        "/v1/client/offer": _post(
            "A client's offer, held until a volunteer answers (docs/protocol.md §2.1).",
            "ClientOffer",
            "ClientAnswer",
            {
                "429": _RATE_LIMITED,
                "503": _unavailable(
                    "No volunteer answered in time (no Retry-After: try again soon), or the "
                    "broker is full, closing or without its store (Retry-After says when)."
                ),
            },
        ),
        "/v1/volunteer/poll": _post(
            "A volunteer's long poll, held until a client comes (docs/protocol.md §2.2).",
            "VolunteerPoll",
            "PollResponse",
            {
                "429": _RATE_LIMITED,
                "503": _unavailable("The broker holds too many polls (Retry-After says when)."),
            },
        ),
        "/v1/volunteer/answer": _post(
            "A volunteer's answer to a match (docs/protocol.md §2.3).",
            "VolunteerAnswer",
            "AnswerAccepted",
            {"404": _error("The match is unknown or expired.")},
        ),
        "/v1/ice-servers": _post(
            "The STUN and TURN servers a peer should gather with, TURN credentials minted for "
            "it (docs/protocol.md §2.10).",
            "IceServersRequest",
            "IceServersResponse",
            {"429": _RATE_LIMITED},
        ),
        "/v1/egresses": _get("The egresses volunteers may be sent to (§2.4).", _ref("EgressList")),
        "/v1/stats": _get("The network's live state, rounded (§2.6).", _ref("NetworkStats")),
        "/healthz": _get("Liveness (§2.5).", {"type": "string"}, "text/plain"),
        "/metrics": _get("Prometheus text (§2.5).", {"type": "string"}, "text/plain"),
        "/status": _get("The status page (§2.8).", {"type": "string"}, "text/html"),
        "/openapi.json": _get("This document (§2.8).", {"type": "object"}),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ferry broker",
            "version": API_VERSION,
            "description": "Matches clients that need a relay with volunteers that offer one. "
            "Every wire format is in docs/protocol.md §2.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
