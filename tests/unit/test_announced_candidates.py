"""What a Python peer announces in its SDP (issue 15, item 7; ``docs/architecture.md``,
"What a peer announces"): on real aiortc SDP text, with synthetic candidate lines added."""

from __future__ import annotations

from ferry.transport.webrtc import announced_candidates

AIORTC_OFFER = (
    "v=0\r\no=- 4005383132 4005383132 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\nm=application 59786 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "c=IN IP4 192.168.1.23\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
    "{candidates}"
    "a=end-of-candidates\r\na=ice-ufrag:NRNF\r\na=ice-pwd:JVx0A0GiHFJAt4mjSa7IMX\r\n"
    "a=fingerprint:sha-256 6A:A0:8D:E4:08:70:E5:AB:EB:26:E9:29:94:C3:27:BF:68:7D:CC:A4:CC:0A:"
    "C9:DE:94:40:5D:88:E9:13:09:3B\r\na=setup:actpass\r\n"
)
"""An offer as aiortc writes it (``OfferingPeer`` with ``browser_like_sdp=False``), its
candidate lines replaced by ``{candidates}``."""

HOSTS = (
    "a=candidate:1 1 udp 2130706431 192.168.1.23 59786 typ host\r\n"
    "a=candidate:2 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
    "a=candidate:3 1 udp 2130706431 10.8.0.2 40001 typ host\r\n"
    "a=candidate:4 1 udp 2130706431 2001:db8:1:2:a00:27ff:fe4e:66a1 40002 typ host\r\n"
    "a=candidate:5 1 udp 2130706431 fe80::a00:27ff:fe4e:66a1 40003 typ host\r\n"
    "a=candidate:6 1 udp 2130706431 fd00::5 40004 typ host\r\n"
    "a=candidate:7 1 udp 2130706431 100.64.1.1 40005 typ host\r\n"
    "a=candidate:8 1 udp 2130706431 203.0.113.9 40006 typ host\r\n"
)
SRFLX = (
    "a=candidate:9 1 udp 1694498815 198.51.100.7 61000 typ srflx raddr 192.168.1.23 rport 59786\r\n"
)
RELAY = "a=candidate:10 1 udp 16777215 192.0.2.50 3478 typ relay raddr 192.168.1.23 rport 59786\r\n"


def _candidates(sdp: str) -> list[str]:
    return [line.split(" ")[4] for line in sdp.split("\r\n") if line.startswith("a=candidate:")]


def test_with_a_srflx_candidate_the_client_announces_only_public_ipv4() -> None:
    sdp = announced_candidates(
        AIORTC_OFFER.format(candidates=HOSTS + SRFLX), keep_public_ipv6_hosts=False
    )
    assert _candidates(sdp) == ["203.0.113.9", "198.51.100.7"]
    assert "192.168.1.23" not in sdp  # not in raddr, nor in c=
    assert "raddr 0.0.0.0 rport 0" in sdp
    assert "c=IN IP4 203.0.113.9\r\n" in sdp
    assert "m=application 40006 UDP/DTLS/SCTP webrtc-datachannel\r\n" in sdp


def test_a_relay_candidate_is_enough_and_the_answer_keeps_public_ipv6() -> None:
    sdp = announced_candidates(
        AIORTC_OFFER.format(candidates=HOSTS + RELAY), keep_public_ipv6_hosts=True
    )
    assert _candidates(sdp) == ["2001:db8:1:2:a00:27ff:fe4e:66a1", "203.0.113.9", "192.0.2.50"]
    assert "c=IN IP6 2001:db8:1:2:a00:27ff:fe4e:66a1\r\n" in sdp


def test_without_srflx_or_relay_the_host_candidates_are_all_there_is() -> None:
    offer = AIORTC_OFFER.format(candidates=HOSTS)
    assert announced_candidates(offer, keep_public_ipv6_hosts=False) == offer


def test_the_rest_of_the_sdp_is_untouched() -> None:
    offer = AIORTC_OFFER.format(candidates=HOSTS + SRFLX)
    sdp = announced_candidates(offer, keep_public_ipv6_hosts=False)
    kept = [
        line for line in offer.split("\r\n") if not line.startswith(("a=candidate", "c=", "m="))
    ]
    assert [
        line for line in sdp.split("\r\n") if not line.startswith(("a=candidate", "c=", "m="))
    ] == kept
