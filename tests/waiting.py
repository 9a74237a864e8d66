"""Waiting in a test until something becomes true: the one bounded poll every test uses.

:func:`wait_until` (in a coroutine) and :func:`wait_until_blocking` (in plain code: processes,
namespaces, threads) check ``condition()`` at once and then every ``interval`` seconds; they
give up after ``timeout`` seconds of the clock *and* after ``timeout / interval`` checks,
whichever comes first, and fail with an :class:`AssertionError` naming ``what`` was awaited.

A test waits for the event it names (a counter reaching a value, a line in a log), never for
a length of time: under load the event comes later, and the bound is only the point at which
waiting longer is pointless.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator

DEFAULT_TIMEOUT = 30.0
"""Seconds after which a wait fails."""

DEFAULT_INTERVAL = 0.05
"""Seconds between two checks."""


def _pauses(timeout: float, interval: float) -> Iterator[float]:
    """The pauses between checks: at most ``ceil(timeout / interval)`` of them, and none that
    would end after ``timeout`` seconds from now."""
    if not (timeout > 0 and interval > 0):
        raise ValueError("timeout and interval must be positive")
    deadline = time.monotonic() + timeout
    for _ in range(math.ceil(timeout / interval)):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        yield min(interval, left)


def _failure(what: str, timeout: float) -> AssertionError:
    return AssertionError(f"not true within {timeout:g} s: {what}")


async def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """Return once ``condition()`` is true; fail after the bound (see the module docstring)."""
    if condition():
        return
    for pause in _pauses(timeout, interval):
        await asyncio.sleep(pause)
        if condition():
            return
    raise _failure(what, timeout)


def wait_until_blocking(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """:func:`wait_until` for code outside an event loop (it sleeps the thread)."""
    if condition():
        return
    for pause in _pauses(timeout, interval):
        time.sleep(pause)
        if condition():
            return
    raise _failure(what, timeout)
