"""How long a broker asked us to wait: the HTTP ``Retry-After`` header (sans-IO).

RFC 9110 §10.2.3: ``Retry-After = HTTP-date / delay-seconds``, where ``delay-seconds`` is one
or more digits and an ``HTTP-date`` is an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) or
one of the two obsolete forms a recipient must still accept (RFC 850:
``Sunday, 06-Nov-94 08:49:37 GMT``; asctime: ``Sun Nov  6 08:49:37 1994``). The broker sends
delay-seconds with its ``429``; a front or a later broker may send either form, with a ``429``
or a ``503``.

:func:`parse_retry_after` turns a header into seconds from ``now`` (a date in the past is
0 s); :func:`retry_delay` combines them with the caller's own backoff: at least the backoff,
at least what the broker asked, but never more than the caller's cap (unless its own backoff
is longer). Nothing here reads a clock: ``now`` is passed in (Unix time, for dates).
"""

from __future__ import annotations

import calendar
import math
import re

from ferry.errors import ProtocolError

__all__ = ["MAX_RETRY_AFTER_SECONDS", "RetryAfterError", "parse_retry_after", "retry_delay"]

MAX_RETRY_AFTER_SECONDS = 10.0**9
"""Longest wait :func:`parse_retry_after` reports (about 31 years): a larger value, or more
digits than fit, saturates here; callers cap it far lower anyway."""

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})")


class RetryAfterError(ProtocolError):
    """A ``Retry-After`` value is neither delay-seconds nor an HTTP-date."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="bad_retry_after")


def _date_seconds(year: int, month: str, day: int, hour: int, minute: int, second: int) -> float:
    if not (1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        raise RetryAfterError("the Retry-After date has a field out of range")
    try:
        return float(calendar.timegm((year, _MONTHS[month], day, hour, minute, second, 0, 0, 0)))
    except (OverflowError, ValueError) as exc:  # pragma: no cover - ranges checked above
        raise RetryAfterError("the Retry-After date cannot be represented") from exc


def _parse_date(text: str, now: float) -> float | None:
    """Seconds since the epoch of an HTTP-date, or ``None`` if ``text`` is not one."""
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
        return _date_seconds(int(year), month, int(day), int(hour), int(minute), int(second))
    if match := _RFC850_DATE.fullmatch(text):
        day, month, short_year, hour, minute, second = match.groups()
        # RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past.
        this_year = int(now // 31_556_952) + 1970
        year = (this_year // 100) * 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _date_seconds(year, month, int(day), int(hour), int(minute), int(second))
    if match := _ASCTIME_DATE.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
        return _date_seconds(
            int(year), month, int(day.strip()), int(hour), int(minute), int(second)
        )
    return None


def parse_retry_after(value: str, now: float) -> float:
    """Seconds to wait, from ``now`` (Unix time), that a ``Retry-After`` value asks for.

    Surrounding whitespace is ignored. Delay-seconds are taken as they are (``0`` is valid;
    huge values saturate at :data:`MAX_RETRY_AFTER_SECONDS`); an HTTP-date gives the seconds
    until that moment, 0 if it has passed. Anything else (a negative or fractional number,
    words, an empty value, a malformed date) raises :class:`RetryAfterError`.
    """
    text = value.strip(" \t")
    if not text:
        raise RetryAfterError("the Retry-After header is empty")
    if text.isascii() and text.isdigit():
        if len(text) > 12:  # more than MAX_RETRY_AFTER_SECONDS for sure; int() would be slow
            return MAX_RETRY_AFTER_SECONDS
        return min(float(int(text)), MAX_RETRY_AFTER_SECONDS)
    moment = _parse_date(text, now)
    if moment is None:
        raise RetryAfterError(
            "the Retry-After header is neither a number of seconds nor an HTTP date"
        )
    return min(max(0.0, moment - now), MAX_RETRY_AFTER_SECONDS)


def retry_delay(backoff: float, retry_after: float | None, cap: float) -> float:
    """Seconds to wait before the next request to a broker that refused the last one.

    ``backoff`` is the caller's own schedule (used alone when ``retry_after`` is ``None``:
    no header, or a malformed one); the broker's ``retry_after`` raises it, up to ``cap``.
    The result is never below ``backoff`` nor above ``max(backoff, cap)``.
    """
    if retry_after is None or math.isnan(retry_after):
        return backoff
    return max(backoff, min(max(0.0, retry_after), cap))
