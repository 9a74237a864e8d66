"""Three egress processes behind Debian's nginx (``ferry egress --workers 3``): every path of a
session reaches the one process that holds it, and a process that dies (SIGKILL) or drains
(SIGTERM) takes only its own clients away, who reconnect through a live one.

Six clients (in this process, each with two volunteer paths and a spare over five Python
volunteer processes) carry routing keys that nginx was seen to send two to each worker, so
that "each process carried some" is known before the test starts rather than left to chance.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from ferry.errors import FerryError

from .egress_workers import RoutedClient, WorkerNetwork, keys_per_worker, sha256, worker_metrics
from .processes import ferry_command, origin_server, payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SIZE = 2 * 1024 * 1024
SLOW_SIZE = 6 * 1024 * 1024


async def _download_checked(client: RoutedClient, port: int, size: int) -> str:
    return sha256(await client.download(port, size))


async def _retry_until_intact(
    client: RoutedClient, port: int, size: int, deadline: float
) -> tuple[int, float]:
    """Download until the body is intact; (attempts, seconds) it took."""
    started = time.monotonic()
    expected = sha256(payload(size))
    for attempt in range(1, 30):
        assert time.monotonic() < deadline, "no intact download within the bound"
        try:
            if await _download_checked(client, port, size) == expected:
                return attempt, time.monotonic() - started
        except (FerryError, AssertionError, TimeoutError) as exc:
            print(f"attempt {attempt}: {type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.5)
    raise AssertionError("30 attempts, none intact")


async def test_three_workers_behind_nginx_keep_sessions_whole_and_survive_a_kill(
    tmp_path: Path,
) -> None:
    net = WorkerNetwork(tmp_path, workers=3, egress_arguments=("--drain-seconds", "2"))
    clients: list[RoutedClient] = []
    body = payload(SLOW_SIZE)
    try:
        net.add_volunteers(5)
        with origin_server(body) as port, origin_server(body, rate=1.2e6) as slow_port:
            async with aiohttp.ClientSession() as http:
                # One identity, created once, owner-only; every worker serves its bridge line.
                state_dir = tmp_path / "egress-state"
                assert (state_dir / "egress-key.pem").stat().st_mode & 0o777 == 0o600
                assert (state_dir / "bridge-line").read_text().strip() == net.bridge
                keys = await keys_per_worker(http, net, per_worker=2)
                owner = {key: n for n, found in enumerate(keys) for key in found}
                clients = [RoutedClient(net, key) for key in owner]
                homes = [owner[client.tunnel.pool.route_key] for client in clients]
                await asyncio.gather(*(client.start() for client in clients))

                # Six downloads at once, every one intact.
                digests = await asyncio.gather(
                    *(_download_checked(client, port, SIZE) for client in clients)
                )
                assert digests == [sha256(body[:SIZE])] * 6, net.logs()

                # Every session on exactly one process, two on each: no datagram of a session
                # reached a process that does not hold it.
                metrics = [await worker_metrics(http, w["admin"]) for w in net.workers]
                assert [m["ferry_egress_sessions"] for m in metrics] == [2.0, 2.0, 2.0]
                assert [m["ferry_egress_sessions_created_total"] for m in metrics] == [2.0] * 3
                unknown = 'ferry_egress_datagrams_dropped_total{reason="unknown_connection"}'
                assert [m.get(unknown, 0.0) for m in metrics] == [0.0] * 3
                assert all(m["ferry_egress_relays"] >= 4 for m in metrics), metrics

                # SIGKILL worker 1 while all six download slowly.
                downloads = [
                    asyncio.create_task(_download_checked(client, slow_port, SLOW_SIZE))
                    for client in clients
                ]
                await asyncio.sleep(2.0)
                assert not any(task.done() for task in downloads)
                victim = int(net.workers[0]["pid"])
                os.kill(victim, signal.SIGKILL)
                killed_at = time.monotonic()
                results = await asyncio.gather(*downloads, return_exceptions=True)
                expected = sha256(body)
                for home, result in zip(homes, results, strict=True):
                    if home != 0:
                        assert result == expected, f"{result!r}\n{net.logs()}"
                    else:  # the victim's clients: a reset, not a hang (gather returned)
                        assert result != expected
                print("the victim's downloads ended in", f"{time.monotonic() - killed_at:.1f} s")

                # The victim's clients reconnect (new session, new key) and download intact.
                victims = [c for c, home in zip(clients, homes, strict=True) if home == 0]
                recovered = await asyncio.gather(
                    *(_retry_until_intact(c, port, SIZE, killed_at + 90) for c in victims)
                )
                print(
                    "after the kill, intact again in",
                    [f"{time.monotonic() - killed_at:.1f} s ({n} tries)" for n, _ in recovered],
                )
                assert all(c.tunnel.pool.route_key not in owner for c in victims)
                state = json.loads((tmp_path / "egress-state" / "workers.json").read_text())
                assert state["workers"][0]["restarts"] == 1
                assert state["workers"][0]["pid"] != victim

                # SIGTERM drains worker 2 (--drain-seconds 2): its clients move to a new key
                # and a live process, the others carry on.
                drained = [c for c, home in zip(clients, homes, strict=True) if home == 1]
                others = [c for c, home in zip(clients, homes, strict=True) if home == 2]
                os.kill(int(state["workers"][1]["pid"]), signal.SIGTERM)
                drained_at = time.monotonic()
                moved = await asyncio.gather(
                    *(_retry_until_intact(c, port, SIZE, drained_at + 60) for c in drained),
                    *(_download_checked(c, port, SIZE) for c in others),
                )
                assert moved[len(drained) :] == [sha256(body[:SIZE])] * len(others)
                assert all(c.tunnel.pool.route_key not in owner for c in drained)
                assert all(c.tunnel.pool.route_key in owner for c in others)
                print(
                    "after the drain, intact again in",
                    [f"{seconds:.1f} s ({n} tries)" for n, seconds in moved[: len(drained)]],
                )
    finally:
        for client in clients:
            await client.close()
        net.close()


def test_a_bad_worker_count_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ferry_command(), "egress", "--workers", "0", "--state-dir", str(tmp_path / "s")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert "--workers must be between 1 and 256 (or auto)" in output
    assert "Traceback" not in output
