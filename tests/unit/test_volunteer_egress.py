"""Which egresses a volunteer accepts (``ferry.core.volunteer_egress``), against the vectors
the widget runs too (``tests/vectors/volunteer_egress.json``)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from ferry.core.volunteer_egress import EgressChoice, internal_address_class
from ferry.errors import ConfigError

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "volunteer_egress.json").read_text("utf-8")
)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["url"])
def test_refuse_url_follows_the_vectors(case: dict[str, object]) -> None:
    allowed = case["allowed"]
    assert isinstance(allowed, list)
    choice = EgressChoice(allowed=tuple(allowed), allow_internal=bool(case["allow_internal"]))
    url = case["url"]
    assert isinstance(url, str)
    refusal = choice.refuse_url(url)
    assert (refusal.reason if refusal else None) == case["expect"]
    assert (refusal.address_class if refusal else None) == case["label"]
    if refusal is not None:
        assert refusal.message.startswith(f"refusing egress {url}: ")


@pytest.mark.parametrize("entry", VECTORS["bad_entries"])
def test_bad_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match="egress allowlist entry"):
        EgressChoice(allowed=(entry,))


def test_the_loopback_message_says_why() -> None:
    refusal = EgressChoice().refuse_url("ws://127.0.0.1:8080/admin/ws")
    assert refusal is not None
    assert refusal.message.startswith(
        "refusing egress ws://127.0.0.1:8080/admin/ws: loopback addresses are not egresses"
    )


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("fe80::1%2", "link_local"),
        ("93.184.216.34", None),
        ("2606:4700::1", None),
    ],
)
def test_resolved_addresses_are_judged_by_the_same_table(address: str, label: str | None) -> None:
    parsed = ipaddress.ip_address(address)
    assert internal_address_class(parsed) == label
    refusal = EgressChoice().refuse_address("wss://egress.example/", parsed)
    assert (refusal.address_class if refusal else None) == label
    assert EgressChoice(allow_internal=True).refuse_address("wss://e.example/", parsed) is None
