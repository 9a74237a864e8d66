"""The test-only relay impairment: each fault does what it says, deterministically."""

from __future__ import annotations

import asyncio

import pytest

from ferry.errors import ConfigError
from ferry.transport.datagram import MemoryDatagramChannel
from ferry.volunteer.impairment import DatagramImpairer, ImpairedSender, RelayImpairment

DATAGRAMS = [bytes([n % 256]) * (100 + n % 50) for n in range(2_000)]


def _run(impairment: RelayImpairment, stream: str = "1/to_egress") -> list[bytes]:
    impairer = DatagramImpairer(impairment, stream)
    sent: list[bytes] = []
    for index, datagram in enumerate(DATAGRAMS):
        sent += impairer.process(datagram, now=index * 0.001)
    sent += impairer.expire(now=len(DATAGRAMS) * 0.001 + 1)
    return sent


def test_no_fault_is_the_identity() -> None:
    assert not RelayImpairment().active
    assert _run(RelayImpairment()) == DATAGRAMS


def test_same_seed_same_faults_other_seed_or_stream_other_faults() -> None:
    impairment = RelayImpairment(loss=0.05, duplicate=0.05, reorder=0.05, corrupt=0.05, seed=7)
    assert _run(impairment) == _run(impairment)
    assert _run(impairment) != _run(RelayImpairment(loss=0.05, duplicate=0.05, seed=8))
    assert _run(impairment, "1/to_egress") != _run(impairment, "1/to_client")


def test_loss_drops_about_the_given_share_and_nothing_else() -> None:
    impairer = DatagramImpairer(RelayImpairment(loss=0.1, seed=1), "s")
    sent = [out for n, d in enumerate(DATAGRAMS) for out in impairer.process(d, n * 0.001)]
    assert impairer.counts.lost == len(DATAGRAMS) - len(sent)
    assert 120 <= impairer.counts.lost <= 280  # 10 % of 2,000, give or take
    survivors = iter(DATAGRAMS)
    assert all(any(out == d for d in survivors) for out in sent), "order and content are kept"


def test_duplicate_sends_the_same_datagram_twice_in_a_row() -> None:
    impairer = DatagramImpairer(RelayImpairment(duplicate=0.1, seed=2), "s")
    doubled = 0
    for n, datagram in enumerate(DATAGRAMS):
        out = impairer.process(datagram, n * 0.001)
        assert out in ([datagram], [datagram, datagram])
        doubled += len(out) == 2
    assert doubled == impairer.counts.duplicated > 100


def test_corrupt_flips_exactly_one_bit() -> None:
    impairer = DatagramImpairer(RelayImpairment(corrupt=0.2, seed=3), "s")
    altered = 0
    for n, datagram in enumerate(DATAGRAMS):
        [out] = impairer.process(datagram, n * 0.001)
        flipped = sum(bin(a ^ b).count("1") for a, b in zip(out, datagram, strict=True))
        assert flipped in (0, 1)
        altered += flipped
    assert altered == impairer.counts.corrupted > 200


def test_reorder_sends_a_held_datagram_after_the_next_one() -> None:
    impairer = DatagramImpairer(RelayImpairment(reorder=1.0, reorder_hold=10.0), "s")
    a, b, c, d = b"a", b"b", b"c", b"d"
    assert impairer.process(a, 0.0) == []
    assert impairer.next_deadline() == 10.0
    assert impairer.process(b, 0.1) == [b, a]
    assert impairer.process(c, 0.2) == []
    assert impairer.expire(5.0) == []
    assert impairer.expire(10.2) == [c], "a held datagram is sent late, not lost"
    assert impairer.next_deadline() is None
    assert impairer.process(d, 11.0) == []
    assert impairer.counts.reordered == 3


def test_every_fault_at_once_keeps_every_surviving_datagram_recognisable() -> None:
    impairment = RelayImpairment(loss=0.05, duplicate=0.05, reorder=0.05, corrupt=0.05, seed=9)
    impairer = DatagramImpairer(impairment, "s")
    sent: list[bytes] = []
    for n, datagram in enumerate(DATAGRAMS):
        sent += impairer.process(datagram, n * 0.001)
    sent += impairer.expire(100.0)
    counts = impairer.counts
    assert min(counts.lost, counts.duplicated, counts.reordered, counts.corrupted) > 50
    assert len(sent) == len(DATAGRAMS) - counts.lost + counts.duplicated
    originals = set(DATAGRAMS)
    intact = sum(1 for out in sent if out in originals)
    assert intact == len(sent) - counts.corrupted - _duplicated_corrupt(impairment)


def _duplicated_corrupt(impairment: RelayImpairment) -> int:
    """Corrupted datagrams that were also duplicated (both copies carry the flip)."""
    impairer = DatagramImpairer(impairment, "s")
    both = 0
    for n, datagram in enumerate(DATAGRAMS):
        before = (impairer.counts.corrupted, impairer.counts.duplicated)
        impairer.process(datagram, n * 0.001)
        after = (impairer.counts.corrupted, impairer.counts.duplicated)
        both += after[0] > before[0] and after[1] > before[1]
    return both


@pytest.mark.parametrize(
    ("changes", "word"),
    [({"loss": 1.5}, "loss"), ({"corrupt": -0.1}, "corrupt"), ({"reorder_hold": 0.0}, "hold")],
)
def test_bad_settings_are_refused(changes: dict[str, float], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        RelayImpairment(**changes)  # type: ignore[arg-type]


async def test_impaired_sender_releases_a_held_datagram_on_its_timer() -> None:
    left, right = MemoryDatagramChannel.pair()
    received: list[bytes] = []
    arrived = asyncio.Event()

    def on_datagram(datagram: bytes) -> None:
        received.append(datagram)
        arrived.set()

    right.start(on_datagram, lambda: None)
    faults: list[str] = []
    sender = ImpairedSender(
        left.send, RelayImpairment(reorder=1.0, reorder_hold=0.01), "s", on_fault=faults.append
    )
    try:
        assert sender.send(b"held back")
        assert received == []
        async with asyncio.timeout(10):
            await arrived.wait()
        assert received == [b"held back"]
        assert faults == ["reordered"]
    finally:
        sender.close()
        await left.close()
