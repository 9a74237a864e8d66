"""The ``ferry`` command as a user runs it: real processes, real curl, real sockets on loopback.

Every ferry process here is started from the installed ``ferry`` script with its output going
to files under ``tmp_path``; tests wait for ``--ready-file`` with a deadline (never a sleep),
stop each process by its PID (SIGTERM, then SIGKILL), and print every process's output when
something fails. The conftest audit hook does not see into subprocesses, so every process is
told to stay on loopback: ``--ice-address 127.0.0.1`` for WebRTC, ``127.0.0.1`` listeners, and
only loopback destinations.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import pytest

from ferry.core.bridge_line import parse_bridge_line

pytestmark = pytest.mark.integration

CURL = "/usr/bin/curl"
START_TIMEOUT = 30.0
"""Longest wait for a process's ready file."""
STOP_TIMEOUT = 10.0
"""Longest wait for a process to exit after a signal, before SIGKILL."""
CURL_TIMEOUT = 20.0
"""Longest a single curl process may run before the test gives up on it."""
CURL_MAX_TIME = "15"
"""curl's own limit in seconds (``--max-time``), a little less, so curl reports what hung."""
QUICK_COMMAND_TIMEOUT = 30.0
"""Longest a command that should exit by itself (--help, bad flags) may run."""
POLL_INTERVAL = 0.05

ORIGIN_BODY = b"the origin's exact body, through ferry\n"
SECRET_PATH = "/secret-destination-path"
ROLES = ("demo", "broker", "egress", "volunteer", "client")
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


def _ferry_script() -> str:
    """The installed ``ferry`` console script next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "ferry"
    if beside.exists():
        return str(beside)
    found = shutil.which("ferry")
    assert found is not None, "the ferry command is not installed (pip install -e '.[dev]')"
    return found


FERRY = _ferry_script()


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without proxy or FERRY_* variables, plus ``extra``.

    A wide ``COLUMNS`` keeps rich from wrapping ``--help`` tables and messages.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in PROXY_VARIABLES and not name.startswith("FERRY_")
    }
    environment["COLUMNS"] = "200"
    environment["NO_COLOR"] = "1"
    environment.update(extra or {})
    return environment


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace made one space (undoes rich's line wrapping)."""
    return " ".join(text.split())


# ---- ferry processes --------------------------------------------------------------------------


class FerryProcess:
    """One ``ferry`` process whose stdout and stderr go to files in a folder."""

    def __init__(
        self, name: str, arguments: list[str], folder: Path, environment: dict[str, str]
    ) -> None:
        self.name = name
        self.arguments = arguments
        self.stdout_path = folder / f"{name}.stdout"
        self.stderr_path = folder / f"{name}.stderr"
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [FERRY, *arguments],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=environment,
            )

    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout() + self.stderr()

    def describe(self) -> str:
        """The command, its exit status and its whole output, for a failure report."""
        return (
            f"==== ferry {' '.join(self.arguments)} (exit status {self.process.returncode})\n"
            f"---- stdout\n{self.stdout()}---- stderr\n{self.stderr()}"
        )

    def wait_for_ready_file(self, path: Path, timeout: float = START_TIMEOUT) -> dict[str, object]:
        """The JSON in ``path`` once the process writes it; fails if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                content = json.loads(path.read_text())
                assert isinstance(content, dict), f"{path} holds {content!r}, not an object"
                return content
            status = self.process.poll()
            assert status is None, f"ferry {self.name} exited ({status}) before it was ready"
            time.sleep(POLL_INTERVAL)
        raise AssertionError(f"ferry {self.name} wrote no {path.name} within {timeout} s")

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        """Send ``signum``; SIGKILL if the process is still running after STOP_TIMEOUT."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        return self.process.returncode


class FerryProcesses:
    """Starts ``ferry`` processes; on exit stops them all and, if the test failed, prints
    their output (pytest shows it in the failure report)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[FerryProcess] = []

    def start(
        self, name: str, arguments: list[str], environment: dict[str, str] | None = None
    ) -> FerryProcess:
        """Start ``ferry ARGUMENTS``; ``name`` names its output files."""
        process = FerryProcess(name, arguments, self.folder, _environment(environment))
        self.started.append(process)
        return process

    def __enter__(self) -> FerryProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            for process in reversed(self.started):
                try:
                    process.stop()
                finally:
                    if process.process.poll() is None:
                        process.process.kill()
                        process.process.wait(timeout=STOP_TIMEOUT)
        finally:
            if exc is not None:
                for process in self.started:
                    print(process.describe())


def run_ferry(arguments: list[str], environment: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a ``ferry`` command that should exit by itself; (exit status, stdout + stderr)."""
    result = subprocess.run(
        [FERRY, *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_environment(environment),
        timeout=QUICK_COMMAND_TIMEOUT,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


# ---- the origin server and curl ----------------------------------------------------------------


class OriginHandler(BaseHTTPRequestHandler):
    """Answers every GET with :data:`ORIGIN_BODY` and records the path asked for."""

    server: OriginServer

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(ORIGIN_BODY)))
        self.end_headers()
        self.wfile.write(ORIGIN_BODY)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


class OriginServer(ThreadingHTTPServer):
    """The destination: an HTTP server on 127.0.0.1:0 that records the paths it served."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), OriginHandler)
        self.paths: list[str] = []

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])


@contextmanager
def origin_server() -> Iterator[OriginServer]:
    """Serve :class:`OriginServer` from a thread for the duration of the block."""
    server = OriginServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=STOP_TIMEOUT)
        server.server_close()


def curl(proxy_arguments: list[str], url: str) -> bytes:
    """Fetch ``url`` with Debian's curl through a proxy; the body, or a failure naming why."""
    result = subprocess.run(
        [CURL, "--silent", "--show-error", "--max-time", CURL_MAX_TIME, *proxy_arguments, url],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=_environment(),
        timeout=CURL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"curl {' '.join(proxy_arguments)} {url} failed ({result.returncode}): "
        f"{result.stderr.decode(errors='replace')}"
    )
    return result.stdout


def get_json(url: str) -> object:
    """GET ``url`` (loopback) directly, ignoring any proxy settings; the decoded JSON."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=CURL_TIMEOUT) as response:
        return json.loads(response.read())


def proxy_address(ready: dict[str, object]) -> str:
    """The ``proxy`` entry of a ready file, checked to be ``127.0.0.1:PORT``."""
    proxy = ready.get("proxy")
    assert isinstance(proxy, str), f"ready file has no proxy string: {ready!r}"
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)", proxy)
    assert match is not None and 0 < int(match.group(1)) < 65536, f"bad proxy {proxy!r}"
    return proxy


def ready_string(ready: dict[str, object], key: str) -> str:
    """``ready[key]``, which must be a non-empty string."""
    value = ready.get(key)
    assert isinstance(value, str) and value, f"ready file has no {key!r} string: {ready!r}"
    return value


def mentions_number(text: str, number: int) -> bool:
    """Whether ``number`` appears in ``text`` as a whole token (not inside a longer word)."""
    return re.search(rf"(?<![0-9A-Za-z]){number}(?![0-9A-Za-z])", text) is not None


# ---- 1. help ------------------------------------------------------------------------------------

REQUIRED_IN_HELP: dict[str, tuple[str, ...]] = {
    "demo": (
        "--port",
        "FERRY_DEMO_PORT",
        "--volunteers",
        "FERRY_DEMO_VOLUNTEERS",
        "--ready-file",
        "--unsafe-allow-private-destinations",
        "FERRY_DEMO_UNSAFE_ALLOW_PRIVATE_DESTINATIONS",
        "--unsafe-logging",
        "FERRY_DEMO_UNSAFE_LOGGING",
    ),
    "broker": (
        "--listen",
        "FERRY_BROKER_LISTEN",
        "--egress",
        "FERRY_BROKER_EGRESS",
        "--ready-file",
        "--unsafe-logging",
        "FERRY_BROKER_UNSAFE_LOGGING",
    ),
    "egress": (
        "--listen",
        "FERRY_EGRESS_LISTEN",
        "--state-dir",
        "FERRY_EGRESS_STATE_DIR",
        "--public-url",
        "FERRY_EGRESS_PUBLIC_URL",
        "--unsafe-allow-private-destinations",
        "FERRY_EGRESS_UNSAFE_ALLOW_PRIVATE_DESTINATIONS",
        "--ready-file",
        "--unsafe-logging",
        "FERRY_EGRESS_UNSAFE_LOGGING",
    ),
    "volunteer": (
        "--broker",
        "FERRY_VOLUNTEER_BROKER",
        "--capacity",
        "FERRY_VOLUNTEER_CAPACITY",
        "--ice-address",
        "FERRY_VOLUNTEER_ICE_ADDRESS",
        "--webrtc",
        "FERRY_VOLUNTEER_WEBRTC",
        "--browser",
        "FERRY_VOLUNTEER_BROWSER",
        "--ready-file",
        "--unsafe-logging",
        "FERRY_VOLUNTEER_UNSAFE_LOGGING",
    ),
    "client": (
        "--broker",
        "FERRY_CLIENT_BROKER",
        "--bridge",
        "FERRY_CLIENT_BRIDGE",
        "--listen",
        "FERRY_CLIENT_LISTEN",
        "--volunteers",
        "FERRY_CLIENT_VOLUNTEERS",
        "--username",
        "FERRY_CLIENT_USERNAME",
        "--password",
        "FERRY_CLIENT_PASSWORD",
        "--ice-address",
        "FERRY_CLIENT_ICE_ADDRESS",
        "--webrtc",
        "FERRY_CLIENT_WEBRTC",
        "--browser",
        "FERRY_CLIENT_BROWSER",
        "--ready-file",
        "--unsafe-logging",
        "FERRY_CLIENT_UNSAFE_LOGGING",
    ),
}


def test_top_level_help_lists_every_role() -> None:
    status, output = run_ferry(["--help"])
    assert status == 0, output
    for role in ROLES:
        assert re.search(rf"^\W*{role}\b", output, re.MULTILINE), f"--help omits {role}:\n{output}"


@pytest.mark.parametrize("role", ROLES)
def test_role_help_names_each_option_and_its_environment_variable(role: str) -> None:
    status, output = run_ferry([role, "--help"])
    assert status == 0, output
    missing = [word for word in REQUIRED_IN_HELP[role] if word not in output]
    assert not missing, f"ferry {role} --help omits {missing}:\n{output}"


def test_required_options_are_marked_required_in_help() -> None:
    for role, required in (("volunteer", ("--broker",)), ("client", ("--broker", "--bridge"))):
        status, output = run_ferry([role, "--help"])
        assert status == 0, output
        for option in required:
            lines = [line for line in output.splitlines() if f" {option} " in line]
            assert len(lines) == 1, f"ferry {role} --help has no single {option} line:\n{output}"
            assert "required" in lines[0], f"ferry {role} --help: {option} not marked required"


# ---- 2. the demo --------------------------------------------------------------------------------


def test_demo_serves_curl_through_the_whole_chain_and_stops_on_sigint(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    with FerryProcesses(tmp_path) as ferry, origin_server() as origin:
        demo = ferry.start(
            "demo",
            [
                "demo",
                "--port",
                "0",
                "--ready-file",
                str(ready_file),
                "--unsafe-allow-private-destinations",
            ],
        )
        ready = demo.wait_for_ready_file(ready_file)
        assert set(ready) == {"proxy", "broker", "egress", "ui"}, ready
        proxy = proxy_address(ready)
        assert ready_string(ready, "broker").startswith("http://127.0.0.1:")
        assert ready_string(ready, "egress").startswith("ws://127.0.0.1:")

        body = curl(["--socks5-hostname", proxy], f"http://127.0.0.1:{origin.port}/demo")
        assert body == ORIGIN_BODY
        assert origin.paths == ["/demo"]

        assert demo.stop(signal.SIGINT) == 0, "ferry demo did not exit 0 on SIGINT"
        said = demo.output()
        for words in (
            f"broker {ready['broker']}",
            f"egress {ready['egress']}",
            "volunteers 2",
            f"SOCKS5 and HTTP proxy on {proxy}",
            "Ready.",
            f"curl --socks5-hostname {proxy} ",
            f"curl --proxytunnel -x http://{proxy} ",
            "Stopping",
        ):
            assert words in _one_line(said), f"the demo never said {words!r}:\n{said}"
        assert "Traceback" not in said, said


# ---- 3 and 6. the four roles as separate processes --------------------------------------------


def test_four_roles_as_processes_carry_socks5_and_http_connect_without_logging_destinations(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "egress-state"
    with FerryProcesses(tmp_path) as ferry, origin_server() as origin:
        egress = ferry.start(
            "egress",
            [
                "egress",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                str(state_dir),
                "--unsafe-allow-private-destinations",
                "--ready-file",
                str(tmp_path / "egress.json"),
            ],
        )
        egress_ready = egress.wait_for_ready_file(tmp_path / "egress.json")
        egress_url = ready_string(egress_ready, "egress")
        bridge = ready_string(egress_ready, "bridge")
        assert parse_bridge_line(bridge).url == egress_url
        assert (state_dir / "bridge-line").read_text().strip() == bridge
        assert bridge in egress.stdout().splitlines(), "the bridge line was not printed alone"

        broker = ferry.start(
            "broker",
            [
                "broker",
                "--listen",
                "127.0.0.1:0",
                "--egress",
                egress_url,
                "--ready-file",
                str(tmp_path / "broker.json"),
            ],
        )
        broker_url = ready_string(broker.wait_for_ready_file(tmp_path / "broker.json"), "broker")
        assert broker_url.startswith("http://127.0.0.1:")

        ferry.start(
            "volunteer",
            [
                "volunteer",
                "--broker",
                broker_url,
                "--ice-address",
                "127.0.0.1",
                "--unsafe-allow-internal-egress",
            ],
        )
        client = ferry.start(
            "client",
            [
                "client",
                "--broker",
                broker_url,
                "--bridge",
                bridge,
                "--listen",
                "127.0.0.1:0",
                "--volunteers",
                "2",
                "--ice-address",
                "127.0.0.1",
                "--ready-file",
                str(tmp_path / "client.json"),
            ],
        )
        client_ready = client.wait_for_ready_file(tmp_path / "client.json")
        assert set(client_ready) == {"proxy", "broker", "egress", "ui", "webrtc"}, client_ready
        assert client_ready["webrtc"] in ("browser", "python")  # --webrtc auto
        assert client_ready["broker"] == broker_url
        assert client_ready["egress"] == egress_url
        proxy = proxy_address(client_ready)

        url = f"http://127.0.0.1:{origin.port}{SECRET_PATH}"
        assert curl(["--socks5-hostname", proxy], url + "/socks5") == ORIGIN_BODY
        assert curl(["--proxytunnel", "-x", f"http://{proxy}"], url + "/connect") == ORIGIN_BODY
        assert origin.paths == [SECRET_PATH + "/socks5", SECRET_PATH + "/connect"]

        for process in ferry.started:
            assert process.stop() == 0, f"ferry {process.name} did not exit 0 on SIGTERM"
        for process in ferry.started:
            logs = process.output()
            assert "Traceback" not in logs, f"ferry {process.name} printed a traceback"
            assert SECRET_PATH not in logs, f"ferry {process.name} logged the requested path"
            assert not mentions_number(logs, origin.port), (
                f"ferry {process.name} logged the destination's port {origin.port}"
            )


def test_restarted_egress_keeps_its_identity_and_bridge_line(tmp_path: Path) -> None:
    state_dir = tmp_path / "egress-state"
    with socket.socket() as probe:  # a port that was free a moment ago, for both runs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    arguments = ["egress", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state_dir)]
    with FerryProcesses(tmp_path) as ferry:
        first = ferry.start("egress-first", [*arguments, "--ready-file", str(tmp_path / "1.json")])
        first_bridge = ready_string(first.wait_for_ready_file(tmp_path / "1.json"), "bridge")
        assert "Created a new egress identity" in _one_line(first.output())
        assert first.stop() == 0

        second = ferry.start(
            "egress-second", [*arguments, "--ready-file", str(tmp_path / "2.json")]
        )
        second_bridge = ready_string(second.wait_for_ready_file(tmp_path / "2.json"), "bridge")
        assert second_bridge == first_bridge
        assert (state_dir / "bridge-line").read_text().strip() == first_bridge
        assert "Created a new egress identity" not in _one_line(second.output())


# ---- 4. environment variables -------------------------------------------------------------------


def test_broker_takes_its_flags_from_environment_variables(tmp_path: Path) -> None:
    egresses = ["ws://127.0.0.1:1/v1/relay", "ws://127.0.0.1:2/v1/relay"]
    with FerryProcesses(tmp_path) as ferry:
        broker = ferry.start(
            "broker",
            ["broker", "--ready-file", str(tmp_path / "broker.json")],
            environment={
                "FERRY_BROKER_LISTEN": "127.0.0.1:0",
                "FERRY_BROKER_EGRESS": " ".join(egresses),
            },
        )
        broker_url = ready_string(broker.wait_for_ready_file(tmp_path / "broker.json"), "broker")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", broker_url), broker_url
        assert not broker_url.endswith(":8080"), "FERRY_BROKER_LISTEN was ignored"
        assert get_json(f"{broker_url}/v1/egresses") == {"egresses": egresses}


# ---- 5. clear errors ----------------------------------------------------------------------------


def test_client_with_a_garbage_bridge_line_says_so_without_a_traceback() -> None:
    status, output = run_ferry(["client", "--bridge", "garbage", "--broker", "http://127.0.0.1:9"])
    assert status != 0, output
    assert "bridge line" in _one_line(output), output
    assert "Traceback" not in output, output


def test_broker_without_an_egress_says_what_is_missing() -> None:
    status, output = run_ferry(["broker", "--listen", "127.0.0.1:0"])
    assert status != 0, output
    assert "--egress" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    "role_arguments",
    [
        ["broker", "--egress", "ws://127.0.0.1:1/v1/relay"],
        ["egress", "--state-dir", "{tmp}/egress-state"],
    ],
    ids=["broker", "egress"],
)
def test_a_port_in_use_gives_a_clear_message(role_arguments: list[str], tmp_path: Path) -> None:
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in role_arguments]
        status, output = run_ferry([*arguments, "--listen", f"127.0.0.1:{port}"])
    assert status != 0, output
    said = _one_line(output)
    assert "already in use" in said, output
    assert mentions_number(said, port), output
    assert "Traceback" not in output, output


def test_client_on_a_port_in_use_gives_a_clear_message(tmp_path: Path) -> None:
    with FerryProcesses(tmp_path) as ferry:
        egress = ferry.start(
            "egress",
            [
                "egress",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                str(tmp_path / "egress-state"),
                "--ready-file",
                str(tmp_path / "egress.json"),
            ],
        )
        bridge = ready_string(egress.wait_for_ready_file(tmp_path / "egress.json"), "bridge")
        with socket.socket() as occupied:
            occupied.bind(("127.0.0.1", 0))
            occupied.listen()
            port = occupied.getsockname()[1]
            status, output = run_ferry(
                [
                    "client",
                    "--broker",
                    "http://127.0.0.1:9",
                    "--bridge",
                    bridge,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--ice-address",
                    "127.0.0.1",
                ]
            )
        assert status != 0, output
        assert "already in use" in _one_line(output), output
        assert "Traceback" not in output, output
