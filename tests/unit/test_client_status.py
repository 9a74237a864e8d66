"""ferry.client.status: the terminal status paragraph."""

from __future__ import annotations

from ferry.client.messages import catalogue
from ferry.client.session import TunnelStatus
from ferry.client.status import format_status, human_bytes, human_duration
from ferry.core.path_policy import PathRole, PathStatus


def test_human_units() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_234_567) == "1.2 MB"
    assert human_duration(5) == "5s"
    assert human_duration(125) == "2m05s"
    assert human_duration(7260) == "2h01m"


def test_status_names_each_volunteer_with_rate_delay_and_age() -> None:
    status = TunnelStatus(
        connected=True,
        session_age=65.0,
        paths=(
            PathStatus(1, PathRole.ACTIVE, 30.0, 0.004, 40_000.0, 2_000_000.0, 10, 20),
            PathStatus(2, PathRole.SPARE, 3.0, None, 0.0, 0.0, 0, 0),
        ),
        sessions_started=1,
        paths_opened=2,
        paths_lost=0,
        last_error="",
    )
    text = format_status(status)
    assert text.splitlines()[0].startswith("connected for 1m05s; 2 volunteer(s) now")
    assert "volunteer #1: carrying, delay 4 ms, down 2.0 MB/s, up 40.0 kB/s, for 30s" in text
    assert "volunteer #2: standing by, delay ? ms" in text


def test_not_connected_says_why() -> None:
    status = TunnelStatus(False, 0.0, (), 0, 0, 0, "no volunteer was reachable within 20 s")
    assert format_status(status).startswith(
        "not connected (last problem: no volunteer was reachable within 20 s)"
    )


def test_status_in_another_language() -> None:
    status = TunnelStatus(
        connected=True,
        session_age=65.0,
        paths=(PathStatus(1, PathRole.ACTIVE, 30.0, 0.004, 40_000.0, 2_000_000.0, 10, 20),),
        sessions_started=1,
        paths_opened=1,
        paths_lost=0,
        last_error="",
    )
    text = format_status(status, catalogue("zh_CN"))
    assert text.splitlines() == [
        "已连接 1m05s；当前志愿者 1 个，启动以来使用 1 个、失去 0 个",
        "  志愿者 #1：承载中，延迟 4 ms，下载 2.0 MB/s，上传 40.0 kB/s，已持续 30s",
        "  WebRTC：Python 实现",
    ]
