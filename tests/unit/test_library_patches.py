"""The one table of reaches into aiortc, aioice, aioquic and pyOpenSSL, and its version gate.

The gate is shown with other versions through its input (``enabled(name, version)``,
``install(versions)``), never by installing another library; what an out-of-range install
leaves untouched is checked in a fresh interpreter, where nothing has been patched yet.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import aioice.ice
import aiortc.rtcdtlstransport as aiortc_dtls
import aiortc.rtcpeerconnection as aiortc_peer_connection
import aiortc.rtcsctptransport as aiortc_sctp
import pytest
from aioquic.quic import recovery as aioquic_recovery
from aioquic.quic.connection import QuicConnection
from OpenSSL import SSL

from ferry.transport import library_patches
from ferry.transport.library_patches import PATCHES, LibraryPatch, enabled, version_in_range
from ferry.transport.quic import (
    FlowControlledConnection,
    QuicSettings,
    peer_certificate_fingerprint,
)
from ferry.transport.sctp_acknowledgement import DelayedAcknowledgementSctpTransport
from ferry.transport.webrtc import OfferingPeer, WebRtcConfig


@pytest.mark.parametrize("patch", PATCHES, ids=lambda patch: patch.name)
def test_the_installed_version_is_inside_every_entrys_range(patch: LibraryPatch) -> None:
    # fails when a library is upgraded past what its patches were read against: read the
    # code the entry names in the new version, widen the range, update constraints.txt
    version = library_patches.installed_version(patch.library)
    assert version_in_range(patch, version), (
        f"{patch.library} {version} is outside {patch.minimum}..<{patch.below} ({patch.name})"
    )


def test_constraints_pin_the_installed_version_of_every_library_in_the_table() -> None:
    from pathlib import Path

    lines = (Path(__file__).parents[2] / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in (line.strip() for line in lines) if "==" in line)
    for library in {patch.library for patch in PATCHES}:
        assert pins.get(library) == library_patches.installed_version(library), library
        assert all(version_in_range(p, pins[library]) for p in PATCHES if p.library == library)


def test_every_entry_says_what_it_touches_and_why() -> None:
    names = [patch.name for patch in PATCHES]
    assert len(names) == len(set(names))
    for patch in PATCHES:
        assert patch.symbol and patch.why and patch.minimum and patch.below
        assert version_in_range(patch, patch.minimum)
        assert not version_in_range(patch, patch.below)


@pytest.mark.parametrize(
    ("version", "inside"),
    [
        ("1.16.0", True),
        ("1.16.9", True),
        ("1.16.1rc1", True),
        ("1.15.9", False),
        ("1.17.0", False),
        ("2.0", False),
        ("", False),
        (None, False),
        ("garbage", False),
    ],
)
def test_version_in_range(version: str | None, inside: bool) -> None:
    patch = LibraryPatch("x", "aiortc", "1.16.0", "1.17", "symbol", "why")
    assert version_in_range(patch, version) is inside


def test_a_patch_outside_its_versions_stays_off_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ferry.transport.library_patches")
    assert not enabled("stun-request-order", "0.14.0")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "aioice 0.14.0" in warnings[0] and "'stun-request-order'" in warnings[0]
    assert "stays off" in warnings[0]
    assert enabled("stun-request-order", "0.13.0")


def test_install_with_other_versions_applies_nothing_and_warns_once_per_entry() -> None:
    # a fresh interpreter: nothing of ferry's is patched yet
    script = textwrap.dedent(
        """
        import logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        import aioice.ice, aiortc.rtcdtlstransport as dtls
        import aiortc.rtcpeerconnection as pc, aiortc.rtcsctptransport as sctp
        original = (pc.RTCSctpTransport, aioice.ice.get_host_addresses,
                    aioice.ice.Connection.build_request, sctp.USERDATA_MAX_LENGTH,
                    [p.openssl_profile for p in dtls.SRTP_PROFILES])
        from ferry.transport import library_patches
        other = {"aiortc": "1.17.0", "aioice": "0.12.0", "aioquic": "2.0", "pyopenssl": "1"}
        assert not any(library_patches.install(other).values())
        assert not any(library_patches.install(other).values())
        after = (pc.RTCSctpTransport, aioice.ice.get_host_addresses,
                 aioice.ice.Connection.build_request, sctp.USERDATA_MAX_LENGTH,
                 [p.openssl_profile for p in dtls.SRTP_PROFILES])
        assert after == original, (after, original)
        print("UNTOUCHED", sctp.USERDATA_MAX_LENGTH)
        assert all(library_patches.install().values())
        assert pc.RTCSctpTransport is not original[0]
        assert sctp.USERDATA_MAX_LENGTH == library_patches.SCTP_MAX_USER_DATA
        print("INSTALLED")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "UNTOUCHED 1160" in lines  # aiortc's own chunk size
    assert lines[-1] == "INSTALLED"
    stays_off = [line for line in lines if "stays off" in line]
    for name in (
        "sctp-delayed-acknowledgements",
        "sctp-max-user-data",
        "srtp-profile-order",
        "host-addresses",
        "stun-request-order",
    ):
        # one warning per entry and per install() call given other versions
        assert sum(f"'{name}'" in line for line in stays_off) == 2, name


def test_install_is_idempotent_and_wraps_once() -> None:
    first = library_patches.install()
    wrapper = aioice.ice.get_host_addresses
    build_request = aioice.ice.Connection.build_request
    order = [profile.openssl_profile for profile in aiortc_dtls.SRTP_PROFILES]
    assert library_patches.install() == first
    assert all(first.values())
    assert aioice.ice.get_host_addresses is wrapper
    assert aioice.ice.Connection.build_request is build_request
    assert [profile.openssl_profile for profile in aiortc_dtls.SRTP_PROFILES] == order
    assert order == list(library_patches.CHROMIUM_SRTP_PROFILE_ORDER)
    assert aiortc_peer_connection.RTCSctpTransport is DelayedAcknowledgementSctpTransport  # type: ignore[attr-defined]


async def test_two_webrtc_configs_in_one_process_do_not_change_each_others_sctp_chunk() -> None:
    # the SCTP chunk size is one process-wide constant set by install(), not a config value
    # (aiortc reads its module global at use time; see library_patches.SCTP_MAX_USER_DATA)
    assert "sctp_max_user_data" not in WebRtcConfig.__dataclass_fields__
    small = WebRtcConfig(
        host_candidate_addresses=("127.0.0.1",), sctp_packets_per_acknowledgement=1
    )
    large = WebRtcConfig(host_candidate_addresses=("127.0.0.1",), socket_buffer_bytes=0)
    peers = [OfferingPeer(small), OfferingPeer(large)]
    try:
        for peer in peers:
            await peer.create_offer()
            assert aiortc_sctp.USERDATA_MAX_LENGTH == library_patches.SCTP_MAX_USER_DATA
    finally:
        for peer in peers:
            await peer.close()
    assert aiortc_sctp.USERDATA_MAX_LENGTH == library_patches.SCTP_MAX_USER_DATA


def _connection(settings: QuicSettings) -> FlowControlledConnection:
    return settings.new_connection(settings.configuration(is_client=True))


def test_loss_thresholds_are_per_connection_and_leave_the_module_as_it_was() -> None:
    seen: list[tuple[int, float]] = []

    def spy(*, now: float, space: object) -> None:  # stands in for aioquic's _detect_loss
        seen.append((aioquic_recovery.K_PACKET_THRESHOLD, aioquic_recovery.K_TIME_THRESHOLD))

    defaults = (aioquic_recovery.K_PACKET_THRESHOLD, aioquic_recovery.K_TIME_THRESHOLD)
    one, two = _connection(QuicSettings()), _connection(QuicSettings())
    for connection in (one, two):
        connection._loss._detect_loss = spy  # type: ignore[method-assign]
    assert library_patches.use_loss_thresholds(one, 7, 1.5)
    assert library_patches.use_loss_thresholds(two, 20, 3.0)
    one._loss._detect_loss(now=0.0, space=None)  # type: ignore[arg-type]
    two._loss._detect_loss(now=0.0, space=None)  # type: ignore[arg-type]
    one._loss._detect_loss(now=0.0, space=None)  # type: ignore[arg-type]
    assert seen == [(7, 1.5), (20, 3.0), (7, 1.5)]
    assert defaults == (aioquic_recovery.K_PACKET_THRESHOLD, aioquic_recovery.K_TIME_THRESHOLD)


def test_aioquic_still_reads_its_loss_thresholds_in_detect_loss() -> None:
    import inspect

    source = inspect.getsource(aioquic_recovery.QuicPacketRecovery._detect_loss)
    assert "K_PACKET_THRESHOLD" in source and "K_TIME_THRESHOLD" in source
    assert "async def" not in source  # swapped around a synchronous call only
    assert isinstance(_connection(QuicSettings())._loss, aioquic_recovery.QuicPacketRecovery)


def test_aioquic_still_looks_its_ping_delivery_handler_up_when_it_writes_a_ping() -> None:
    import inspect

    source = inspect.getsource(QuicConnection._write_ping_frame)
    assert "handler=self._on_ping_delivery" in source  # so a per-connection wrapper is used
    delivery = inspect.getsource(QuicConnection._on_ping_delivery)
    assert "self._ping_pending.extend(uids)" in delivery  # what the wrapper keeps from probes


def test_private_reads_fall_back_safely_outside_their_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = _connection(QuicSettings())
    monkeypatch.setattr(library_patches, "_decisions", {})
    monkeypatch.setattr(library_patches, "installed_version", lambda library: "99.0")
    assert peer_certificate_fingerprint(connection) is None  # so a pin fails, never passes
    assert library_patches.quic_send_buffer_size(connection, 0) == 0
    assert library_patches.quic_kept_stream_ids(connection) is None
    first = library_patches.quic_accepted_packet_marker(connection)
    assert library_patches.quic_accepted_packet_marker(connection) != first
    assert not library_patches.use_loss_thresholds(connection, 7, 1.5)
    assert not library_patches.keep_lost_probes_lost(connection, lambda uid: True)
    connection.send_ping(1)
    assert not library_patches.withdraw_unsent_ping(connection, 1)  # nothing read when off
    assert not _connection(QuicSettings()).flow_control
    assert library_patches.align_dtls_context(_dtls_context()) == ["all (aiortc version)"]


def test_private_reads_work_inside_their_versions() -> None:
    connection = _connection(QuicSettings())
    assert connection.flow_control
    assert library_patches.quic_kept_stream_ids(connection) == set()
    assert library_patches.quic_accepted_packet_marker(
        connection
    ) == library_patches.quic_accepted_packet_marker(connection)
    assert library_patches.align_dtls_context(_dtls_context()) == []


def _dtls_context() -> SSL.Context:
    certificate = aiortc_dtls.RTCCertificate.generateCertificate()
    return certificate._create_ssl_context(list(aiortc_dtls.SRTP_PROFILES))


async def test_the_peer_certificate_read_is_gated_after_a_real_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .test_quic_transport import Pair

    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    assert peer_certificate_fingerprint(pair.client.connection) == pair.identity.fingerprint
    monkeypatch.setattr(library_patches, "_decisions", {})
    monkeypatch.setattr(library_patches, "installed_version", lambda library: "1.8.0")
    assert peer_certificate_fingerprint(pair.client.connection) is None
    pair.client.close("done")
