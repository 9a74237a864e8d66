"""The volunteer's limits (sans-IO), driven by the shared vectors the widget reads too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.core.volunteer_limits import (
    Admission,
    VolunteerLimits,
    VolunteerLimitsConfig,
    parse_byte_count,
    utc_day,
)
from ferry.errors import ConfigError

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "volunteer_limits.json").read_text()
)


def _config(fields: dict[str, int]) -> VolunteerLimitsConfig:
    return VolunteerLimitsConfig(
        capacity=fields["capacity"],
        max_rate=fields["max_rate"],
        burst=fields["burst"],
        quota=fields["quota"],
    )


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_vector_case(case: dict[str, object]) -> None:
    config = _config(case["config"])  # type: ignore[arg-type]
    assert config.bucket_size == case["bucket_size"]
    limits = VolunteerLimits(config)
    steps = case["steps"]
    assert isinstance(steps, list) and steps
    for index, step in enumerate(steps):
        op = step["op"]
        if op == "admit":
            got: object = limits.admit(step["size"], step["now"]).value
        elif op == "quota_exhausted":
            got = limits.quota_exhausted(step["now"])
        elif op == "quota_used":
            got = limits.quota_used(step["now"])
        elif op == "next_poll_delay":
            got = limits.next_poll_delay(step["now"])
        elif op == "can_take_client":
            got = limits.can_take_client(step["active"], step["now"])
        elif op == "free_capacity":
            got = limits.free_capacity(step["active"])
        else:
            raise AssertionError(f"unknown op {op!r} in the vectors")
        assert got == step["expect"], f"step {index}: {step}"


@pytest.mark.parametrize("vector", VECTORS["invalid_configs"])
def test_invalid_config_is_refused_naming_the_field(vector: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=str(vector["field"])):
        _config(vector["config"])  # type: ignore[arg-type]


@pytest.mark.parametrize("vector", VECTORS["byte_counts"], ids=lambda v: repr(v["text"]))
def test_byte_count(vector: dict[str, object]) -> None:
    assert parse_byte_count(str(vector["text"])) == vector["bytes"]


@pytest.mark.parametrize("text", VECTORS["bad_byte_counts"])
def test_bad_byte_count_is_refused_with_its_name(text: str) -> None:
    with pytest.raises(ConfigError, match="--quota"):
        parse_byte_count(text, what="--quota")


def test_counters_and_clock_readings_are_kept() -> None:
    limits = VolunteerLimits(VolunteerLimitsConfig(max_rate=100_000, burst=65_536, quota=10**9))
    assert limits.first_admit_call_at is None
    assert limits.admit(65_536, 10.0) is Admission.ADMITTED
    assert limits.admit(1, 10.0) is Admission.OVER_RATE
    assert limits.admit(1_000, 10.5) is Admission.ADMITTED
    assert (limits.first_admit_call_at, limits.last_admit_call_at) == (10.0, 10.5)
    assert (limits.admitted_bytes, limits.dropped_for_rate, limits.dropped_for_quota) == (
        66_536,
        1,
        0,
    )


def test_admitted_bytes_never_exceed_the_bucket_allowance() -> None:
    """Over any run of calls: admitted <= bucket + rate x (last now - first now)."""
    config = VolunteerLimitsConfig(max_rate=2_000_000)
    limits = VolunteerLimits(config)
    now, sizes = 1_000.0, (1_200, 1_350, 90, 1_200, 60_000)
    for step in range(20_000):
        now += 1 / 4096 * (step % 3)
        limits.admit(sizes[step % len(sizes)], now)
    assert limits.dropped_for_rate > 0, "the run must push against the cap to prove anything"
    allowance = config.bucket_size + config.max_rate * (now - 1_000.0)
    assert limits.admitted_bytes <= allowance
    assert limits.admitted_bytes > allowance - 61_000  # and it is used, up to one datagram


def test_utc_day() -> None:
    assert utc_day(0.0) == 0
    assert utc_day(86_399.999) == 0
    assert utc_day(86_400.0) == 1
    assert utc_day(-0.5) == -1


def test_reserve_shapes_instead_of_dropping() -> None:
    from ferry.core.volunteer_limits import VolunteerLimits, VolunteerLimitsConfig

    limits = VolunteerLimits(VolunteerLimitsConfig(max_rate=100_000, burst=65_536, queue_delay=0.5))
    assert limits.reserve(65_536, now=0.0) == 0.0  # the full bucket pays for it
    assert limits.reserve(10_000, now=0.0) == pytest.approx(0.1)  # 10 kB of debt at 100 kB/s
    assert limits.reserve(30_000, now=0.0) == pytest.approx(0.4)
    assert limits.reserve(20_000, now=0.0) is None  # 0.6 s of debt: over the queue bound
    assert limits.dropped_for_rate == 1
    assert limits.reserve(20_000, now=0.4) == pytest.approx(0.2)  # 0.4 s repaid 40 kB


def test_reserve_without_queue_delay_is_admit() -> None:
    from ferry.core.volunteer_limits import VolunteerLimits, VolunteerLimitsConfig

    limits = VolunteerLimits(VolunteerLimitsConfig(max_rate=100_000, burst=65_536))
    assert limits.reserve(65_536, now=0.0) == 0.0
    assert limits.reserve(1, now=0.0) is None
