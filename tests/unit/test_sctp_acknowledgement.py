"""The delayed-SACK patch of aiortc: pinned to the aiortc internals it relies on."""

from __future__ import annotations

import inspect

import aiortc.rtcpeerconnection as aiortc_peer_connection
import aiortc.rtcsctptransport as aiortc_sctp
import pytest
from aiortc import RTCPeerConnection

from ferry.errors import ConfigError
from ferry.transport import library_patches
from ferry.transport.sctp_acknowledgement import (
    OVERRIDDEN_METHODS,
    READ_ATTRIBUTES,
    DelayedAcknowledgementSctpTransport,
    SctpAcknowledgementPolicy,
    installed,
)
from ferry.transport.webrtc import WebRtcConfig


@pytest.fixture(autouse=True)
def _patches_installed() -> None:
    library_patches.install()


def test_installed_for_the_tested_aiortc_version() -> None:
    # a new aiortc fails here first (and in test_library_patches.py): read its
    # rtcsctptransport.py again before widening the table's range
    assert library_patches.install()["sctp-delayed-acknowledgements"]
    assert installed()
    assert aiortc_peer_connection.RTCSctpTransport is DelayedAcknowledgementSctpTransport  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", OVERRIDDEN_METHODS)
def test_aiortc_still_has_the_overridden_methods(name: str) -> None:
    assert callable(getattr(aiortc_sctp.RTCSctpTransport, name))


def test_aiortc_sends_its_sack_from_handle_data_when_needed() -> None:
    # the patch holds the SACK that aiortc's _handle_data sends after a packet's chunks,
    # and relies on _sack_needed staying set until _send_sack really sends one
    handle_data = inspect.getsource(aiortc_sctp.RTCSctpTransport._handle_data)
    assert "if self._sack_needed:" in handle_data
    assert "await self._send_sack()" in handle_data
    send_sack = inspect.getsource(aiortc_sctp.RTCSctpTransport._send_sack)
    assert "self._sack_needed = False" in send_sack
    receive_data = inspect.getsource(aiortc_sctp.RTCSctpTransport._receive_data_chunk)
    assert "self._sack_needed = True" in receive_data
    assert "_send_sack" not in inspect.getsource(aiortc_sctp.RTCSctpTransport._transmit)


async def test_a_new_association_has_the_attributes_the_patch_reads() -> None:
    peer_connection = RTCPeerConnection()
    try:
        peer_connection.createDataChannel("pin")
        sctp = peer_connection.sctp
        assert isinstance(sctp, DelayedAcknowledgementSctpTransport)
        for name in READ_ATTRIBUTES:
            assert hasattr(sctp, name), name
        assert not sctp.delaying  # aiortc's behaviour until asked
        assert sctp.delay_acknowledgements(SctpAcknowledgementPolicy())
        assert sctp.delaying
        assert sctp.delay_acknowledgements(SctpAcknowledgementPolicy(packets_per_acknowledgement=1))
        assert not sctp.delaying
    finally:
        await peer_connection.close()


@pytest.mark.parametrize(
    ("packets", "delay", "complaint"),
    [(0, 0.05, "packets_per_acknowledgement"), (2, 0.0, "maximum_delay"), (2, 0.6, "0.5")],
)
def test_bad_policy_is_refused(packets: int, delay: float, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        SctpAcknowledgementPolicy(packets_per_acknowledgement=packets, maximum_delay=delay)
    with pytest.raises(ConfigError, match=complaint):
        WebRtcConfig(sctp_packets_per_acknowledgement=packets, sctp_acknowledgement_delay=delay)


def test_default_is_every_second_packet() -> None:
    policy = WebRtcConfig().sctp_acknowledgement_policy()
    assert policy.packets_per_acknowledgement == 2
    assert policy.delays
    assert not SctpAcknowledgementPolicy(packets_per_acknowledgement=1).delays
