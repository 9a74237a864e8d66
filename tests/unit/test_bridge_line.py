"""The bridge line (docs/protocol.md §6): canonical form, tolerant paste, clear errors."""

from __future__ import annotations

import hashlib

import pytest

from ferry.core.bridge_line import (
    BridgeLine,
    bridge_line_checksum,
    certificate_fingerprint,
    parse_bridge_line,
)
from ferry.errors import ConfigError

FINGERPRINT = bytes(range(32))
HEX = FINGERPRINT.hex()
URL = "ws://egress.example:8443/v1/relay"


def signed(url: str, fingerprint_text: str) -> str:
    """``ferry1 URL FINGERPRINT check=...`` with the checksum that matches what is given."""
    body = f"ferry1 {url} {fingerprint_text}"
    return f"{body} check={bridge_line_checksum(body)}"


LINE = signed(URL, f"sha256={HEX}")
CHECK = LINE.rsplit("=", 1)[1]


def test_str_is_the_canonical_line() -> None:
    assert str(BridgeLine(URL, FINGERPRINT)) == LINE


def test_canonical_line_parses_back() -> None:
    assert parse_bridge_line(LINE) == BridgeLine(URL, FINGERPRINT)


@pytest.mark.parametrize(
    "text",
    [
        f"  {LINE}\n",
        f"\n\n{LINE}\r\n",
        f"\t{LINE}\t",
        f"ferry1   {URL}\n sha256={HEX}\n check={CHECK}",
    ],
    ids=["spaces", "blank-lines-crlf", "tabs", "wrapped-by-a-mail-program"],
)
def test_surrounding_and_separating_whitespace_is_tolerated(text: str) -> None:
    assert parse_bridge_line(text) == BridgeLine(URL, FINGERPRINT)


@pytest.mark.parametrize(
    "url",
    [
        "wss://egress.example/v1/relay",
        "ws://127.0.0.1:8443/v1/relay",
        "ws://[::1]:8443/v1/relay",
        "wss://egress.example:443/v1/relay?pool=2",
    ],
)
def test_urls_that_are_accepted(url: str) -> None:
    line = parse_bridge_line(signed(url, f"sha256={HEX}"))
    assert line.url == url
    assert str(line) == signed(url, f"sha256={HEX}")


def test_certificate_fingerprint_is_sha256_of_der() -> None:
    der = b"0\x82\x01\x0a not really a certificate"
    assert certificate_fingerprint(der) == hashlib.sha256(der).digest()
    assert len(certificate_fingerprint(der)) == 32
    line = BridgeLine(URL, certificate_fingerprint(der))
    assert " sha256=" + hashlib.sha256(der).hexdigest() + " check=" in str(line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the bridge line is empty"),
        ("  \n ", "the bridge line is empty"),
        (f"ferry {URL} sha256={HEX}", "not a ferry bridge line: it must start with ferry1"),
        (f"FERRY1 {URL} sha256={HEX}", "not a ferry bridge line: it must start with ferry1"),
        (f"{URL} sha256={HEX}", "not a ferry bridge line: it must start with ferry1"),
        (f"obfs4 {URL} sha256={HEX}", "not a ferry bridge line: it must start with ferry1"),
        (f"ferry2 {URL} sha256={HEX}", "format ferry2, which this version of ferry does not"),
        ("ferry1", "the bridge line is cut short: the egress URL and the fingerprint"),
        (f"ferry1 {URL}", "the bridge line is cut short: the fingerprint (sha256=...)"),
        (f"ferry1 sha256={HEX}", "missing the egress URL"),
        (f"{LINE} extra", "extra text after the checksum"),
        (f"ferry1 {URL} sha256={HEX} extra", "its last part must be check="),
        (f"ferry1 {URL} sha256={HEX}", "the checksum (check=...) at its end is missing"),
        (LINE[:-3], "this bridge line is damaged: its checksum does not match"),
        (LINE.replace("8443", "8434"), "this bridge line is damaged: its checksum does not match"),
        (LINE.replace("sha256=00", "sha256=01"), "damaged: its checksum does not match"),
        (
            f"ferry1 {URL} sha256={HEX[:40]}",
            "the bridge line is cut short: the fingerprint has 40 of 64 hex digits",
        ),
        (f"ferry1 {URL} sha256=", "the fingerprint has 0 of 64 hex digits"),
        (signed(URL, f"sha256={HEX}00"), "has 66 hex digits, but must have exactly 64"),
        (signed(URL, f"sha256={HEX[:-1]}g"), "contains 'g', which is not a hex digit"),
        (signed(URL, f"sha256={HEX.upper()}"), "must be written in lowercase hex digits"),
        (signed(URL, f"sha1={HEX}"), "must start with sha256="),
        (signed(URL, f"{HEX}"), "must start with sha256="),
        (signed("https://egress.example/", f"sha256={HEX}"), "must start with ws:// or wss://"),
        (signed("egress.example:8443", f"sha256={HEX}"), "must start with ws:// or wss://"),
        (signed("ws:///v1/relay", f"sha256={HEX}"), "has no host name"),
        (signed("ws://", f"sha256={HEX}"), "has no host name"),
        (signed("ws://egress.example:99999/", f"sha256={HEX}"), "not a valid URL"),
        (signed("ws://egress.example:0/", f"sha256={HEX}"), "has port 0"),
        (signed("ws://[::1/v1", f"sha256={HEX}"), "not a valid URL"),
        (signed("ws://user:pw@egress.example/", f"sha256={HEX}"), "user name or password"),
        (signed("ws://egress.example/#x", f"sha256={HEX}"), "must not contain a '#' part"),
        (
            signed(f"ws://egress.example/{'a' * 2100}", f"sha256={HEX}"),
            "at most 2048 are allowed",
        ),
    ],
)
def test_bad_lines_say_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bridge_line(text)
    assert expected in str(caught.value)


def test_constructor_validates_fingerprint_length() -> None:
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        BridgeLine(URL, b"\x00" * 20)


def test_constructor_validates_url() -> None:
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        BridgeLine("http://egress.example/", FINGERPRINT)


def test_url_with_invisible_characters_is_refused() -> None:
    with pytest.raises(ConfigError, match="spaces or invisible text"):
        BridgeLine("ws://egress.example/\u200b", FINGERPRINT)


def test_bridge_line_is_frozen() -> None:
    line = BridgeLine(URL, FINGERPRINT)
    with pytest.raises(AttributeError):
        line.url = "ws://other.example/"  # type: ignore[misc]
    assert line.url == URL
