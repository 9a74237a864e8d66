"""Plain-words status of the client's tunnel, for the terminal (the page has its own)."""

from __future__ import annotations

from ferry.client.messages import DEFAULT_LANGUAGE, Catalogue, catalogue
from ferry.client.session import TunnelStatus
from ferry.core.nat_behaviour import NatBehaviour
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


def format_nat(behaviour: NatBehaviour) -> str:
    """``"NAT: unrestricted (mapping endpoint-independent, filtering ...)"`` (the RFC 5780
    terms, kept in English in every language)."""
    return (
        f"NAT: {behaviour.nat_class.value} (mapping {behaviour.mapping.value}, "
        f"filtering {behaviour.filtering.value})"
    )


def format_status(
    status: TunnelStatus, words: Catalogue | None = None, nat: NatBehaviour | None = None
) -> str:
    """One paragraph: connected or not, then one line per volunteer path (in ``words``'
    language; English by default), then the NAT behaviour if ``nat`` is given."""
    words = words or catalogue(DEFAULT_LANGUAGE)
    if status.connected:
        head = words.text("status.connected", age=human_duration(status.session_age))
    else:
        head = words.text("status.not_connected")
        if status.last_error:
            head += words.text("status.last_problem", detail=status.last_error)
    head += words.text(
        "status.counts", now=len(status.paths), used=status.paths_opened, lost=status.paths_lost
    )
    lines = [head]
    for path in status.paths:
        rtt = f"{path.rtt * 1000:.0f} ms" if path.rtt is not None else "? ms"
        role = "status.carrying" if path.role is PathRole.ACTIVE else "status.standing_by"
        lines.append(
            words.text(
                "status.path",
                number=path.path_id,
                role=words.text(role),
                rtt=rtt,
                down=human_bytes(path.rate_down),
                up=human_bytes(path.rate_up),
                age=human_duration(path.age),
            )
        )
    if nat is not None:
        lines.append(f"  {format_nat(nat)}")
    webrtc = status.webrtc
    stack = "status.webrtc.browser" if webrtc.stack == "browser" else "status.webrtc.python"
    lines.append(f"  {words.text(stack)}" + (f" ({webrtc.detail})" if webrtc.detail else ""))
    if webrtc.warning:
        lines.append(f"  {words.text('status.webrtc.warning')}")
    return "\n".join(lines)
