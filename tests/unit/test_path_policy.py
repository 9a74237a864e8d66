"""ferry.core.path_policy: scheduling, loss detection and pool size, with a fake clock."""

from __future__ import annotations

from collections import Counter

import pytest

from ferry.core.path_policy import PathPolicy, PathPolicyConfig, PathRole
from ferry.errors import ConfigError


def policy_with_paths(count: int, **config: float) -> PathPolicy:
    policy = PathPolicy(PathPolicyConfig(**config))  # type: ignore[arg-type]
    for number in range(1, count + 1):
        policy.add(number, now=0.0)
    return policy


def test_pool_asks_for_active_plus_spare_and_counts_pending() -> None:
    policy = PathPolicy(PathPolicyConfig(active_paths=2, spare_paths=1))
    assert policy.tick(0.0).open_more == 3
    policy.opening(2)
    assert policy.tick(0.0).open_more == 1
    policy.add(1, 0.0)
    policy.opening(-1)
    assert policy.tick(0.0).open_more == 1


def test_oldest_paths_are_active_the_rest_spare() -> None:
    policy = policy_with_paths(3, active_paths=2, spare_paths=1)
    assert policy.active() == [1, 2]
    roles = {status.path_id: status.role for status in policy.status(1.0)}
    assert roles == {1: PathRole.ACTIVE, 2: PathRole.ACTIVE, 3: PathRole.SPARE}
    policy.remove(1)
    assert policy.active() == [2, 3], "a spare is promoted the moment an active path goes"


def test_equal_paths_share_equally_and_spares_carry_nothing() -> None:
    policy = policy_with_paths(3, active_paths=2, spare_paths=1)
    picks = Counter(policy.choose() for _ in range(1000))
    assert picks == {1: 500, 2: 500}


def test_a_slow_path_gets_a_share_in_proportion_to_its_delay() -> None:
    policy = policy_with_paths(2, active_paths=2, spare_paths=0)
    policy.on_probe_acknowledged(1, 0.010, now=1.0)
    policy.on_probe_acknowledged(2, 0.040, now=1.0)
    assert policy.weight(1) == 1.0
    assert policy.weight(2) == pytest.approx(0.25)
    picks = Counter(policy.choose() for _ in range(1000))
    assert picks[1] == 800
    assert picks[2] == 200


def test_very_slow_path_keeps_a_minimum_share() -> None:
    policy = policy_with_paths(2, active_paths=2, spare_paths=0, min_weight=0.05)
    policy.on_probe_acknowledged(1, 0.001, now=1.0)
    policy.on_probe_acknowledged(2, 10.0, now=1.0)
    assert policy.weight(2) == 0.05
    picks = Counter(policy.choose() for _ in range(2100))
    assert picks[2] == 100


def test_no_path_no_choice() -> None:
    assert PathPolicy(PathPolicyConfig()).choose() is None


def test_silent_path_is_dropped_when_another_path_hears_the_egress() -> None:
    policy = policy_with_paths(2, active_paths=2, spare_paths=0, silence_timeout=0.5)
    policy.on_sent(1, 1200, now=10.0)
    policy.on_sent(2, 1200, now=10.0)
    policy.on_received(2, 1200, now=10.1)  # path 2 answers, path 1 never does
    assert policy.tick(10.4).drop == ()
    decision = policy.tick(10.51)
    assert decision.drop == (1,)
    assert policy.active() == [2]
    assert decision.open_more == 1
    assert policy.paths_dropped_silent == 1


def test_when_every_path_is_silent_the_longer_timeout_applies() -> None:
    policy = policy_with_paths(
        2, active_paths=2, spare_paths=0, silence_timeout=0.5, lone_silence_timeout=2.0
    )
    policy.on_sent(1, 100, now=0.0)
    policy.on_sent(2, 100, now=0.0)
    assert policy.tick(1.9).drop == ()
    assert set(policy.tick(2.01).drop) == {1, 2}


def test_when_every_path_is_silent_one_scout_is_asked_for_and_it_ends_the_wait() -> None:
    """Every volunteer died at once (one volunteer carried every path): a fresh path that
    hears the egress gets the silent ones dropped at once instead of after the long wait."""
    policy = policy_with_paths(
        3, active_paths=2, spare_paths=1, silence_timeout=0.5, lone_silence_timeout=8.0
    )
    for number in (1, 2, 3):
        policy.on_sent(number, 100, now=0.0)
    policy.on_sent(3, 100, now=0.2)  # later sends do not restart a path's silence
    assert policy.tick(0.49).open_more == 0
    decision = policy.tick(0.5)
    assert (decision.drop, decision.open_more) == ((), 1)
    assert policy.scouts_opened == 1
    policy.opening(1)
    assert policy.tick(1.0).open_more == 0  # one scout at a time, however long it takes
    policy.add(4, now=1.0)
    policy.opening(-1)
    policy.on_sent(4, 100, now=1.0, data=False)  # its probe
    policy.on_received(4, 100, now=1.05)  # the egress answers through the scout
    decision = policy.tick(1.06)
    assert set(decision.drop) == {1, 2, 3}
    assert decision.open_more == 2  # back to the target: the scout is one of its paths
    assert policy.scouts_opened == 1
    assert policy.active() == [4]


def test_no_scout_while_some_path_still_answers_or_is_unused() -> None:
    policy = policy_with_paths(
        2, active_paths=2, spare_paths=0, silence_timeout=0.5, lone_silence_timeout=8.0
    )
    policy.on_sent(1, 100, now=0.0)
    assert policy.tick(1.0).open_more == 0  # path 2 was never sent on
    policy.on_sent(2, 100, now=1.0)
    policy.on_received(2, 100, now=1.01)
    decision = policy.tick(2.0)  # path 2 answered: path 1 is dropped and replaced instead
    assert (decision.drop, decision.open_more, policy.target) == ((1,), 1, 2)
    assert policy.scouts_opened == 0


def test_a_slow_network_is_not_taken_for_silence() -> None:
    policy = policy_with_paths(
        2,
        active_paths=2,
        spare_paths=0,
        silence_timeout=0.5,
        lone_silence_timeout=8.0,
        silence_rtt_multiple=8.0,
    )
    policy.on_probe_acknowledged(1, 0.4, now=0.0)  # 400 ms round trips
    policy.on_probe_acknowledged(2, 0.3, now=0.0)
    policy.on_sent(1, 100, now=1.0)
    policy.on_sent(2, 100, now=1.0)
    assert policy.tick(1.0 + 0.5).open_more == 0
    assert policy.tick(1.0 + 3.19).open_more == 0  # 8 of the slowest round trips: 3.2 s
    assert policy.tick(1.0 + 3.21).open_more == 1
    policy.on_probe_acknowledged(1, 0.4, now=4.3)  # heard again: the target is as before
    assert policy.tick(4.3).open_more == 0
    assert len(policy) == policy.target == 2


def test_an_answer_on_the_path_clears_its_silence() -> None:
    policy = policy_with_paths(2, silence_timeout=0.5)
    policy.on_sent(1, 100, now=0.0)
    policy.on_received(1, 100, now=0.3)
    policy.on_received(2, 100, now=0.4)
    assert policy.tick(5.0).drop == ()


def test_an_acknowledged_probe_proves_a_path_alive() -> None:
    policy = policy_with_paths(2, silence_timeout=0.5)
    policy.on_sent(1, 100, now=0.0, data=False)
    policy.on_received(2, 100, now=0.1)
    policy.on_probe_acknowledged(1, 0.2, now=0.2)
    assert policy.tick(1.0).drop == ()


def test_quiet_paths_are_probed_and_silent_ones_probed_early() -> None:
    policy = policy_with_paths(
        2, probe_interval=0.25, idle_probe_interval=1.0, idle_after=5.0, silence_timeout=0.5
    )
    policy.on_sent(1, 100, now=0.0)
    policy.on_sent(2, 100, now=0.0)
    policy.on_received(1, 100, now=0.01)
    # Busy session: path 1 answered and is due a probe after probe_interval; path 2 has been
    # silent for half the silence timeout, so it is probed directly.
    decision = policy.tick(0.26)
    assert set(decision.probe) == {1, 2}
    policy.on_sent(1, 60, now=0.26, data=False)
    policy.on_sent(2, 60, now=0.26, data=False)
    assert policy.tick(0.3).probe == (), "one probe at a time per path"


def test_idle_sessions_probe_slowly() -> None:
    policy = policy_with_paths(1, probe_interval=0.25, idle_probe_interval=1.0, idle_after=5.0)
    assert policy.tick(0.5).probe == ()
    assert policy.tick(1.0).probe == (1,)


def test_rates_are_measured_per_path() -> None:
    policy = policy_with_paths(1, rate_window=1.0)
    for tenth in range(10):
        policy.on_received(1, 100_000, now=tenth / 10)
        policy.on_sent(1, 10_000, now=tenth / 10)
    (status,) = policy.status(1.0)
    assert status.rate_down == pytest.approx(1_000_000)
    assert status.rate_up == pytest.approx(100_000)
    assert status.bytes_received == 1_000_000
    assert status.age == 1.0


@pytest.mark.parametrize(
    "config",
    [
        {"active_paths": 0},
        {"spare_paths": -1},
        {"silence_timeout": 0.0},
        {"silence_timeout": 3.0, "lone_silence_timeout": 2.0},
    ],
)
def test_bad_config_is_refused(config: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        PathPolicyConfig(**config)  # type: ignore[arg-type]


def test_a_busy_path_with_a_short_round_trip_is_dropped_sooner() -> None:
    policy = policy_with_paths(
        2, silence_timeout=0.5, min_silence_timeout=0.25, silence_rtt_multiple=8.0
    )
    policy.on_probe_acknowledged(1, 0.010, now=0.0)  # 8 round trips = 80 ms → floor 250 ms
    policy.on_sent(1, 100, now=1.0)
    policy.on_received(2, 100, now=1.1)
    assert policy.tick(1.24).drop == ()
    assert policy.tick(1.26).drop == (1,)


def test_busy_paths_are_probed_too_so_their_weights_stay_current() -> None:
    policy = policy_with_paths(1, probe_interval=0.25)
    for tick in range(1, 30):  # data sent and answered every 10 ms: a busy path
        now = tick / 100
        policy.on_sent(1, 1200, now=now)
        policy.on_received(1, 1200, now=now)
    assert policy.tick(0.3).probe == (1,)
    policy.on_sent(1, 60, now=0.3, data=False)
    assert policy.tick(0.4).probe == (), "one probe at a time"
    policy.on_probe_acknowledged(1, 0.01, now=0.31)
    assert policy.tick(0.5).probe == ()
    assert policy.tick(0.56).probe == (1,)


def test_a_lost_probe_does_not_stop_probing_for_good() -> None:
    policy = policy_with_paths(1, probe_interval=0.25, lone_silence_timeout=2.0)
    policy.on_sent(1, 60, now=1.0, data=False)
    policy.on_received(1, 100, now=1.1)  # the path answers, but the probe's ack never comes
    assert policy.tick(2.5).probe == ()
    assert policy.tick(3.1).probe == (1,)
