"""PolicyReloader: new settings become the egress's policy; bad ones keep the old one."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ferry.config_file import SettingValue, SettingValues
from ferry.egress.policy import DestinationPolicy
from ferry.egress.policy_reload import POLICY_SETTINGS, PolicyReloader
from ferry.errors import ConfigError

DEFAULTS: dict[str, SettingValue | None] = {
    "allow_destination": None,
    "deny_destination": None,
    "deny_ports": "25,119,135-139,445,563",
    "unsafe_allow_private_destinations": False,
    "nat64_prefix": None,
}


class RecordingHolder:
    """A PolicyHolder that keeps every policy it is given."""

    def __init__(self) -> None:
        self.policies: list[DestinationPolicy] = []

    def replace_policy(self, policy: DestinationPolicy) -> None:
        self.policies.append(policy)


class ScriptedSettings:
    """A SettingsSource that returns the next prepared answer (or raises it)."""

    def __init__(self, path: Path | None, answers: list[dict[str, SettingValue | None] | str]):
        self._path = path
        self._answers = answers
        self.asked: list[tuple[str, ...]] = []

    @property
    def path(self) -> Path | None:
        return self._path

    def reload(self, keys: Sequence[str]) -> SettingValues:
        self.asked.append(tuple(keys))
        answer = self._answers.pop(0)
        if isinstance(answer, str):
            raise ConfigError(answer)
        return SettingValues({**DEFAULTS, **answer})


def outcome(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value("ferry_egress_policy_reloads_total", {"outcome": name})
    return value or 0.0


def test_new_settings_become_the_policy_and_the_log_counts_rules_without_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder, registry = RecordingHolder(), CollectorRegistry()
    settings = ScriptedSettings(
        Path("/etc/ferry/ferry.toml"),
        [{"allow_destination": ["10.1.2.0/24:443"], "deny_destination": ["198.51.100.7/32"]}],
    )
    reloader = PolicyReloader(holder, settings, registry)
    with caplog.at_level(logging.INFO):
        assert reloader.reload()
    assert settings.asked == [POLICY_SETTINGS]
    (policy,) = holder.policies
    assert policy.check(ipaddress.ip_address("10.1.2.3"), 443).allowed
    assert not policy.check(ipaddress.ip_address("198.51.100.7"), 443).allowed
    assert outcome(registry, "applied") == 1
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "1 allow rules, 1 deny rules, 5 denied port ranges" in message
    assert "10.1.2" not in message and "198.51" not in message


def test_a_bad_file_or_rule_keeps_the_old_policy_and_logs_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder, registry = RecordingHolder(), CollectorRegistry()
    settings = ScriptedSettings(
        Path("/etc/ferry/ferry.toml"),
        ["config /etc/ferry/ferry.toml: not valid TOML: ...", {"deny_ports": "25-x"}],
    )
    reloader = PolicyReloader(holder, settings, registry)
    with caplog.at_level(logging.INFO):
        assert not reloader.reload()
        assert not reloader.reload()
    assert holder.policies == []
    assert outcome(registry, "kept_old") == 2
    assert outcome(registry, "applied") == 0
    assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.ERROR]
    assert "not valid TOML" in caplog.records[0].getMessage()
    assert "kept the old destination policy" in caplog.records[1].getMessage()


def test_without_a_config_file_nothing_changes() -> None:
    holder, registry = RecordingHolder(), CollectorRegistry()
    settings = ScriptedSettings(None, [])
    assert not PolicyReloader(holder, settings, registry).reload()
    assert holder.policies == [] and settings.asked == []
    assert outcome(registry, "no_file") == 1
