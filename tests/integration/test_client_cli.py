"""The client's command line: ``--check``, ``--print-browser-setup``, ``--lang``, the page's
address in the ready file. Real ``ferry`` processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ferry.core.bridge_line import BridgeLine, parse_bridge_line

from .processes import Network, Role, ferry_command, free_port, process_network

pytestmark = pytest.mark.integration


def run_client(
    arguments: list[str], *, environment: dict[str, str] | None = None
) -> tuple[int, str]:
    """``ferry client ARGUMENTS`` to its end; (exit status, output without line wrapping)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "LC_", "LANG"))}
    env.update({"NO_COLOR": "1", "COLUMNS": "500", **(environment or {})})
    result = subprocess.run(
        [*ferry_command(), "client", "--ice-address", "127.0.0.1", *arguments],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def check_arguments(network: Network, bridge: str | None = None) -> list[str]:
    return ["--check", "--broker", network.broker_url, "--bridge", bridge or network.bridge]


def test_check_passes_then_names_a_wrong_fingerprint(tmp_path: Path) -> None:
    with process_network(tmp_path, volunteers=1, client_volunteers=1) as network:
        status, output = run_client(check_arguments(network))
        assert status == 0, network.logs() + output
        assert "1. The broker, directly: ok." in output, output
        assert "2. The broker, through the front: skipped. Not configured" in output, output
        assert "7. A test fetch through the whole chain: ok." in output, output
        assert "Every step passed: ferry works." in output, output
        assert "Traceback" not in output

        # The running client names its page in the ready file, and the page serves the PAC.
        ready = network.client.wait_ready()
        assert ready["ui"].startswith("http://127.0.0.1:"), ready
        with urllib.request.urlopen(ready["ui"] + "proxy.pac", timeout=10) as response:
            pac = response.read().decode()
        assert f'return "SOCKS5 {ready["proxy"]}";' in pac, pac

        real = parse_bridge_line(network.bridge)
        wrong = str(BridgeLine(real.url, bytes(32)))
        status, output = run_client(
            check_arguments(network, wrong), environment={"LANG": "zh_CN.UTF-8"}
        )
        assert status == 1, output
        assert "6. 出口服务器的身份：失败。出口服务器的证书与您网桥行中的指纹不符。" in output, (
            output
        )
        assert "检查在第 6 步失败：出口服务器的身份。" in output, output
        assert "Traceback" not in output


def test_check_names_the_broker_when_it_is_stopped() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    status, output = run_client(["--check", "--broker", dead, "--bridge", bridge, "--lang", "ru"])
    assert status == 1, output
    assert "1. Брокер напрямую: ОШИБКА. Брокер недоступен." in output, output
    assert "Что попробовать:" in output, output
    assert "4. Волонтёр откликнулся: не выполнялось." in output, output
    assert "Проверка не прошла на шаге 1: Брокер напрямую." in output, output


def test_check_names_the_volunteer_step_when_none_is_there(tmp_path: Path) -> None:
    network = Network(tmp_path)
    try:
        network.start_egress()
        egress_url = f"ws://127.0.0.1:{network.egress_port}/v1/relay"
        broker = Role(
            "broker", ["broker", "--listen", "127.0.0.1:0", "--egress", egress_url], tmp_path
        )
        network.roles.append(broker)
        network.broker_url = broker.wait_ready()["broker"]
        status, output = run_client(check_arguments(network))
    finally:
        network.close()
    assert status == 1, output
    assert "3. STUN and the NAT type: skipped." in output, output
    assert "4. A volunteer offered: FAILED. No volunteer answered in time." in output, output
    assert "The check failed at step 4: A volunteer offered." in output, output


def test_print_browser_setup_gives_the_pac_address_and_socks_values() -> None:
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    status, output = run_client(
        [
            "--print-browser-setup",
            "--broker",
            "http://127.0.0.1:9",
            "--bridge",
            bridge,
            "--listen",
            "127.0.0.1:1080",
        ]
    )
    assert status == 0, output
    assert "http://127.0.0.1:1081/proxy.pac" in output, output
    assert "SOCKS Host 127.0.0.1, Port 1080, SOCKS v5" in output, output
    assert "chromium --proxy-pac-url=http://127.0.0.1:1081/proxy.pac" in output, output
    # the browser's own WebRTC would go around the proxy: said, and kept inside for Chromium
    assert "--webrtc-ip-handling-policy=disable_non_proxied_udp" in output, output
    assert "media.peerconnection.enabled" in output, output
    status, output = run_client(
        [
            "--print-browser-setup",
            "--broker",
            "http://127.0.0.1:9",
            "--bridge",
            bridge,
            "--listen",
            "127.0.0.1:1080",
            "--ui-listen",
            "127.0.0.1:7000",
            "--lang",
            "fa",
        ]
    )
    assert status == 0, output
    assert "تنظیم مرورگر" in output, output
    assert "http://127.0.0.1:7000/proxy.pac" in output, output


def test_an_unknown_language_is_refused_clearly() -> None:
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    status, output = run_client(
        ["--broker", "http://127.0.0.1:9", "--bridge", bridge, "--lang", "klingon"]
    )
    assert status == 2, output
    assert "--lang 'klingon' is not a language ferry speaks" in output, output
    assert "Traceback" not in output


def test_a_status_page_port_in_use_gives_a_clear_message() -> None:
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        status, output = run_client(
            [
                "--broker",
                "http://127.0.0.1:9",
                "--bridge",
                bridge,
                "--listen",
                "127.0.0.1:0",
                "--ui-listen",
                f"127.0.0.1:{port}",
            ]
        )
    assert status == 1, output
    assert f"the status page cannot listen on port {port}" in output, output
    assert "choose another --ui-listen port" in output, output
    assert "Traceback" not in output, output


def test_the_status_page_refuses_a_non_loopback_address() -> None:
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    status, output = run_client(
        ["--broker", "http://127.0.0.1:9", "--bridge", bridge, "--ui-listen", "0.0.0.0:8081"]
    )
    assert status == 2, output
    assert "the status page must listen on a loopback address, not 0.0.0.0" in output, output


def test_a_damaged_bridge_line_on_the_command_line_is_refused_in_the_users_language() -> None:
    line = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    damaged = line.replace(":9/", ":8/")
    status, output = run_client(["--broker", "http://127.0.0.1:9", "--bridge", damaged])
    assert status == 2, output
    assert "This bridge line is damaged: its checksum does not match. Copy it again." in output
    status, output = run_client(
        ["--broker", "http://127.0.0.1:9", "--bridge", damaged], environment={"LANG": "fa_IR"}
    )
    assert status == 2, output
    assert "این خط پل آسیب دیده است" in output, output


def test_a_taken_default_status_page_port_leaves_the_proxy_running(tmp_path: Path) -> None:
    """``--ui-listen auto`` (the default) on a taken port: a warning, no page, the proxy up."""
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    occupied, proxy_port = _taken_port_after_a_free_one()
    page_port = proxy_port + 1
    with occupied:
        client = Role(
            "client",
            [
                "client",
                "--broker",
                "http://127.0.0.1:9",
                "--bridge",
                bridge,
                "--ice-address",
                "127.0.0.1",
                "--webrtc",
                "python",
                "--listen",
                f"127.0.0.1:{proxy_port}",
            ],
            tmp_path,
        )
        try:
            for _ in range(600):  # the proxy listens before any volunteer is found: ≤ 60 s
                if f"proxy on 127.0.0.1:{proxy_port}" in client.log():
                    break
                assert client.process.poll() is None, client.log()
                time.sleep(0.1)
            else:
                raise AssertionError(f"the proxy did not start:\n{client.log()}")
            with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as proxy:
                proxy.sendall(b"\x05\x01\x00")  # SOCKS5 greeting, no authentication
                assert proxy.recv(2) == b"\x05\x00"
        finally:
            client.stop()
    output = client.log()
    assert f"cannot listen on port {page_port}" in output, output
    assert "running without the status page" in output, output
    assert "Traceback" not in output, output


def _taken_port_after_a_free_one() -> tuple[socket.socket, int]:
    """A listening socket on port P + 1 of 127.0.0.1, and P, which was free just now."""
    for _ in range(50):
        occupied = socket.socket()
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        below = occupied.getsockname()[1] - 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", below))
            except OSError:
                occupied.close()
                continue
        return occupied, below
    raise AssertionError("no free port found below 50 ephemeral ones")


def test_a_bad_status_page_address_names_its_own_flag() -> None:
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    status, output = run_client(
        ["--broker", "http://127.0.0.1:9", "--bridge", bridge, "--ui-listen", "127.0.0.1:port"]
    )
    assert status == 2, output
    assert "--ui-listen '127.0.0.1:port': the port must be a number" in output, output
    assert "Traceback" not in output, output
