"""SIGHUP makes a running egress re-read its configuration file's destination policy.

Separate processes and Debian's curl, as an operator would run them; the only destination is
a loopback HTTP server that counts what reaches it, opened by an allow rule in the file and
then closed by a deny rule added to the file while the egress runs.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .processes import Network, process_network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

BODY = b"reached through the allow rule of the config file\n"
CURL = ("/usr/bin/curl", "--silent", "--show-error", "--max-time", "20")
"""curl, quiet but for errors, giving up after 20 s."""
LOG_TIMEOUT = 20.0
"""Longest wait for the egress to log that it handled a SIGHUP."""


class CountingOrigin:
    """An HTTP server on 127.0.0.1 that counts the requests reaching it."""

    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with origin._lock:
                    origin.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]

    def count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return self.requests


@contextmanager
def counting_origin() -> Iterator[CountingOrigin]:
    origin = CountingOrigin()
    thread = threading.Thread(target=origin.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        origin.server.shutdown()
        origin.server.server_close()
        thread.join(timeout=10)


def curl(proxy: str, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CURL, "--socks5-hostname", proxy, url],
        capture_output=True,
        timeout=40,
        check=False,
    )


def send_sighup_and_wait_for(network: Network, text: str, seen_before: int) -> str:
    """SIGHUP the egress, then wait until its log holds ``text`` once more than before."""
    assert network.egress is not None
    network.egress.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + LOG_TIMEOUT
    while time.monotonic() < deadline:
        log = network.egress.log()
        if log.count(text) > seen_before:
            return log
        assert network.egress.process.poll() is None, f"the egress exited:\n{log}"
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the egress log:\n{network.logs()}")


def test_sighup_swaps_in_a_deny_rule_from_the_file_and_keeps_it_when_the_file_breaks(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ferry.toml"
    with counting_origin() as origin:
        url = f"http://127.0.0.1:{origin.port}/page"
        allow = f'[egress]\nallow_destination = ["127.0.0.1/32:{origin.port}"]\n'
        config.write_text(allow)
        arguments = ("--config", str(config))
        with process_network(tmp_path / "net", egress_arguments=arguments, volunteers=1) as net:
            allowed = curl(net.proxy, url)
            assert allowed.returncode == 0, allowed.stderr.decode() + net.logs()
            assert allowed.stdout == BODY
            assert origin.count() == 1

            config.write_text(allow + 'deny_destination = ["127.0.0.0/8"]\n')
            log = send_sighup_and_wait_for(net, "reloaded the destination policy", 0)
            reload_line = next(line for line in log.splitlines() if "reloaded the dest" in line)
            assert " INFO " in reload_line
            assert "1 allow rules, 1 deny rules" in reload_line
            assert str(origin.port) not in reload_line and "127.0.0" not in reload_line

            denied = curl(net.proxy, url)
            assert denied.returncode == 97, denied.stderr.decode()  # SOCKS5 refused
            assert b"(2)" in denied.stderr  # SOCKS reply 0x02: not allowed by the ruleset
            assert origin.count() == 1

            config.write_text('[egress]\nallow_destination = "not a list"\n')
            log = send_sighup_and_wait_for(net, "kept the old destination policy", 0)
            error_line = next(line for line in log.splitlines() if "kept the old" in line)
            assert " ERROR " in error_line
            assert "allow_destination: expected a list" in error_line

            still_denied = curl(net.proxy, url)
            assert still_denied.returncode == 97, still_denied.stderr.decode()
            assert b"(2)" in still_denied.stderr
            assert origin.count() == 1

            # A good file again: the allow rule alone opens the origin once more.
            config.write_text(allow)
            send_sighup_and_wait_for(net, "reloaded the destination policy", 1)
            again = curl(net.proxy, url)
            assert again.returncode == 0, again.stderr.decode() + net.logs()
            assert origin.count() == 2
