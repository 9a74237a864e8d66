"""The egress's global buffer budget rule (sans-IO)."""

from __future__ import annotations

import pytest

from ferry.egress.buffer_budget import BufferBudget
from ferry.errors import ConfigError

LIMIT = 1000
FLOOR = 10


def test_under_half_the_budget_everyone_reads() -> None:
    budget = BufferBudget(LIMIT, FLOOR)
    budget.update("stalled", 499)
    assert budget.may_read("stalled") and budget.may_read("new")


def test_past_half_only_sessions_under_an_equal_share_read() -> None:
    budget = BufferBudget(LIMIT, FLOOR)
    budget.update("stalled", 600)
    budget.update("reader", 100)
    assert budget.fair_share() == 500
    assert not budget.may_read("stalled")
    assert budget.may_read("reader") and budget.may_read("new")


def test_at_the_budget_only_sessions_under_the_floor_read() -> None:
    budget = BufferBudget(LIMIT, FLOOR)
    budget.update("first", 700)
    budget.update("second", 300)
    budget.update("small", 9)
    assert not budget.may_read("first") and not budget.may_read("second")
    assert budget.may_read("small") and budget.may_read("new")
    budget.update("small", 10)
    assert not budget.may_read("small")


def test_a_shrinking_holder_is_reported_and_removal_frees_its_bytes() -> None:
    budget = BufferBudget(LIMIT, FLOOR)
    assert not budget.update("a", 800)
    assert not budget.update("b", 300)
    assert budget.total == 1100
    assert budget.update("a", 500)
    budget.remove("b")
    assert budget.total == 500 and budget.fair_share() == LIMIT


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ConfigError):
        BufferBudget(0, FLOOR)
    with pytest.raises(ConfigError):
        BufferBudget(LIMIT, -1)
