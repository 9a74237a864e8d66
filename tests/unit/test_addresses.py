"""ferry.core.addresses: how a requested destination is classified and validated."""

from __future__ import annotations

import pytest

from ferry.core.addresses import AddressType, Target


@pytest.mark.parametrize(
    ("host", "kind", "text"),
    [
        ("example.org", AddressType.DOMAIN, "example.org:443"),
        ("192.0.2.7", AddressType.IPV4, "192.0.2.7:443"),
        ("2001:db8::1", AddressType.IPV6, "[2001:db8::1]:443"),
        ("localhost", AddressType.DOMAIN, "localhost:443"),
    ],
)
def test_address_type_and_display(host: str, kind: AddressType, text: str) -> None:
    target = Target(host, 443)
    assert target.address_type is kind
    assert str(target) == text


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        Target("example.org", port)


def test_empty_and_oversized_and_non_ascii_hosts_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Target("", 80)
    with pytest.raises(ValueError, match="255"):
        Target("a" * 256, 80)
    Target("a" * 255, 80)  # the longest a SOCKS/stream header can carry
    with pytest.raises(ValueError, match="ASCII"):
        Target("bücher.example", 80)


def test_targets_are_frozen_values() -> None:
    assert Target("example.org", 80) == Target("example.org", 80)
    assert len({Target("example.org", 80), Target("example.org", 80)}) == 1
    with pytest.raises(AttributeError):
        Target("example.org", 80).port = 81  # type: ignore[misc]
