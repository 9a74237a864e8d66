"""The routing key (docs/protocol.md §3.1): drawn, written into an offer, read back strictly,
put into the egress URL; pinned by ``tests/vectors/route_keys.json``, which the widget's
browser test runs too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.core.route_key import (
    is_route_key,
    new_route_key,
    relay_url_with_route,
    route_key_of,
    with_route_key,
)
from ferry.errors import ProtocolError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "route_keys.json").read_text("utf-8"))


@pytest.mark.parametrize("case", VECTORS["offers"], ids=lambda case: case["name"])
def test_offer_vectors(case: dict[str, str | None]) -> None:
    sdp = case["sdp"]
    assert sdp is not None
    if case["expect"] == "bad_route":
        with pytest.raises(ProtocolError) as caught:
            route_key_of(sdp)
        assert caught.value.reason == "bad_route"
    else:
        assert route_key_of(sdp) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["urls"], ids=lambda case: case["url"])
def test_url_vectors(case: dict[str, str | None]) -> None:
    assert case["url"] is not None
    assert relay_url_with_route(case["url"], case["key"]) == case["expect"]


def test_fresh_keys_are_valid_distinct_and_read_back_from_the_offer() -> None:
    keys = {new_route_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(is_route_key(key) for key in keys)
    offer = VECTORS["offers"][0]["sdp"]
    for key in list(keys)[:20]:
        written = with_route_key(offer, key)
        assert route_key_of(written) == key
        # only the one attribute line was added, before the media section
        assert written.replace(f"a=x-ferry-route:{key}\r\n", "") == offer


def test_writing_refuses_what_is_not_a_key_or_not_an_offer() -> None:
    offer = VECTORS["offers"][0]["sdp"]
    with pytest.raises(ValueError):
        with_route_key(offer, "short")
    with pytest.raises(ValueError):
        with_route_key("v=0\r\ns=-\r\n", new_route_key())
    with pytest.raises(ValueError):
        relay_url_with_route("wss://egress.example/v1/relay", "x&y=1")
