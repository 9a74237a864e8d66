"""The client's status says which WebRTC stack carries its paths, and warns about aiortc."""

from __future__ import annotations

from ferry.client.messages import catalogue
from ferry.client.session import TunnelStatus
from ferry.client.status import format_status
from ferry.transport.webrtc import PYTHON_STACK_WARNING, WebRtcStackStatus


def _status(webrtc: WebRtcStackStatus) -> TunnelStatus:
    return TunnelStatus(False, 0.0, (), 0, 0, 0, "", webrtc=webrtc)


def test_the_browser_engine_is_named_without_a_warning() -> None:
    text = format_status(_status(WebRtcStackStatus("browser", "/usr/bin/chromium")))
    assert "WebRTC: browser engine (/usr/bin/chromium)" in text
    assert "warning" not in text


def test_the_python_stack_comes_with_a_plain_warning() -> None:
    status = WebRtcStackStatus(
        "python", "aiortc: no Chromium or Chrome found", PYTHON_STACK_WARNING
    )
    text = format_status(_status(status))
    assert "WebRTC: Python stack (aiortc: no Chromium or Chrome found)" in text
    assert "warning: the Python WebRTC stack is easier for a censor to spot" in text
    persian = format_status(_status(status), catalogue("fa"))
    assert "هشدار" in persian and "WebRTC" in persian
    assert "spot" in PYTHON_STACK_WARNING and "censor" in PYTHON_STACK_WARNING


def test_a_status_made_without_the_field_says_python() -> None:
    assert TunnelStatus(False, 0.0, (), 0, 0, 0, "").webrtc.stack == "python"
