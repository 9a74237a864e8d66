"""Plain-words status of the client's tunnel, for the terminal (and later the local page)."""

from __future__ import annotations

from ferry.client.session import TunnelStatus
from ferry.core.path_policy import PathRole


def human_bytes(count: float) -> str:
    """``1234567`` → ``"1.2 MB"`` (powers of 1000, as network speeds are written)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover - the loop always returns


def human_duration(seconds: float) -> str:
    """``125`` → ``"2m05s"``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_status(status: TunnelStatus) -> str:
    """One paragraph: connected or not, then one line per volunteer path."""
    if status.connected:
        head = f"connected for {human_duration(status.session_age)}"
    else:
        head = "not connected"
        if status.last_error:
            head += f" (last problem: {status.last_error})"
    head += (
        f"; {len(status.paths)} volunteer(s) now, {status.paths_opened} used and "
        f"{status.paths_lost} lost since start"
    )
    lines = [head]
    for path in status.paths:
        rtt = f"{path.rtt * 1000:.0f} ms" if path.rtt is not None else "? ms"
        role = "carrying" if path.role is PathRole.ACTIVE else "standing by"
        lines.append(
            f"  volunteer #{path.path_id}: {role}, delay {rtt}, "
            f"down {human_bytes(path.rate_down)}/s, up {human_bytes(path.rate_up)}/s, "
            f"for {human_duration(path.age)}"
        )
    webrtc = status.webrtc
    lines.append(
        f"  WebRTC: {'browser engine' if webrtc.stack == 'browser' else 'Python'}"
        + (f" ({webrtc.detail})" if webrtc.detail else "")
    )
    if webrtc.warning:
        lines.append(f"  warning: {webrtc.warning}")
    return "\n".join(lines)
