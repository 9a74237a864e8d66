"""Configuration files, ``--print-config`` and re-reading for every ``ferry ROLE`` command.

A value comes from the first of these that sets it: a flag, its environment variable
(``FERRY_<ROLE>_<FLAG>``), the role's table in the ``--config`` file, the built-in default.
That is the precedence click applies to a context's ``default_map``, so the file is loaded
into ``default_map`` by the eager ``--config`` option before any other option is read. No
command lists its settings here: they are read from the command's own options, so a new flag
is a setting of the file, of ``--print-config`` and of ``docs/configuration.md`` at once.

A role command takes part by adding :func:`config_option` and :func:`print_config_option`
to its parameters and ``cls=RoleCommand`` to its ``@app.command``.
"""

from __future__ import annotations

import enum
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from ferry.config_file import (
    ResolvedSetting,
    Scalar,
    SettingKind,
    SettingSpec,
    SettingValue,
    SettingValues,
    read_role_settings,
    render_settings,
)
from ferry.errors import ConfigError

CONFIG_PATH_KEY = "ferry.config_path"
"""``ctx.meta`` key: the configuration file given, if any."""
PRINT_CONFIG_KEY = "ferry.print_config"
"""``ctx.meta`` key: ``--print-config`` was given."""
OWN_PARAMETERS = frozenset({"config_file", "print_config"})
"""The options of this module: not settings a file can hold."""
SECRET_WORDS = ("password", "secret", "token", "pairing")
"""A setting whose key holds one of these is never printed."""

_errors = Console(stderr=True, highlight=False)

_KIND_OF_TYPE: Mapping[type, SettingKind] = {
    bool: SettingKind.SWITCH,
    int: SettingKind.INTEGER,
    float: SettingKind.NUMBER,
}


def _kind_and_repeatable(annotation: object) -> tuple[SettingKind, bool]:
    """The setting kind of a command parameter's annotation (``list[str] | None`` → text)."""
    repeatable = False
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else str
    if typing.get_origin(annotation) in (list, tuple):
        repeatable = True
        annotation = typing.get_args(annotation)[0]
    kind = _KIND_OF_TYPE.get(annotation) if isinstance(annotation, type) else None
    return kind or SettingKind.TEXT, repeatable


def setting_value(value: object) -> SettingValue | None:
    """A parameter's value (Path, Enum, tuple...) as a plain :data:`SettingValue`."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        items = [setting_value(item) for item in value]
        return [item for item in items if item is not None and not isinstance(item, list)]
    if isinstance(value, enum.Enum):
        return setting_value(value.value)
    if isinstance(value, bool | int | float | str):
        scalar: Scalar = value
        return scalar
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[no-any-return]
    return str(value)


def setting_specs(command: typer.core.TyperCommand) -> tuple[SettingSpec, ...]:
    """The settings of one role command, in the order of its options."""
    callback = command.callback
    hints: dict[str, object] = {}
    if callback is not None:
        try:
            hints = typing.get_type_hints(inspect.unwrap(callback), include_extras=True)
        except (NameError, TypeError):
            hints = {}
    specs = []
    for parameter in command.params:
        if not isinstance(parameter, typer.core.TyperOption) or not parameter.expose_value:
            continue
        if parameter.name is None or parameter.name in OWN_PARAMETERS:
            continue
        long_flags = [flag for flag in parameter.opts if flag.startswith("--")]
        flag = long_flags[0] if long_flags else parameter.opts[0]
        key = flag.lstrip("-").replace("-", "_")
        kind, repeatable = _kind_and_repeatable(hints.get(parameter.name, str))
        if parameter.is_flag:
            kind = SettingKind.SWITCH
        envvar = parameter.envvar if isinstance(parameter.envvar, str) else None
        default = None if callable(parameter.default) else setting_value(parameter.default)
        specs.append(
            SettingSpec(
                key=key,
                name=parameter.name,
                flag=flag,
                envvar=envvar,
                kind=kind,
                repeatable=repeatable or parameter.multiple,
                required=parameter.required,
                hidden=parameter.hidden,
                secret=any(word in key for word in SECRET_WORDS),
                default=default,
                help=" ".join((parameter.help or "").split()),
            )
        )
    return tuple(specs)


def role_commands(group: object) -> dict[str, typer.core.TyperCommand]:
    """The role commands of the ``ferry`` group, by name, in their order."""
    commands = getattr(group, "commands", {})
    return {
        name: command
        for name, command in commands.items()
        if isinstance(command, RoleCommand) and not command.hidden
    }


def _specs_of_every_role(ctx: typer.Context) -> dict[str, Sequence[SettingSpec]]:
    command = ctx.command
    assert isinstance(command, typer.core.TyperCommand) and command.name is not None
    roles: dict[str, Sequence[SettingSpec]] = {}
    if ctx.parent is not None:
        roles = {
            name: setting_specs(each) for name, each in role_commands(ctx.parent.command).items()
        }
    roles[command.name] = setting_specs(command)
    return roles


def _checked_file_values(ctx: typer.Context, path: Path) -> dict[str, SettingValue]:
    """The role's table of ``path``, each value also checked as its flag checks it."""
    command = ctx.command
    assert isinstance(command, typer.core.TyperCommand) and command.name is not None
    values = read_role_settings(path, role=command.name, roles=_specs_of_every_role(ctx))
    by_name = {parameter.name: parameter for parameter in command.params}
    keys = {spec.name: spec.key for spec in setting_specs(command)}
    for name, value in values.items():
        parameter = by_name[name]
        try:
            parameter.process_value(ctx, value)
        except typer.BadParameter as exc:
            raise ConfigError(
                f"config {path}: [{command.name}] {keys[name]}: {exc.message}"
            ) from None
    return values


def _fail(ctx: typer.Context, message: str) -> typing.NoReturn:
    _errors.print(f"[bold red]ferry {ctx.command.name}:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def _load_config_file(ctx: typer.Context, value: Path | None) -> None:
    """``--config`` callback (eager): the file's role table becomes ``ctx.default_map``."""
    if value is None or ctx.resilient_parsing:
        return
    try:
        values = _checked_file_values(ctx, value)
    except ConfigError as exc:
        _fail(ctx, str(exc))
    ctx.meta[CONFIG_PATH_KEY] = value
    ctx.default_map = {**(ctx.default_map or {}), **values}


def _request_print_config(ctx: typer.Context, value: bool) -> None:
    if value:
        ctx.meta[PRINT_CONFIG_KEY] = True


def config_option(role: str) -> object:
    """The ``--config PATH`` option of ``ferry ROLE`` (env ``FERRY_<ROLE>_CONFIG``)."""
    return typer.Option(
        "--config",
        envvar=f"FERRY_{role}_CONFIG",
        metavar="PATH",
        is_eager=True,
        expose_value=False,
        callback=_load_config_file,
        help=f"Read settings from this TOML file (its {role.lower()} table); environment "
        "variables and flags override them. See docs/configuration.md.",
    )


def print_config_option(role: str) -> object:
    """The ``--print-config`` switch of ``ferry ROLE``."""
    return typer.Option(
        "--print-config",
        envvar=f"FERRY_{role}_PRINT_CONFIG",
        expose_value=False,
        callback=_request_print_config,
        help="Print the settings as TOML, each with where it came from, and exit.",
    )


def _origin(ctx: typer.Context, spec: SettingSpec) -> str:
    source = ctx.get_parameter_source(spec.name)
    name = source.name if source is not None else "DEFAULT"
    if name == "COMMANDLINE":
        return f"flag {spec.flag}"
    if name == "ENVIRONMENT":
        return f"env {spec.envvar}" if spec.envvar else "env"
    if name == "DEFAULT_MAP":
        return "file"
    return "default"


def resolved_settings(ctx: typer.Context) -> list[ResolvedSetting]:
    """Every setting of the running command with its value and origin (hidden settings
    only when set)."""
    command = ctx.command
    assert isinstance(command, typer.core.TyperCommand)
    resolved = []
    for spec in setting_specs(command):
        setting = ResolvedSetting(
            spec=spec, value=setting_value(ctx.params.get(spec.name)), origin=_origin(ctx, spec)
        )
        if spec.hidden and setting.origin == "default":
            continue
        resolved.append(setting)
    return resolved


class RoleCommand(typer.core.TyperCommand):
    """A ``ferry ROLE`` command: with ``--print-config`` it prints its settings instead of
    running."""

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        if ctx.meta.get(PRINT_CONFIG_KEY):
            path = ctx.meta.get(CONFIG_PATH_KEY)
            source = f"{path} (config file)" if path is not None else "no config file"
            header = (
                f"ferry {self.name} settings: flags > environment > {source} > defaults.\n"
                "Valid as a --config file; secrets and unset settings are comments."
            )
            typer.echo(render_settings(self.name or "", resolved_settings(ctx), header), nl=False)
            return None
        return super().invoke(ctx)


class ConfigReloader:
    """Re-reads a running command's ``--config`` file (on SIGHUP) with the same precedence:
    settings given by flag or environment keep their values."""

    def __init__(self, ctx: typer.Context) -> None:
        self._ctx = ctx
        self.path: Path | None = ctx.meta.get(CONFIG_PATH_KEY)
        """The configuration file, if the command was given one."""

    def reload(self, keys: Sequence[str]) -> SettingValues:
        """The settings ``keys`` as they are now; a :class:`ConfigError` if the file is bad."""
        ctx = self._ctx
        command = ctx.command
        assert isinstance(command, typer.core.TyperCommand)
        file_values = _checked_file_values(ctx, self.path) if self.path is not None else {}
        specs = {spec.key: spec for spec in setting_specs(command)}
        by_name = {parameter.name: parameter for parameter in command.params}
        values: dict[str, SettingValue | None] = {}
        for key in keys:
            spec = specs[key]
            source = ctx.get_parameter_source(spec.name)
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
                values[key] = setting_value(ctx.params.get(spec.name))
            elif spec.name in file_values:
                parameter = by_name[spec.name]
                values[key] = setting_value(parameter.process_value(ctx, file_values[spec.name]))
            else:
                values[key] = spec.default
        return SettingValues(values)
