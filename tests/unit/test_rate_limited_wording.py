"""What the user reads when the broker says "too many requests" (HTTP 429)."""

from __future__ import annotations

import pytest

from ferry.client.local_page import problem_state
from ferry.client.messages import LANGUAGES, catalogue
from ferry.client.session import TunnelStatus
from ferry.client.status import format_status
from ferry.errors import BrokerError, BrokerRateLimitedError, NoVolunteerError

RATE_LIMITED_IDS = (
    "state.rate_limited",
    "check.volunteer.rate_limited",
    "check.volunteer.advice_rate_limited",
)


def test_the_page_state_names_the_rate_limit_not_an_unreachable_broker() -> None:
    assert problem_state(BrokerRateLimitedError("x", retry_after=3.0)) == "rate_limited"
    assert problem_state(BrokerError("x", retry_after=3.0)) == "broker"
    assert problem_state(NoVolunteerError("x", retry_after=3.0)) == "no_volunteer"
    assert "too many requests" in catalogue("en").text("state.rate_limited")
    assert "cannot be reached" not in catalogue("en").text("state.rate_limited")


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_every_language_says_it(language: str) -> None:
    words = catalogue(language)
    english = catalogue("en")
    for message_id in RATE_LIMITED_IDS:
        assert words.messages.get(message_id, "").strip(), (language, message_id)
        if language != "en":
            assert words.messages[message_id] != english.messages[message_id]


def test_the_terminal_status_shows_the_brokers_words() -> None:
    error = BrokerRateLimitedError("the broker says too many requests (HTTP 429): wait")
    status = TunnelStatus(
        connected=False,
        session_age=0.0,
        paths=(),
        sessions_started=0,
        paths_opened=0,
        paths_lost=0,
        last_error=str(error),
    )
    assert "too many requests (HTTP 429)" in format_status(status, catalogue("en"))
