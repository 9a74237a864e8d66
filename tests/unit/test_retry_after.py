"""Retry-After parsing and the wait it leads to (ferry.core.retry_after): sans-IO, synchronous."""

from __future__ import annotations

import calendar

import pytest

from ferry.core.retry_after import (
    MAX_RETRY_AFTER_SECONDS,
    RetryAfterError,
    parse_retry_after,
    retry_delay,
)
from ferry.errors import ProtocolError

NOW = float(calendar.timegm((2026, 11, 27, 23, 0, 0, 0, 0, 0)))
"""Fri, 27 Nov 2026 23:00:00 GMT."""


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 7\t", 7.0),
        ("007", 7.0),
        ("999999999999", MAX_RETRY_AFTER_SECONDS),
        ("9" * 5000, MAX_RETRY_AFTER_SECONDS),  # more digits than int() accepts by default
    ],
)
def test_delay_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Fri, 27 Nov 2026 23:00:30 GMT", 30.0),  # IMF-fixdate
        ("Friday, 27-Nov-26 23:01:00 GMT", 60.0),  # RFC 850
        ("Fri Nov 27 23:02:00 2026", 120.0),  # asctime
        ("Sat Nov 28 00:00:00 2026", 3600.0),
        ("Sun Nov  1 00:00:00 2026", 0.0),  # asctime with a space-padded day, in the past
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # the past: no wait
        ("Fri, 01 Jan 9999 00:00:00 GMT", MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "-5",
        "+5",
        "1.5",
        "1e3",
        "soon",
        "5 seconds",
        "0x10",
        "١٢",  # Arabic-Indic digits: str.isdigit() says yes, the RFC says DIGIT is ASCII
        "Fri, 27 Nov 2026 23:00:30 UTC",
        "Fri, 27 Nov 2026 25:00:30 GMT",
        "Fri, 32 Nov 2026 23:00:30 GMT",
        "27 Nov 2026 23:00:30 GMT",
        "Fri, 27 Foo 2026 23:00:30 GMT",
        "Fri, 27 Nov 2026 23:00:30 GMT trailing",
        "\x00",
    ],
)
def test_garbage_is_refused_by_name(value: str) -> None:
    with pytest.raises(RetryAfterError, match="Retry-After") as caught:
        parse_retry_after(value, NOW)
    assert isinstance(caught.value, ProtocolError)
    assert caught.value.reason == "bad_retry_after"


def test_rfc850_two_digit_year_far_in_the_future_is_in_the_past() -> None:
    # 2026 + 50 < 2099: "99" is 1999, long past.
    assert parse_retry_after("Friday, 31-Dec-99 23:59:59 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    ("backoff", "retry_after", "cap", "expected"),
    [
        (0.5, None, 300.0, 0.5),  # no header (or a malformed one): the usual backoff
        (0.5, 3.0, 300.0, 3.0),  # the broker asked for longer: wait that long
        (4.0, 3.0, 300.0, 4.0),  # never less than the backoff
        (0.5, 10.0**9, 300.0, 300.0),  # never longer than the cap
        (0.5, 0.0, 300.0, 0.5),
        (30.0, 10.0**9, 5.0, 30.0),  # a backoff longer than the cap still holds
        (0.5, float("inf"), 300.0, 300.0),
        (0.5, float("nan"), 300.0, 0.5),
        (0.5, -3.0, 300.0, 0.5),
    ],
)
def test_retry_delay(
    backoff: float, retry_after: float | None, cap: float, expected: float
) -> None:
    assert retry_delay(backoff, retry_after, cap) == expected
