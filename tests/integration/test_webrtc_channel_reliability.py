"""The data channel the client opens: unordered and reliable by default, 16 KiB datagrams
intact (issue 8); ``WebRtcConfig.max_retransmits`` still gives a partially reliable one."""

from __future__ import annotations

import pytest

from ferry.errors import ConfigError
from ferry.transport.webrtc import WebRtcConfig

from .webrtc_pair import connected_pair, send_intact

LOOPBACK = WebRtcConfig(host_candidate_addresses=("127.0.0.1",), open_timeout=10.0)
DATAGRAMS = 64
"""16 KiB datagrams sent in the transfer test (1 MiB, under the 1 MiB high-water mark)."""


async def test_default_channel_is_reliable_unordered_and_carries_16_kib_datagrams() -> None:
    async with connected_pair(LOOPBACK) as (client, volunteer):
        # what the volunteer sees is what the client asked for
        remote = volunteer._data_channel
        assert remote.ordered is False
        assert remote.maxRetransmits is None
        assert remote.maxPacketLifeTime is None
        await send_intact(client, volunteer, DATAGRAMS, timeout=20)


async def test_max_retransmits_setting_reaches_the_volunteer() -> None:
    config = WebRtcConfig(
        host_candidate_addresses=("127.0.0.1",), open_timeout=10.0, max_retransmits=0
    )
    async with connected_pair(config) as (_, volunteer):
        assert volunteer._data_channel.maxRetransmits == 0
        assert volunteer._data_channel.ordered is False


def test_negative_max_retransmits_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_retransmits"):
        WebRtcConfig(max_retransmits=-1)
