"""Configuration files: TOML → default_map, every kind of mistake, TOML written back out."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import pytest
import typer
import typer.core
import typer.main
from typer.testing import CliRunner

from ferry.cli import app
from ferry.command_settings import (
    ConfigReloader,
    RoleCommand,
    config_option,
    print_config_option,
    role_commands,
    setting_specs,
)
from ferry.config_file import (
    ResolvedSetting,
    SettingKind,
    SettingSpec,
    read_role_settings,
    render_settings,
    role_settings,
    toml_value,
)
from ferry.errors import ConfigError


def spec(
    key: str,
    kind: SettingKind,
    *,
    name: str | None = None,
    repeatable: bool = False,
    secret: bool = False,
) -> SettingSpec:
    return SettingSpec(
        key=key,
        name=name or key,
        flag="--" + key.replace("_", "-"),
        envvar=f"FERRY_EGRESS_{key.upper()}",
        kind=kind,
        repeatable=repeatable,
        required=False,
        hidden=False,
        secret=secret,
        default=None,
        help="",
    )


ROLES = {
    "egress": (
        spec("listen", SettingKind.TEXT),
        spec("max_sessions", SettingKind.INTEGER),
        spec("timeout", SettingKind.NUMBER),
        spec("verbose", SettingKind.SWITCH),
        spec("deny_destination", SettingKind.TEXT, repeatable=True),
    ),
    "client": (
        spec("broker", SettingKind.TEXT, name="broker_url"),
        spec("password", SettingKind.TEXT, secret=True),
    ),
}


def load(text: str, role: str = "egress") -> dict[str, object]:
    return dict(role_settings(text, source="/etc/ferry.toml", role=role, roles=ROLES))


def test_the_role_table_becomes_a_default_map_by_parameter_name() -> None:
    text = """
[egress]
listen = "0.0.0.0:8443"
max_sessions = 20
timeout = 2
verbose = true
deny_destination = ["*:25", "10.0.0.0/8"]

[client]
broker = "https://broker.example.org"
"""
    assert load(text) == {
        "listen": "0.0.0.0:8443",
        "max_sessions": 20,
        "timeout": 2,
        "verbose": True,
        "deny_destination": ["*:25", "10.0.0.0/8"],
    }
    # The key is the flag's name; the default_map is keyed by the parameter's name.
    assert load(text, "client") == {"broker_url": "https://broker.example.org"}


def test_a_missing_table_or_an_empty_file_sets_nothing() -> None:
    assert load("") == {}
    assert load('[client]\nbroker = "x"\n') == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[egress]\nlistne = "x"\n', '[egress] no setting "listne" (did you mean "listen"?)'),
        ("[egres]\n", '[egres] is not a role (did you mean "egress"?)'),
        ('listen = "x"\n', '"listen" is outside any table'),
        ('egress = "x"\n', '"egress" must be a table'),
        ("[egress\n", "not valid TOML"),
        ("[egress]\nlisten = 8443\n", "[egress] listen: expected a string, not an integer (8443)"),
        ("[egress]\nmax_sessions = 1.5\n", "max_sessions: expected an integer, not a number"),
        (
            '[egress]\nmax_sessions = "20"\n',
            'max_sessions: expected an integer, not a string ("20")',
        ),
        ("[egress]\nmax_sessions = true\n", "max_sessions: expected an integer, not a boolean"),
        ("[egress]\ntimeout = false\n", "timeout: expected a number, not a boolean"),
        ('[egress]\nverbose = "yes"\n', "verbose: expected true or false, not a string"),
        ("[egress]\nverbose = 1\n", "verbose: expected true or false, not an integer"),
        (
            '[egress]\ndeny_destination = "*:25"\n',
            "deny_destination: expected a list of values that are each a string "
            "(--deny-destination may repeat), not a string",
        ),
        ("[egress]\ndeny_destination = [25]\n", "each item must be a string, not an integer"),
        ("[egress]\nlisten = {host = 1}\n", "listen: expected a string, not a table"),
        # Another role's table is checked too: one shared file, mistakes found by any role.
        ('[client]\nbrokr = "x"\n', '[client] no setting "brokr" (did you mean "broker"?)'),
    ],
)
def test_every_mistake_names_the_file_table_key_and_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(text)
    assert str(raised.value).startswith("config /etc/ferry.toml: ")
    assert message in str(raised.value)


def test_unreadable_and_non_utf8_files_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"config {missing}: cannot read it"):
        read_role_settings(missing, role="egress", roles=ROLES)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[egress]\nlisten = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_role_settings(binary, role="egress", roles=ROLES)
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        read_role_settings(folder, role="egress", roles=ROLES)
    good = tmp_path / "good.toml"
    good.write_text('[egress]\nlisten = "127.0.0.1:1"\n')
    assert read_role_settings(good, role="egress", roles=ROLES) == {"listen": "127.0.0.1:1"}


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        0,
        -7,
        2.5,
        1e-05,
        "",
        'quote " backslash \\ tab \t newline \n bell \x07 delete \x7f é ✓',
        [],
        ["a", "b c"],
        [1, 2],
    ],
)
def test_toml_value_round_trips_through_tomllib(value: object) -> None:
    assert tomllib.loads(f"x = {toml_value(value)}\n")["x"] == value  # type: ignore[arg-type]


def test_rendered_settings_load_back_with_secrets_and_unset_values_left_out() -> None:
    egress = {each.key: each for each in ROLES["egress"]}
    client = {each.key: each for each in ROLES["client"]}
    settings = [
        ResolvedSetting(egress["listen"], "127.0.0.1:8443", "default"),
        ResolvedSetting(egress["max_sessions"], 20, "file"),
        ResolvedSetting(egress["timeout"], 2.5, "env FERRY_EGRESS_TIMEOUT"),
        ResolvedSetting(egress["verbose"], True, "flag --verbose"),
        ResolvedSetting(egress["deny_destination"], ["*:25"], "file"),
        ResolvedSetting(client["broker"], None, "default"),
        ResolvedSetting(client["password"], "hunter2", "env FERRY_CLIENT_PASSWORD"),
    ]
    text = render_settings("egress", settings, "first line\nsecond line")
    assert "hunter2" not in text
    assert "# password = (secret, not shown)  # env FERRY_CLIENT_PASSWORD" in text
    assert 'listen = "127.0.0.1:8443"  # default' in text
    assert "timeout = 2.5  # env FERRY_EGRESS_TIMEOUT" in text
    assert "verbose = true  # flag --verbose" in text
    assert text.startswith("# first line\n# second line\n[egress]\n")
    assert tomllib.loads(text) == {
        "egress": {
            "listen": "127.0.0.1:8443",
            "max_sessions": 20,
            "timeout": 2.5,
            "verbose": True,
            "deny_destination": ["*:25"],
        }
    }


# --- Settings read from the real commands ------------------------------------------------------


def real_specs() -> dict[str, dict[str, SettingSpec]]:
    group = typer.main.get_command(app)
    return {
        role: {each.key: each for each in setting_specs(command)}
        for role, command in role_commands(group).items()
    }


def test_every_role_command_takes_part_with_its_flags_as_settings() -> None:
    specs = real_specs()
    assert list(specs) == ["demo", "broker", "egress", "volunteer", "client"]
    egress = specs["egress"]
    assert egress["allow_destination"].repeatable
    assert egress["allow_destination"].kind is SettingKind.TEXT
    assert egress["allow_destination"].envvar == "FERRY_EGRESS_ALLOW_DESTINATION"
    assert egress["unsafe_allow_private_destinations"].kind is SettingKind.SWITCH
    assert egress["deny_ports"].default == "25,119,135-139,445,563"
    assert egress["state_dir"].default == "ferry-egress"
    assert egress["public_url"].default is None
    assert "config" not in egress and "print_config" not in egress
    volunteer = specs["volunteer"]
    assert volunteer["broker"].name == "broker_url"
    assert volunteer["broker"].required
    assert volunteer["capacity"].kind is SettingKind.INTEGER
    assert volunteer["test_impair_loss"].kind is SettingKind.NUMBER
    assert volunteer["test_impair_loss"].hidden
    client = specs["client"]
    assert client["password"].secret and client["pairing"].secret
    assert not client["username"].secret
    assert client["status_every"].kind is SettingKind.NUMBER
    for role, settings in specs.items():
        for key, each in settings.items():
            assert each.flag == "--" + key.replace("_", "-"), (role, key)
            assert each.envvar is not None and each.envvar.startswith(f"FERRY_{role.upper()}_")


def test_the_example_file_matches_the_real_commands() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "ferry.example.toml"
    roles = {role: tuple(settings.values()) for role, settings in real_specs().items()}
    text = example.read_text()
    for role in ("egress", "broker", "volunteer", "client"):
        table = role_settings(text, source=str(example), role=role, roles=roles)
        assert table, role
    egress = role_settings(text, source=str(example), role="egress", roles=roles)
    assert egress["deny_destination"] == ["*:6881-6999"]


def test_a_role_command_class_is_what_the_commands_use() -> None:
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    # Every command that runs a role reads a config file; the one-shot diagnostics do not.
    diagnostics = {"nat"}
    assert set(role_commands(group)) == {
        name
        for name, command in commands.items()
        if isinstance(command, typer.core.TyperCommand) and name not in diagnostics
    }
    assert set(role_commands(group)) == {"demo", "broker", "egress", "volunteer", "client"}


# --- Re-reading a running command's file ------------------------------------------------------


def test_a_reload_takes_the_new_file_but_flags_and_environment_still_win(tmp_path: Path) -> None:
    config = tmp_path / "ferry.toml"
    reloaded: dict[str, object] = {}
    toy = typer.Typer()

    @toy.command("egress", cls=RoleCommand)
    def egress(
        ctx: typer.Context,
        config_file: Annotated[Path | None, config_option("EGRESS")] = None,
        print_config: Annotated[bool, print_config_option("EGRESS")] = False,
        from_file: Annotated[str, typer.Option()] = "default",
        from_env: Annotated[str, typer.Option(envvar="FERRY_EGRESS_FROM_ENV")] = "default",
        from_flag: Annotated[str, typer.Option()] = "default",
        dropped: Annotated[list[str] | None, typer.Option()] = None,
        switch: Annotated[bool, typer.Option()] = False,
    ) -> None:
        reloader = ConfigReloader(ctx)
        assert reloader.path == config
        config.write_text(
            '[egress]\nfrom_file = "new"\nfrom_env = "new"\nfrom_flag = "new"\nswitch = true\n'
        )
        values = reloader.reload(("from_file", "from_env", "from_flag", "dropped", "switch"))
        reloaded.update(
            from_file=values.text("from_file"),
            from_env=values.text("from_env"),
            from_flag=values.text("from_flag"),
            dropped=values.texts("dropped"),
            switch=values.switch("switch"),
        )
        config.write_text("[egress]\nswitch = 1\n")
        with pytest.raises(ConfigError, match=r"\[egress\] switch: expected true or false"):
            reloader.reload(("switch",))

    @toy.command("other")
    def other() -> None:
        """A second command, so that the first is a sub-command as in ``ferry``."""

    config.write_text(
        '[egress]\nfrom_file = "old"\nfrom_env = "old"\nfrom_flag = "old"\ndropped = ["x"]\n'
    )
    result = CliRunner().invoke(
        toy,
        ["egress", "--config", str(config), "--from-flag", "flag"],
        env={"FERRY_EGRESS_FROM_ENV": "env"},
    )
    assert result.exit_code == 0, result.output
    assert reloaded == {
        "from_file": "new",
        "from_env": "env",
        "from_flag": "flag",
        "dropped": (),
        "switch": True,
    }
