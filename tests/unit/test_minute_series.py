"""The status page's one-minute ring buffer (sans-IO)."""

from __future__ import annotations

from ferry.core.minute_series import MinuteSample, MinuteSeries


def test_counts_and_levels_fall_in_their_minute() -> None:
    series = MinuteSeries(minutes=3)
    series.count(60.0, offers=2, matches=1)
    series.count(119.0, refusals=4)
    series.observe(100.0, volunteers_available=5, clients_waiting=1)
    series.observe(110.0, volunteers_available=3, clients_waiting=2)
    series.count(125.0, matches=1)
    assert series.last(130.0) == [
        MinuteSample(0, 0, 0, 0, 0, 0),
        MinuteSample(1, 2, 1, 4, 5, 2),
        MinuteSample(2, 0, 1, 0, 0, 0),
    ]


def test_old_minutes_leave_the_ring() -> None:
    series = MinuteSeries(minutes=60)
    for minute in range(200):
        series.count(minute * 60.0, matches=1)
    samples = series.last(199 * 60.0)
    assert len(samples) == 60
    assert [s.minute for s in samples] == list(range(140, 200))
    assert all(s.matches == 1 for s in samples)
    series.count(10_000 * 60.0)
    assert sum(s.matches for s in series.last(10_000 * 60.0)) == 0
