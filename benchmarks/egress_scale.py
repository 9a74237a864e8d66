"""Aggregate throughput of four clients through one egress process and through two.

Runs, one after the other in the same run, (a) one plain ``ferry egress`` process and (b)
``ferry egress --workers 2`` (two egress processes behind Debian's nginx, routed by each
client's routing key), each with a broker, Python volunteers and four ``ferry client``
processes, all separate processes on 127.0.0.1 (the helpers of
``tests/integration/test_egress_workers.py``). Four curl downloads of ``--size`` MiB start at
once through the four clients' SOCKS5 ports; the script reports the aggregate throughput, the
ratio (b)/(a), and the CPU each process used during the downloads (seconds of CPU per second
of wall time: 1.00 is one core), so that it is visible which process is the bottleneck.

    python benchmarks/egress_scale.py --size 48

With four clients the routing keys are random: how many sessions each worker got is printed
too (all four on one worker happens one time in eight).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.egress_workers import WorkerNetwork  # noqa: E402
from tests.integration.processes import origin_server, payload, start_curl  # noqa: E402

CLIENTS = 4
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid``; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / TICKS, total / TICKS


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (nginx's worker process)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def processes(net: WorkerNetwork, ready: dict[str, object]) -> dict[str, int]:
    """Name → PID of every process that carries the downloads."""
    found = {role.name: role.process.pid for role in net.roles}
    for worker in net.workers:
        found[f"egress worker {worker['number']}"] = int(worker["pid"])
    nginx = ready.get("nginx_pid")
    if isinstance(nginx, int):
        found["nginx master"] = nginx
        for n, child in enumerate(child_pids(nginx)):
            found[f"nginx worker {n + 1}"] = child
    if net.workers:
        found.pop("egress")  # the supervisor: idle while workers carry the traffic
        found["egress supervisor"] = net.egress.process.pid
    return found


def sessions_per_worker(net: WorkerNetwork) -> list[int]:
    """``ferry_egress_sessions`` of each worker."""
    counts = []
    for worker in net.workers:
        text = urllib.request.urlopen(f"{worker['admin']}/metrics", timeout=5).read().decode()
        line = next(x for x in text.splitlines() if x.startswith("ferry_egress_sessions "))
        counts.append(int(float(line.split()[1])))
    return counts


def run(folder: Path, workers: int, port: int, size: int) -> tuple[float, dict[str, float]]:
    """One configuration: (aggregate MB/s, CPU share per process; ``machine busy`` and
    ``machine others`` are the whole machine's busy cores and those not used by ferry)."""
    net = WorkerNetwork(folder, workers=workers)
    try:
        ready: dict[str, object] = {"nginx_pid": None}
        if net.workers:
            ready = json.loads((folder / "egress-state" / "workers.json").read_text())
        net.add_volunteers(4)
        proxies = []
        for n in range(CLIENTS):
            client = net.start_role(
                f"client{n + 1}",
                [
                    "client",
                    "--broker",
                    net.broker_url,
                    "--bridge",
                    net.bridge,
                    "--listen",
                    "127.0.0.1:0",
                    "--volunteers",
                    "2",
                    "--ice-address",
                    "127.0.0.1",
                ],
            )
            proxies.append(client.wait_ready(90)["proxy"])
        if net.workers:
            print(f"  sessions per worker: {sessions_per_worker(net)}")
        pids = processes(net, ready)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = machine_cpu()
        started = time.monotonic()
        outputs = [folder / f"download{n}.bin" for n in range(CLIENTS)]
        curls = [
            start_curl(proxy, f"http://127.0.0.1:{port}/size/{size}", output)
            for proxy, output in zip(proxies, outputs, strict=True)
        ]
        for curl in curls:
            _, error = curl.communicate(timeout=300)
            assert curl.returncode == 0, error.decode()
        elapsed = time.monotonic() - started
        cpu = {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
        machine_after = machine_cpu()
        cores = (machine_after[1] - machine_before[1]) / elapsed
        busy = (machine_after[0] - machine_before[0]) / elapsed
        ours = sum(cpu.values())
        cpu["machine busy"] = busy
        cpu["machine others"] = max(0.0, busy - ours)
        print(f"  {cores:.1f} cores, {busy:.2f} busy, of which ferry {ours:.2f}")
        expected = hashlib.sha256(payload(size)).hexdigest()
        for output in outputs:
            assert hashlib.sha256(output.read_bytes()).hexdigest() == expected
        return CLIENTS * size / elapsed / 1e6, cpu
    finally:
        net.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=48, help="MiB each client downloads")
    arguments = parser.parse_args()
    size = arguments.size * 1024 * 1024
    body = payload(size)
    results = {}
    with tempfile.TemporaryDirectory() as folder, origin_server(body) as port:
        for workers in (1, 2):
            print(f"{CLIENTS} clients, {workers} egress process(es):")
            results[workers] = run(Path(folder) / f"workers{workers}", workers, port, size)
            throughput, cpu = results[workers]
            print(f"  aggregate {throughput:.1f} MB/s")
            print("  CPU (cores busy; ms of CPU per MB delivered):")
            for name, share in sorted(cpu.items(), key=lambda item: -item[1]):
                print(f"  {share:5.3f}  {1000 * share / throughput:6.1f} ms/MB  {name}")
    print(f"ratio (2 processes / 1 process): {results[2][0] / results[1][0]:.2f}")
    print(f"cores on this machine: {os.cpu_count()}")


if __name__ == "__main__":
    main()
