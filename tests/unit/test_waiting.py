"""The one bounded wait the tests use (tests/waiting.py)."""

from __future__ import annotations

import pytest

from tests.waiting import wait_until, wait_until_blocking


class _Counter:
    """A condition that becomes true on its ``true_from``-th check."""

    def __init__(self, true_from: int) -> None:
        self.true_from = true_from
        self.checks = 0

    def __call__(self) -> bool:
        self.checks += 1
        return self.checks >= self.true_from


async def test_returns_once_the_condition_holds() -> None:
    condition = _Counter(true_from=3)
    await wait_until(condition, "the third check", interval=0.001)
    assert condition.checks == 3


async def test_fails_naming_what_it_waited_for_after_a_bounded_number_of_checks() -> None:
    condition = _Counter(true_from=10**9)
    with pytest.raises(AssertionError, match=r"not true within 0\.02 s: the impossible"):
        await wait_until(condition, "the impossible", timeout=0.02, interval=0.001)
    assert 1 <= condition.checks <= 21  # one at once, then at most timeout / interval


def test_blocking_form_shares_the_bounds() -> None:
    condition = _Counter(true_from=10**9)
    with pytest.raises(AssertionError, match="the impossible"):
        wait_until_blocking(condition, "the impossible", timeout=0.02, interval=0.001)
    assert 1 <= condition.checks <= 21
    ready = _Counter(true_from=1)
    wait_until_blocking(ready, "at once")
    assert ready.checks == 1


async def test_refuses_a_wait_without_bound() -> None:
    with pytest.raises(ValueError):
        await wait_until(_Counter(true_from=10**9), "never", timeout=0.0)
