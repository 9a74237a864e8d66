"""The egress's destination policy from its settings, and re-reading it on SIGHUP.

``ferry egress`` builds its :class:`~ferry.egress.policy.DestinationPolicy` from five
settings (:data:`POLICY_SETTINGS`); on SIGHUP a :class:`PolicyReloader` reads them again
(the configuration file anew; flags and environment variables keep their values), and hands
the new policy to the egress for the streams opened from then on. A bad file or rule keeps
the old policy. Logs give counts of rules only, never their addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Network
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from ferry.config_file import SettingValues
from ferry.egress.policy import DestinationPolicy, DestinationRule, parse_port_ranges
from ferry.errors import ConfigError
from ferry.logs import get_logger

log = get_logger(__name__)

POLICY_SETTINGS = (
    "allow_destination",
    "deny_destination",
    "deny_ports",
    "unsafe_allow_private_destinations",
    "nat64_prefix",
)
"""The settings (TOML keys) the destination policy is made of."""


def destination_policy(
    allow: Sequence[str],
    deny: Sequence[str],
    deny_ports: str,
    *,
    allow_private: bool,
    nat64_prefixes: Sequence[str] = (),
) -> DestinationPolicy:
    """The policy of these settings' values; a :class:`ConfigError` naming a bad rule."""
    return DestinationPolicy(
        allow_private=allow_private,
        allowed_destinations=tuple(DestinationRule.parse(rule) for rule in allow),
        denied_destinations=tuple(DestinationRule.parse(rule) for rule in deny),
        denied_ports=parse_port_ranges(deny_ports),
        nat64_prefixes=tuple(parse_nat64_prefix(prefix) for prefix in nat64_prefixes),
    )


def parse_nat64_prefix(text: str) -> IPv6Network:
    """An IPv6 NAT64 prefix written as ``64:ff9b:1::/96``; :class:`ConfigError` if bad."""
    try:
        return IPv6Network(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"NAT64 prefix {text!r}: write an IPv6 network such as 2001:db8:64::/96 ({exc})"
        ) from None


class PolicyHolder(Protocol):
    """What uses the policy: :class:`ferry.egress.server.Egress`."""

    def replace_policy(self, policy: DestinationPolicy) -> None:
        """Judge streams opened from now on by ``policy``."""


class SettingsSource(Protocol):
    """Where the settings are read again: :class:`ferry.command_settings.ConfigReloader`."""

    @property
    def path(self) -> Path | None:
        """The configuration file, if there is one."""

    def reload(self, keys: Sequence[str]) -> SettingValues:
        """The settings ``keys`` as they are now; a :class:`ConfigError` if they are bad."""


class PolicyReloader:
    """Re-reads the policy settings and gives the egress the new policy (call on SIGHUP)."""

    def __init__(
        self, holder: PolicyHolder, settings: SettingsSource, registry: CollectorRegistry
    ) -> None:
        self._holder = holder
        self._settings = settings
        self.reloads = Counter(
            "ferry_egress_policy_reloads",
            "Destination policy re-reads (SIGHUP), by outcome (applied; kept_old: the "
            "configuration file or a rule in it was bad; no_file: no --config to read)",
            ["outcome"],
            registry=registry,
        )

    def reload(self) -> bool:
        """Read the settings again and apply them; False (old policy kept) on any error."""
        path = self._settings.path
        if path is None:
            self.reloads.labels("no_file").inc()
            log.info("SIGHUP: no --config file to re-read; the destination policy is unchanged")
            return False
        try:
            settings = self._settings.reload(POLICY_SETTINGS)
            policy = destination_policy(
                settings.texts("allow_destination"),
                settings.texts("deny_destination"),
                settings.text("deny_ports"),
                allow_private=settings.switch("unsafe_allow_private_destinations"),
                nat64_prefixes=settings.texts("nat64_prefix"),
            )
        except ConfigError as exc:
            self.reloads.labels("kept_old").inc()
            log.error("SIGHUP: kept the old destination policy: %s", exc)
            return False
        self._holder.replace_policy(policy)
        self.reloads.labels("applied").inc()
        log.info(
            "SIGHUP: reloaded the destination policy from %s: %d allow rules, %d deny rules, "
            "%d denied port ranges, private destinations %s",
            path,
            len(policy.allowed_destinations),
            len(policy.denied_destinations),
            len(policy.denied_ports),
            "allowed" if policy.allow_private else "refused",
        )
        return True
