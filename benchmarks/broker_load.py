"""Load on the broker: many volunteers long-polling, clients offering at a set rate.

Runs one broker (or, with ``--instances 2``, two brokers sharing a Redis server of its own)
as separate ``ferry broker`` processes on 127.0.0.1, then two load processes made of this
same file: one holds ``--volunteers`` long polls open (each volunteer polls, answers every
match at once and polls again; spread evenly over the instances), the other makes client
offers at ``--rate`` per second for ``--duration`` seconds (open loop, over the instances in
turn). It prints:

* idle long polls held, and each broker's resident memory (``VmRSS``) once they are;
* matches per second (offers answered, over the offering window);
* broker-side match latency p50/p95 (offer to match, from the brokers'
  ``ferry_broker_match_latency_seconds`` histograms, interpolated within buckets) and the
  client-observed offer-to-answer time p50/p95 (which adds the volunteer's answer round trip);
* resident memory again after the offering phase.

Everything stays on 127.0.0.1; RLIMIT_NOFILE is raised to its hard limit.

    python benchmarks/broker_load.py --volunteers 10000 --rate 500 --duration 20
    python benchmarks/broker_load.py --volunteers 10000 --rate 500 --duration 20 --instances 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.processes import Role, free_port  # noqa: E402
from tests.integration.redis_server import RedisServer  # noqa: E402

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
)
ANSWER = OFFER + "a=setup:active\r\n"
EGRESS = "ws://127.0.0.1:9/v1/relay"
JSON_HEADERS = {"Content-Type": "application/json"}
UNLIMITED = "1000000"


def raise_open_files() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (inherited by the processes started after)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- load processes ---------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection posting JSON: far lighter than a general client,
    so that one load process can keep up with the broker it measures."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """``(status, body)``; raises ``OSError`` or ``asyncio.IncompleteReadError``."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(
                b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s"
                % (path.encode(), self.host.encode(), self.port, len(body), body)
            )
            head = await self._reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            payload = await self._reader.readexactly(int(length.group(1)) if length else 0)
            return int(head[9:12]), payload
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


LOAD_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


async def hold_volunteers(urls: list[str], count: int, seconds: float) -> None:
    """``count`` volunteers polling (spread over ``urls``), answering each match at once."""
    counts = {"polls": 0, "matches": 0, "answered": 0, "refused": 0, "errors": 0}

    async def volunteer(number: int) -> None:
        connection = HttpConnection(urls[number % len(urls)])
        poll = json.dumps(
            {"version": 1, "volunteer_id": f"load-volunteer-{number:012d}", "capacity": 1}
        ).encode()
        while True:
            try:
                status, body = await connection.post("/v1/volunteer/poll", poll)
                counts["polls"] += 1
                if status != 200:
                    counts["refused"] += 1
                    await asyncio.sleep(1.0)
                    continue
                match = json.loads(body)["match"]
                if match is None:
                    continue
                counts["matches"] += 1
                answer = json.dumps({"version": 1, "match_id": match["id"], "answer": ANSWER})
                status, _ = await connection.post("/v1/volunteer/answer", answer.encode())
                counts["answered"] += status == 200
            except LOAD_ERRORS:
                counts["errors"] += 1
                await asyncio.sleep(1.0)

    tasks = []
    for number in range(count):  # ramp up: the listen backlog is finite
        tasks.append(asyncio.create_task(volunteer(number)))
        if number % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(counts), flush=True)


async def offer_clients(urls: list[str], rate: float, duration: float) -> None:
    """Offers at ``rate`` per second for ``duration`` seconds; prints outcomes and times."""
    outcomes = {"answered": 0, "no_volunteer": 0, "refused": 0, "errors": 0}
    kinds: dict[str, int] = {}
    times: list[float] = []
    answered_in_window = 0
    body = json.dumps({"version": 1, "offer": OFFER, "egress": EGRESS}).encode()
    idle: dict[str, list[HttpConnection]] = {url: [] for url in urls}
    start = time.monotonic()

    async def offer(url: str) -> None:
        nonlocal answered_in_window
        connection = idle[url].pop() if idle[url] else HttpConnection(url)
        started = time.monotonic()
        try:
            status, _ = await connection.post("/v1/client/offer", body)
        except LOAD_ERRORS as exc:
            outcomes["errors"] += 1
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
            return
        finished = time.monotonic()
        idle[url].append(connection)
        if status == 200:
            outcomes["answered"] += 1
            times.append(finished - started)
            answered_in_window += finished - start <= duration
        elif status == 503:
            outcomes["no_volunteer"] += 1
        else:
            outcomes["refused"] += 1

    tasks = []
    sent = 0
    while (elapsed := time.monotonic() - start) < duration:
        due = int(elapsed * rate) + 1
        while sent < due:
            tasks.append(asyncio.create_task(offer(urls[sent % len(urls)])))
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    for connections in idle.values():
        for connection in connections:
            connection.close()
    times.sort()
    print(
        json.dumps(
            {
                "sent": sent,
                **outcomes,
                "answered_in_window": answered_in_window,
                "p50": _percentile(times, 0.5),
                "p95": _percentile(times, 0.95),
                "error_kinds": kinds,
            }
        ),
        flush=True,
    )


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(fraction * len(values)))]


# --- orchestration ----------------------------------------------------------------------------


def metrics(url: str) -> str:
    """The broker's /metrics text (retried: a loaded broker may be slow to accept)."""
    for attempt in range(10):
        try:
            with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
                text: str = response.read().decode()
                return text
        except OSError:
            if attempt == 9:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def histogram(text: str) -> list[tuple[float, float]]:
    """``(upper bound, cumulative count)`` of the match-latency histogram."""
    buckets = []
    prefix = 'ferry_broker_match_latency_seconds_bucket{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            bound = line[len(prefix) :].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.split()[-1])))
    return buckets


def histogram_percentile(buckets: list[tuple[float, float]], fraction: float) -> float:
    """The ``fraction`` quantile, interpolated linearly within its bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    target = fraction * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= target:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (target - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run(arguments: argparse.Namespace) -> None:
    open_files = raise_open_files()
    folder = Path(tempfile.mkdtemp(prefix="ferry-broker-load-"))
    redis_server: RedisServer | None = None
    brokers: list[Role] = []
    loads: list[subprocess.Popen[bytes]] = []
    try:
        common = [
            "broker",
            "--egress",
            EGRESS,
            *("--poll-rate", UNLIMITED, "--poll-burst", UNLIMITED),
            *("--offer-rate", UNLIMITED, "--offer-burst", UNLIMITED),
            *("--max-held-polls", UNLIMITED, "--max-waiting-volunteers", UNLIMITED),
            *("--max-held-offers", UNLIMITED, "--max-waiting-clients", UNLIMITED),
            *("--poll-timeout", str(arguments.poll_timeout)),
        ]
        if arguments.instances > 1:
            redis_server = RedisServer(folder / "redis")
            common += ["--redis", redis_server.url]
        for index in range(arguments.instances):
            brokers.append(
                Role(
                    f"broker-{index}",
                    [*common, "--listen", f"127.0.0.1:{free_port()}"],
                    folder,
                )
            )
        urls = [broker.wait_ready()["broker"] for broker in brokers]
        print(
            f"{arguments.instances} broker instance(s){' over Redis' if redis_server else ''}, "
            f"{arguments.volunteers} volunteers, offers at {arguments.rate}/s for "
            f"{arguments.duration:g} s; poll timeout {arguments.poll_timeout:g} s; "
            f"RLIMIT_NOFILE {open_files}",
            flush=True,
        )
        me = [sys.executable, str(Path(__file__).resolve())]
        url_list = ",".join(urls)
        hold_seconds = arguments.settle + arguments.duration + 120
        loads.append(
            subprocess.Popen(
                [*me, "volunteers", url_list, str(arguments.volunteers), str(hold_seconds)],
                stdout=subprocess.PIPE,
            )
        )
        started = time.monotonic()
        held = 0.0
        while time.monotonic() - started < 180:
            held = sum(sample(metrics(url), "ferry_broker_waiting_volunteers") for url in urls)
            if held >= arguments.volunteers:
                break
            time.sleep(0.5)
        ramp = time.monotonic() - started
        time.sleep(arguments.settle)
        held = sum(sample(metrics(url), "ferry_broker_waiting_volunteers") for url in urls)
        idle_rss = [resident_mib(broker.process.pid) for broker in brokers]
        print(
            f"idle long polls held: {held:.0f} (rounded up to 8; all {arguments.volunteers} "
            f"polling after {ramp:.1f} s); broker resident memory: "
            + ", ".join(f"{rss:.0f} MiB" for rss in idle_rss),
            flush=True,
        )
        before = [histogram(metrics(url)) for url in urls]
        cpu_before = [cpu_seconds(broker.process.pid) for broker in brokers]
        redis_cpu_before = 0.0 if redis_server is None else cpu_seconds(redis_server.process.pid)
        offering_started = time.monotonic()
        clients = subprocess.Popen(
            [*me, "clients", url_list, str(arguments.rate), str(arguments.duration)],
            stdout=subprocess.PIPE,
        )
        loads.append(clients)
        out, _ = clients.communicate(timeout=arguments.duration + 120)
        result = json.loads(out.decode().strip().splitlines()[-1])
        cpu_used = sum(
            cpu_seconds(broker.process.pid) - used
            for broker, used in zip(brokers, cpu_before, strict=True)
        )
        offering_time = time.monotonic() - offering_started
        redis_cpu = (
            0.0
            if redis_server is None
            else cpu_seconds(redis_server.process.pid) - redis_cpu_before
        )
        after = [histogram(metrics(url)) for url in urls]
        busy_rss = [resident_mib(broker.process.pid) for broker in brokers]
        merged: dict[float, float] = {}
        for old, new in zip(before, after, strict=True):
            old_counts = dict(old)
            for bound, count in new:
                merged[bound] = merged.get(bound, 0.0) + count - old_counts.get(bound, 0.0)
        buckets = sorted(merged.items())
        matches = sum(count for bound, count in buckets if math.isinf(bound))
        print(
            f"offers sent {result['sent']}: answered {result['answered']}, no volunteer "
            f"{result['no_volunteer']}, refused {result['refused']}, errors {result['errors']} "
            f"{result['error_kinds'] or ''}",
            flush=True,
        )
        print(
            f"matches per second: {result['answered_in_window'] / arguments.duration:.0f} "
            f"(answers received within the {arguments.duration:g} s of offering; broker "
            f"matches in all: {matches:.0f})",
            flush=True,
        )
        print(
            "broker-side match latency: p50 "
            f"{histogram_percentile(buckets, 0.5) * 1000:.1f} ms, p95 "
            f"{histogram_percentile(buckets, 0.95) * 1000:.1f} ms; client-observed offer to "
            f"answer: p50 {result['p50'] * 1000:.1f} ms, p95 {result['p95'] * 1000:.1f} ms",
            flush=True,
        )
        print(
            f"broker CPU: {cpu_used:.1f} s over {offering_time:.1f} s of offering "
            f"({cpu_used / offering_time * 100:.0f}% of one core; "
            f"{cpu_used / max(matches, 1) * 1e6:.0f} µs per match, idle polling included); "
            + (
                f"redis-server CPU: {redis_cpu:.1f} s ({redis_cpu / offering_time * 100:.0f}% "
                f"of one core; {redis_cpu / max(matches, 1) * 1e6:.0f} µs per match); "
                if redis_server is not None
                else ""
            )
            + f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        print(
            "broker resident memory after the offers: "
            + ", ".join(f"{rss:.0f} MiB" for rss in busy_rss),
            flush=True,
        )
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
        for broker in brokers:
            broker.stop()
        if redis_server is not None:
            redis_server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("volunteers", "clients"):
        raise_open_files()
        urls = sys.argv[2].split(",")
        if sys.argv[1] == "volunteers":
            asyncio.run(hold_volunteers(urls, int(sys.argv[3]), float(sys.argv[4])))
        else:
            asyncio.run(offer_clients(urls, float(sys.argv[3]), float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volunteers", type=int, default=10_000, help="long polls to hold")
    parser.add_argument("--rate", type=float, default=500.0, help="client offers per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of offers")
    parser.add_argument("--instances", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--poll-timeout", type=float, default=10.0, help="the brokers' poll timeout (s)"
    )
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before measuring")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
