"""The role apps of ``ferry broker``, ``egress``, ``volunteer`` and ``client``, in-process.

What ``ferry ROLE`` runs as a process is :func:`ferry.roles.run_role` around one role app;
here the same apps run in one event loop on 127.0.0.1 (no signals, no subprocesses): their
:meth:`start` returns what the ready file says, a real curl download through the client's
SOCKS5 port arrives intact, :meth:`run` ends when its stop is set, and :meth:`close` gives
the ports back. :func:`ferry.roles.serve_role` and :func:`ferry.roles.run_role` are tested
with the same apps and with test doubles of :class:`ferry.roles.RoleApp`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import typer

from ferry.broker.role import BrokerRole
from ferry.broker.server import BrokerConfig
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.messages import DEFAULT_LANGUAGE, catalogue
from ferry.client.role import ClientRole
from ferry.client.session import TunnelConfig
from ferry.core.bridge_line import parse_bridge_line
from ferry.demo import LOOPBACK_WEBRTC
from ferry.egress.policy import DestinationPolicy
from ferry.egress.role import EgressRole
from ferry.egress.server import EgressConfig
from ferry.errors import FerryError, LocalError, NoVolunteerError
from ferry.roles import RoleApp, run_role, serve_role
from ferry.volunteer.relay import VolunteerConfig
from ferry.volunteer.role import VolunteerRole
from tests.waiting import wait_until

from .chain import Origin, run_curl

pytestmark = pytest.mark.timeout(180)

DOWNLOAD_BYTES = 3 * 1024 * 1024 + 17
WORDS = catalogue(DEFAULT_LANGUAGE)


def port_is_free(port: int) -> bool:
    """Whether a TCP listener can bind 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def egress_config(state_dir: Path) -> EgressConfig:
    """An egress on 127.0.0.1 that may reach the test's origin on loopback, no admin port."""
    return EgressConfig(
        state_dir=state_dir,
        host="127.0.0.1",
        port=0,
        policy=DestinationPolicy(allow_private=True),
        admin_port=None,
        drain_seconds=5.0,
    )


def client_config(broker_url: str, bridge: str, **tunnel: object) -> ClientConfig:
    """A client on a free loopback port, one volunteer path, no page."""
    return ClientConfig(
        broker_url=broker_url,
        tunnel=replace(
            TunnelConfig(bridge=parse_bridge_line(bridge), volunteers=1, spare_volunteers=0),
            webrtc=LOOPBACK_WEBRTC,
            **tunnel,  # type: ignore[arg-type]
        ),
        proxy=LocalProxyConfig(host="127.0.0.1", port=0),
    )


async def test_four_role_apps_carry_a_download_and_give_their_ports_back() -> None:
    with tempfile.TemporaryDirectory(prefix="ferry-egress-") as state:
        egress = EgressRole(egress_config(Path(state)))
        broker: BrokerRole | None = None
        volunteer: VolunteerRole | None = None
        client: ClientRole | None = None
        try:
            egress_ready = await egress.start()
            assert set(egress_ready) == {"egress", "bridge"}
            bridge = parse_bridge_line(str(egress_ready["bridge"]))
            assert bridge.url == egress_ready["egress"]
            broker = BrokerRole(
                BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=(bridge.url,))
            )
            broker_ready = await broker.start()
            broker_url = str(broker_ready["broker"])
            assert broker_url.startswith("http://127.0.0.1:")
            volunteer = VolunteerRole(
                VolunteerConfig(
                    broker_url=broker_url, webrtc=LOOPBACK_WEBRTC, allow_internal_egress=True
                )
            )
            assert await volunteer.start() == {
                "broker": broker_url,
                "capacity": 5,
                "max_rate": 0,
                "quota": 0,
                "webrtc": "python",
            }
            client = ClientRole(client_config(broker_url, str(egress_ready["bridge"])), WORDS)
            client_ready = await asyncio.wait_for(client.start(), 60)
            assert client.app is not None and client.app.tunnel is not None
            assert client.app.tunnel.session is not None, "start() ended before the session"
            proxy_host, proxy_port = client.app.proxy_address
            assert client_ready == {
                "proxy": f"{proxy_host}:{proxy_port}",
                "broker": broker_url,
                "egress": bridge.url,
                "webrtc": "python",
            }
            roles: list[RoleApp] = [client, volunteer, broker, egress]
            stops = [asyncio.Event() for _ in roles]
            runs = [
                asyncio.create_task(role.run(stop)) for role, stop in zip(roles, stops, strict=True)
            ]

            async with Origin().running() as origin:
                code, body, error = await run_curl(
                    "--socks5-hostname",
                    f"{proxy_host}:{proxy_port}",
                    f"http://127.0.0.1:{origin.port}/bytes/{DOWNLOAD_BYTES}",
                )
            assert code == 0, error
            expected = hashlib.sha256(Origin.payload(DOWNLOAD_BYTES)).hexdigest()
            assert hashlib.sha256(body).hexdigest() == expected
            assert not any(run.done() for run in runs), "a role's run() ended before its stop"

            for stop, run in zip(stops, runs, strict=True):
                stop.set()
                await asyncio.wait_for(run, 30)
            assert egress.server is not None and egress.server.router.draining
        finally:
            for role in (client, volunteer, broker, egress):
                if role is not None:
                    await role.close()
        assert port_is_free(proxy_port), "the client's proxy port is still bound"
        assert port_is_free(int(broker_url.rsplit(":", 1)[1])), "the broker's port is bound"
        assert port_is_free(int(bridge.url.split(":")[2].split("/")[0])), "egress port bound"
        assert client.app is None and egress.server is None and broker.server is None


async def test_a_stop_while_the_client_waits_for_volunteers_ends_it_without_a_ready_file(
    tmp_path: Path,
) -> None:
    with tempfile.TemporaryDirectory(prefix="ferry-egress-") as state:
        egress = EgressRole(egress_config(Path(state)))
        broker: BrokerRole | None = None
        try:
            bridge = str((await egress.start())["bridge"])
            broker = BrokerRole(
                BrokerConfig(
                    host="127.0.0.1",
                    port=0,
                    allowed_egresses=(parse_bridge_line(bridge).url,),
                    client_timeout=0.5,
                )
            )
            broker_url = str((await broker.start())["broker"])
            # No volunteer: the client's start() waits for a session that cannot come.
            client = ClientRole(client_config(broker_url, bridge, volunteer_wait=0.5), WORDS)
            ready_file = tmp_path / "client.json"
            stop = asyncio.Event()
            serving = asyncio.create_task(serve_role(client, stop, ready_file))
            await wait_until(
                lambda: client.app is not None and client.app.proxy is not None,
                "the client app has its proxy",
            )
            assert client.app is not None
            proxy_port = client.app.proxy_address[1]
            await wait_until(
                lambda: client.app is not None and client.app.problem() is not None,
                "the client app reports a problem",
            )
            assert not serving.done()
            stop.set()
            await asyncio.wait_for(serving, 30)
            assert not ready_file.exists(), "a client that never connected wrote its ready file"
            assert client.app is None, "serve_role did not close the client"
            assert port_is_free(proxy_port)
        finally:
            if broker is not None:
                await broker.close()
            await egress.close()


async def test_the_reconnect_loop_reports_each_failed_attempt() -> None:
    with tempfile.TemporaryDirectory(prefix="ferry-egress-") as state:
        egress = EgressRole(egress_config(Path(state)))
        broker: BrokerRole | None = None
        try:
            bridge = str((await egress.start())["bridge"])
            broker = BrokerRole(
                BrokerConfig(
                    host="127.0.0.1",
                    port=0,
                    allowed_egresses=(parse_bridge_line(bridge).url,),
                    client_timeout=0.3,
                )
            )
            broker_url = str((await broker.start())["broker"])
            failures: list[FerryError] = []
            config = replace(
                client_config(broker_url, bridge, volunteer_wait=0.3),
                session_retry_interval=0.1,
            )
            client = ClientApp(config, on_session_failure=failures.append)
            try:
                await client.start()
                waiting = asyncio.create_task(client.wait_for_session())
                await wait_until(lambda: len(failures) >= 2, "two failed attempts reported")
                assert not waiting.done(), "wait_for_session() ended without a session"
                assert all(isinstance(failure, NoVolunteerError) for failure in failures)
                assert client.problem() is not None
                waiting.cancel()
            finally:
                await client.close()
        finally:
            if broker is not None:
                await broker.close()
            await egress.close()


class ScriptedRole:
    """A :class:`RoleApp` double: its start returns ``ready`` or raises ``error``; its run
    sends this process ``signals`` and then waits for the stop."""

    def __init__(
        self,
        ready: dict[str, object],
        *,
        error: FerryError | None = None,
        signals: tuple[signal.Signals, ...] = (),
    ) -> None:
        self.ready = ready
        self.error = error
        self.signals = signals
        self.stopped_now = 0
        self.closed = 0
        self.ran = False

    async def start(self) -> dict[str, object]:
        if self.error is not None:
            raise self.error
        return self.ready

    async def run(self, stop: asyncio.Event) -> None:
        self.ran = True
        for signum in self.signals:
            os.kill(os.getpid(), signum)
            await asyncio.sleep(0)
        async with asyncio.timeout(30):
            await stop.wait()

    def stop_now(self) -> None:
        self.stopped_now += 1

    async def close(self) -> None:
        self.closed += 1


def test_run_role_writes_the_ready_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    role = ScriptedRole({"broker": "http://127.0.0.1:1"}, signals=(signal.SIGTERM,))
    ready_file = tmp_path / "ready.json"
    run_role(role, name="broker", ready_file=ready_file)
    assert json.loads(ready_file.read_text()) == {"broker": "http://127.0.0.1:1"}
    assert role.ran and role.closed == 1
    assert role.stopped_now == 0, "one SIGTERM asked for a stop without draining"


def test_a_second_sigterm_or_a_sigint_asks_to_stop_at_once(tmp_path: Path) -> None:
    twice = ScriptedRole({}, signals=(signal.SIGTERM, signal.SIGTERM))
    run_role(twice, name="egress")
    assert twice.stopped_now == 1 and twice.closed == 1
    interrupted = ScriptedRole({}, signals=(signal.SIGINT,))
    run_role(interrupted, name="egress")
    assert interrupted.stopped_now == 1 and interrupted.closed == 1


def test_a_ferry_error_while_starting_exits_1_and_still_closes(tmp_path: Path) -> None:
    role = ScriptedRole({}, error=LocalError("the browser engine did not start"))
    ready_file = tmp_path / "ready.json"
    with pytest.raises(typer.Exit) as exit_info:
        run_role(role, name="volunteer", ready_file=ready_file)
    assert exit_info.value.exit_code == 1
    assert role.closed == 1 and not role.ran
    assert not ready_file.exists()
