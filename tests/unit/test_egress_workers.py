"""``ferry egress --workers``: the pieces that need no process (count, nginx lookup, the
workers' command line, the nginx configuration). The processes themselves are tested in
tests/integration/test_egress_workers.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ferry.egress.workers import (
    find_nginx,
    nginx_config,
    without_worker_options,
    worker_count,
    workers_config,
)
from ferry.errors import ConfigError

from ..host_tools import require_host

NGINX = "/usr/sbin/nginx"


def test_worker_count_takes_a_number_or_auto() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto", cores=lambda: 8) == 8
    assert worker_count("AUTO", cores=lambda: None) == 1
    for bad in ("0", "-2", "many", "257", ""):
        with pytest.raises(ConfigError):
            worker_count(bad)


def test_one_worker_is_the_plain_egress() -> None:
    settings = workers_config(
        "1",
        host="127.0.0.1",
        port=8443,
        state_dir=Path("state"),
        public_url=None,
        drain_seconds=30.0,
        arguments=["egress", "--workers", "1"],
    )
    assert settings is None


def test_without_nginx_the_message_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nginx is not installed.*apt-get install nginx"):
        find_nginx(candidates=[str(tmp_path / "nginx")], search_path=str(tmp_path))


def test_each_worker_gets_its_own_listen_and_ready_options() -> None:
    arguments = [
        "egress",
        "--workers",
        "3",
        "--listen=0.0.0.0:443",
        "--state-dir",
        "/var/lib/ferry",
        "--ready-file",
        "r.json",
        "--admin-listen",
        "127.0.0.1:9464",
        "--public-url=wss://egress.example/v1/relay",
        "--drain-seconds",
        "5",
    ]
    assert without_worker_options(arguments) == (
        "egress",
        "--state-dir",
        "/var/lib/ferry",
        "--drain-seconds",
        "5",
    )


def test_the_public_url_defaults_to_the_address_nginx_listens_on() -> None:
    settings = workers_config(
        "2",
        host="::1",
        port=8443,
        state_dir=Path("state"),
        public_url=None,
        drain_seconds=30.0,
        arguments=["egress", "--workers", "2"],
    )
    assert settings is not None
    assert settings.public_url == "ws://[::1]:8443/v1/relay"
    assert settings.worker_arguments == ("egress",)


def test_the_configuration_hashes_the_route_over_every_worker(tmp_path: Path) -> None:
    text = nginx_config(host="::", port=8443, upstream_ports=[4001, 4002], folder=tmp_path)
    assert "hash $ferry_route consistent;" in text
    assert 'map $arg_route $ferry_route { default $arg_route; "" none; }' in text
    assert "server 127.0.0.1:4001 " in text and "server 127.0.0.1:4002 " in text
    assert "listen [::]:8443;" in text
    assert "access_log off;" in text


def test_debians_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    require_host(NGINX)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(
        nginx_config(
            host="127.0.0.1", port=8443, upstream_ports=[4001, 4002, 4003], folder=tmp_path
        )
    )
    checked = subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr.decode()
