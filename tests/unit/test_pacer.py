"""The sans-IO pacer: datagrams leave at their reserved time, in order, within a bound."""

from __future__ import annotations

import pytest

from ferry.core.pacer import PaceDecision, Pacer, PacerConfig
from ferry.errors import ConfigError


def test_a_datagram_due_now_with_nothing_held_is_sent_at_once() -> None:
    pacer = Pacer()
    assert pacer.push(b"a", 0.0, now=5.0) is PaceDecision.SEND_NOW
    assert (pacer.held, pacer.deadline()) == (0, None)


def test_a_delayed_datagram_is_held_until_its_time() -> None:
    pacer = Pacer()
    assert pacer.push(b"a", 0.25, now=10.0) is PaceDecision.HELD
    assert pacer.deadline() == 10.25
    assert pacer.release(10.249) == []
    assert pacer.release(10.25) == [b"a"]
    assert pacer.deadline() is None


def test_a_datagram_never_overtakes_one_held_before_it() -> None:
    pacer = Pacer()
    pacer.push(b"first", 0.5, now=0.0)
    assert pacer.push(b"second", 0.0, now=0.1) is PaceDecision.HELD
    assert pacer.release(0.4) == []
    assert pacer.release(0.5) == [b"first", b"second"]


def test_release_stops_at_the_first_datagram_whose_time_has_not_come() -> None:
    pacer = Pacer()
    for index, delay in enumerate((0.1, 0.2, 0.3)):
        pacer.push(bytes([index]), delay, now=0.0)
    assert pacer.release(0.2) == [b"\x00", b"\x01"]
    assert pacer.deadline() == 0.3
    assert pacer.release(1.0) == [b"\x02"]


def test_a_negative_delay_counts_as_now() -> None:
    pacer = Pacer()
    pacer.push(b"held", 1.0, now=0.0)
    pacer.push(b"late", -3.0, now=0.5)
    assert pacer.release(1.0) == [b"held", b"late"]


def test_beyond_max_held_a_datagram_is_refused_and_the_queue_is_unchanged() -> None:
    pacer = Pacer(PacerConfig(max_held=2))
    assert pacer.push(b"a", 1.0, now=0.0) is PaceDecision.HELD
    assert pacer.push(b"b", 1.0, now=0.0) is PaceDecision.HELD
    assert pacer.push(b"c", 1.0, now=0.0) is PaceDecision.FULL
    assert pacer.release(1.0) == [b"a", b"b"]
    assert pacer.push(b"d", 0.0, now=1.0) is PaceDecision.SEND_NOW


def test_clear_forgets_what_is_held() -> None:
    pacer = Pacer()
    pacer.push(b"a", 1.0, now=0.0)
    pacer.push(b"b", 2.0, now=0.0)
    assert pacer.clear() == 2
    assert (pacer.held, pacer.deadline(), pacer.release(10.0)) == (0, None, [])


def test_config_refuses_a_pacer_that_can_hold_nothing() -> None:
    with pytest.raises(ConfigError):
        PacerConfig(max_held=0)
