"""Zero corrupt transfers through volunteers that lose, duplicate, reorder and corrupt.

Issue 3 asks for 100 transfers of 4 MiB with 5 % loss plus duplication, reordering and
corruption of relayed datagrams (Snowflake 2.5.1 delivered 4 corrupt downloads out of 30 on
these machines). Separate processes, so the two cores share the work; the volunteers' test-only
``--test-impair-*`` options inject the faults, and each volunteer reports on exit how many it
injected, which the test checks so that it cannot pass on a chain that injected nothing.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .processes import origin_server, payload, process_network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TRANSFERS = 100
SIZE = 4 * 1024 * 1024
IMPAIRMENT = (
    "--test-impair-loss", "0.05",
    "--test-impair-duplicate", "0.02",
    "--test-impair-reorder", "0.02",
    "--test-impair-corrupt", "0.02",
)  # fmt: skip


def test_one_hundred_impaired_transfers_arrive_intact(tmp_path: Path) -> None:
    body = payload(SIZE)
    expected = hashlib.sha256(body).hexdigest()
    with (
        origin_server(body) as port,
        process_network(tmp_path, volunteers=2, volunteer_arguments=IMPAIRMENT) as net,
    ):
        refused: list[int] = []

        def transfer(index: int) -> str:
            for _attempt in range(2):
                result = subprocess.run(
                    ["/usr/bin/curl", "--silent", "--show-error", "--max-time", "120",
                     "--socks5-hostname", net.proxy, f"http://127.0.0.1:{port}/t{index}"],
                    capture_output=True,
                    timeout=150,
                    check=False,
                )  # fmt: skip
                # 97: the SOCKS connection was refused before any byte flowed (under this
                # much loss a stream's reply can miss the client's 30 s wait; see issue 3's
                # note). Nothing was delivered, so nothing can be corrupt: try once more.
                if result.returncode != 97:
                    break
                refused.append(index)
            assert result.returncode == 0, result.stderr.decode() + net.logs()
            return hashlib.sha256(result.stdout).hexdigest()

        # Two at a time: aioquic sends its streams' data oldest stream first, so under heavy
        # loss a new stream's reply can wait behind older streams' bulk data; more concurrent
        # downloads than this only test that starvation (see the closing note of issue 3).
        with ThreadPoolExecutor(max_workers=2) as pool:
            digests = list(pool.map(transfer, range(TRANSFERS)))
        volunteers = list(net.volunteers)
        for volunteer in volunteers:
            volunteer.stop()
        logs = "\n".join(volunteer.log() for volunteer in volunteers)
    assert len(digests) == TRANSFERS
    assert digests.count(expected) == TRANSFERS, "zero corrupt transfers"
    assert len(refused) <= 3, f"too many stream openings refused: {refused}"
    injected: dict[str, int] = {}
    # MULTILINE: one summary line per volunteer, each ending in its last fault's count
    for fault, count in re.findall(r"(\w+) (\d+)(?:,|$)", _summaries(logs), re.MULTILINE):
        injected[fault] = injected.get(fault, 0) + int(count)
    # Thousands of faults in all; reordering needs a following datagram within its hold
    # time, so it fires far less often (86 in one run, 5,775 in another). Since issue 8 QUIC
    # datagrams are 16 KiB, so the 400 MiB cross in about 13 times fewer datagrams than at
    # 1,200 bytes: one run injected 2,456 losses (5 %), 940 duplicates, 952 corruptions.
    minimum = {"lost": 1000, "duplicated": 500, "corrupted": 500}
    for fault, least in minimum.items():
        assert injected.get(fault, 0) > least, f"too few {fault} faults injected: {injected}"
    assert injected.get("reordered", 0) > 10, f"too few reorderings injected: {injected}"


def _summaries(logs: str) -> str:
    lines = [line for line in logs.splitlines() if "faults injected into relayed" in line]
    assert lines, "the volunteers did not report the faults they injected"
    return "\n".join(line.split(": ", 2)[-1] for line in lines)
