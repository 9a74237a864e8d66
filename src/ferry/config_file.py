"""Configuration files: one TOML table per role, checked against that role's flags.

A file holds one table per role (``[egress]``, ``[broker]``, ``[volunteer]``, ``[client]``,
``[demo]``); each key is the name of a flag of ``ferry ROLE`` without the leading ``--`` and
with ``-`` written as ``_`` (``state_dir`` is ``--state-dir``). Switches take ``true`` or
``false``, repeatable flags a list, the others a string or a number as the flag does::

    [egress]
    listen = "127.0.0.1:8443"
    deny_destination = ["*:6881-6999"]
    unsafe_logging = false

This module knows nothing of the command line: it checks a document against
:class:`SettingSpec` descriptions (built from the commands by :mod:`ferry.command_settings`)
and writes resolved settings back out as TOML. Every table of the file is checked, not only
the one of the role being started, so a mistake in a shared file is found by whichever role
reads it first. Every mistake is a :class:`~ferry.errors.ConfigError` whose message names the
file, the table, the key and what is wrong.
"""

from __future__ import annotations

import difflib
import enum
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ferry.errors import ConfigError

Scalar = bool | int | float | str
"""One value of a setting."""
SettingValue = Scalar | list[Scalar]
"""A setting's value: a scalar, or a list of them for a repeatable flag."""


class SettingKind(enum.Enum):
    """What one value of a setting is, in TOML."""

    SWITCH = "true or false"
    INTEGER = "an integer"
    NUMBER = "a number"
    TEXT = "a string"


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting of a role: a flag of ``ferry ROLE``, seen from a configuration file."""

    key: str
    """The TOML key: the flag without ``--``, ``-`` written ``_`` (``state_dir``)."""
    name: str
    """The parameter's name in the role's command function (``broker_url`` for ``--broker``)."""
    flag: str
    """The long flag (``--state-dir``)."""
    envvar: str | None
    """The environment variable that sets it (``FERRY_EGRESS_STATE_DIR``), if any."""
    kind: SettingKind
    """What each value is."""
    repeatable: bool
    """The flag may be given several times; in TOML a list."""
    required: bool
    """The role does not start without it."""
    hidden: bool
    """Left out of ``--help`` (testing-only settings)."""
    secret: bool
    """Never printed (``--print-config`` masks it)."""
    default: SettingValue | None
    """The built-in default (``None``: not set)."""
    help: str
    """What it does, as ``--help`` says it."""


def _describe(value: object) -> str:
    """A short description of a TOML value, for error messages."""
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({toml_value(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _scalar_fits(kind: SettingKind, value: object) -> bool:
    if kind is SettingKind.SWITCH:
        return isinstance(value, bool)
    if kind is SettingKind.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is SettingKind.NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _suggestion(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def check_setting(spec: SettingSpec, value: object) -> SettingValue:
    """``value`` from TOML if it fits ``spec``; a :class:`ConfigError` saying why not."""
    if spec.repeatable:
        if not isinstance(value, list):
            raise ConfigError(
                f"expected a list of values that are each {spec.kind.value} "
                f"({spec.flag} may repeat), not {_describe(value)}"
            )
        for item in value:
            if not _scalar_fits(spec.kind, item):
                raise ConfigError(f"each item must be {spec.kind.value}, not {_describe(item)}")
        return list(value)
    if not _scalar_fits(spec.kind, value):
        raise ConfigError(f"expected {spec.kind.value}, not {_describe(value)}")
    assert isinstance(value, bool | int | float | str)
    return value


def role_settings(
    text: str, *, source: str, role: str, roles: Mapping[str, Sequence[SettingSpec]]
) -> dict[str, SettingValue]:
    """Check a whole TOML document and return ``role``'s table, by parameter name.

    ``source`` names the file in messages; ``roles`` describes every role's settings. The
    result suits click's ``default_map``. A missing table means no settings for the role.
    """
    prefix = f"config {source}:"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{prefix} not valid TOML: {exc}") from None
    known = sorted(roles)
    chosen: dict[str, SettingValue] = {}
    for table_name, table in document.items():
        if table_name not in roles:
            if isinstance(table, dict):
                raise ConfigError(
                    f"{prefix} [{table_name}] is not a role{_suggestion(table_name, known)}; "
                    f"the tables are {', '.join(f'[{name}]' for name in known)}"
                )
            raise ConfigError(
                f'{prefix} "{table_name}" is outside any table: put each setting under '
                f"its role's table ({', '.join(f'[{name}]' for name in known)})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f'{prefix} "{table_name}" must be a table: [{table_name}]')
        by_key = {spec.key: spec for spec in roles[table_name]}
        for key, value in table.items():
            spec = by_key.get(key)
            if spec is None:
                raise ConfigError(
                    f'{prefix} [{table_name}] no setting "{key}"{_suggestion(key, sorted(by_key))}'
                )
            try:
                checked = check_setting(spec, value)
            except ConfigError as exc:
                raise ConfigError(f"{prefix} [{table_name}] {key}: {exc}") from None
            if table_name == role:
                chosen[spec.name] = checked
    return chosen


def read_role_settings(
    path: Path, *, role: str, roles: Mapping[str, Sequence[SettingSpec]]
) -> dict[str, SettingValue]:
    """:func:`role_settings` of the file at ``path``; unreadable files are a ConfigError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    return role_settings(text, source=str(path), role=role, roles=roles)


class SettingValues:
    """Settings by TOML key, read back with the type each is known to have."""

    def __init__(self, values: Mapping[str, SettingValue | None]) -> None:
        self._values = dict(values)

    def text(self, key: str) -> str:
        """A text setting."""
        value = self._values[key]
        return "" if value is None else str(value)

    def texts(self, key: str) -> tuple[str, ...]:
        """A repeatable text setting (empty if not set)."""
        value = self._values[key]
        if value is None:
            return ()
        return tuple(str(item) for item in value) if isinstance(value, list) else (str(value),)

    def switch(self, key: str) -> bool:
        """A switch."""
        return bool(self._values[key])


# --- Writing settings back out as TOML -----------------------------------------------------


def _toml_string(text: str) -> str:
    escaped = []
    for character in text:
        if character in '"\\':
            escaped.append("\\" + character)
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            escaped.append(f"\\u{ord(character):04x}")
        else:
            escaped.append(character)
    return '"' + "".join(escaped) + '"'


def toml_value(value: SettingValue) -> str:
    """``value`` written as TOML (a string, number, boolean or array)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    return "[" + ", ".join(toml_value(item) for item in value) + "]"


@dataclass(frozen=True, slots=True)
class ResolvedSetting:
    """A setting's value once defaults, file, environment and flags are applied."""

    spec: SettingSpec
    """Which setting."""
    value: SettingValue | None
    """Its value (``None``: not set)."""
    origin: str
    """Where the value came from: ``default``, ``file``, ``env NAME`` or ``flag --x``."""


def render_settings(role: str, settings: Sequence[ResolvedSetting], header: str) -> str:
    """``settings`` as a TOML document with one ``[role]`` table, valid as ``--config``.

    Each line ends with a comment saying where its value came from. Unset settings and
    secrets are written as comments, so the document never holds a secret. ``header`` is a
    comment line or lines put first.
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append(f"[{role}]")
    for setting in settings:
        key, origin = setting.spec.key, setting.origin
        if setting.value is None:
            lines.append(f"# {key} is not set  # {origin}")
        elif setting.spec.secret:
            lines.append(f"# {key} = (secret, not shown)  # {origin}")
        elif (hidden := without_passwords(setting.value)) != setting.value:
            lines.append(f"# {key} = {toml_value(hidden)}  (password not shown)  # {origin}")
        else:
            lines.append(f"{key} = {toml_value(setting.value)}  # {origin}")
    return "\n".join(lines) + "\n"


_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]*(?=@)")
_ICE_PASSWORD = re.compile(r"^(?P<head>turns?:[^:@/]+:)[^@]*(?=@)")


def without_passwords(value: SettingValue) -> SettingValue:
    """``value`` with the password of every URL in it replaced by ``***``
    (``redis://:***@host``, ``turn:user:***@host``), so that ``--print-config`` shows none."""
    if isinstance(value, list):
        return [_scalar_without_password(item) for item in value]
    return _scalar_without_password(value)


def _scalar_without_password(value: Scalar) -> Scalar:
    if not isinstance(value, str):
        return value
    for pattern in (_URL_PASSWORD, _ICE_PASSWORD):
        value = pattern.sub(lambda match: match["head"] + "***", value, count=1)
    return value
