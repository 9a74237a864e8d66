"""The broker's ``GET /status`` page: its figures and a chart of the last hour, as plain HTML.

Server-rendered, no script at all (the page's Content-Security-Policy forbids scripts); the
chart is an inline SVG. Every count that could single out a person is rounded up to a
multiple of 8 (``ferry.core.network_stats.round_up_for_privacy``), like ``GET /v1/stats``.
"""

from __future__ import annotations

from html import escape

from ferry.core.broker_messages import NAT_TYPES, VOLUNTEER_KINDS
from ferry.core.matchmaking import AvailableVolunteers
from ferry.core.minute_series import MinuteSample
from ferry.core.network_stats import NetworkStats, round_up_for_privacy

_WIDTH, _HEIGHT, _PAD = 600, 160, 28

_STYLE = """
body { margin: 0; font: 15px/1.5 system-ui, sans-serif; color: #1a1a1a; background: #f6f7f9; }
main { max-width: 44rem; margin: 0 auto; padding: 1.5rem 1rem 2.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.figures { display: flex; gap: .75rem; flex-wrap: wrap; }
.figure { background: #fff; border: 1px solid #c7c7c7; border-radius: 8px; padding: .5rem .9rem; }
.figure b { display: block; font-size: 1.4rem; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #c7c7c7; padding: .25rem .6rem; text-align: right; }
svg { background: #fff; border: 1px solid #c7c7c7; border-radius: 8px; max-width: 100%; }
.note { color: #4d4d4d; font-size: .85rem; }
@media (prefers-color-scheme: dark) {
  body { color: #f2f2f2; background: #101216; } .note { color: #c9c9c9; }
  .figure, table, svg { background: #17191e; border-color: #4a4d55; }
  th, td { border-color: #4a4d55; }
}
"""


def _polyline(values: list[int], top: int, color: str) -> str:
    step = (_WIDTH - 2 * _PAD) / max(1, len(values) - 1)
    points = " ".join(
        f"{_PAD + index * step:.1f},{_HEIGHT - _PAD - value / top * (_HEIGHT - 2 * _PAD):.1f}"
        for index, value in enumerate(values)
    )
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>'


def _chart(last_hour: list[MinuteSample]) -> str:
    """An SVG of volunteers available and matches per minute over the samples (rounded)."""
    available = [round_up_for_privacy(s.volunteers_available) for s in last_hour]
    matches = [round_up_for_privacy(s.matches) for s in last_hour]
    top = max(8, *available, *matches)
    bottom = _HEIGHT - _PAD
    return (
        f'<svg role="img" aria-labelledby="chart-title" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        '<title id="chart-title">Volunteers available (blue) and clients matched per minute '
        "(orange) over the last hour</title>"
        f'<line x1="{_PAD}" y1="{bottom}" x2="{_WIDTH - _PAD}" y2="{bottom}" stroke="#888"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{bottom}" stroke="#888"/>'
        f'<text x="2" y="{_PAD + 4}" font-size="11" fill="#888">{top}</text>'
        f'<text x="2" y="{bottom + 4}" font-size="11" fill="#888">0</text>'
        f'<text x="{_PAD}" y="{_HEIGHT - 8}" font-size="11" fill="#888">−60 min</text>'
        f'<text x="{_WIDTH - _PAD - 24}" y="{_HEIGHT - 8}" font-size="11" fill="#888">now</text>'
        f"{_polyline(available, top, '#1f6feb')}{_polyline(matches, top, '#d9730d')}</svg>"
    )


def render_status_page(
    *,
    stats: NetworkStats,
    available: list[AvailableVolunteers],
    clients_waiting: int,
    last_hour: list[MinuteSample],
    shared: bool,
) -> str:
    """The whole ``/status`` page. ``stats`` is already rounded; the rest is rounded here."""
    counts = {(a.nat, a.kind): a.count for a in available}
    header = "".join(f"<th>{escape(kind)}</th>" for kind in VOLUNTEER_KINDS)
    rows = "".join(
        f"<tr><th>{escape(nat)}</th>"
        + "".join(
            f"<td>{round_up_for_privacy(counts.get((nat, kind), 0))}</td>"
            for kind in VOLUNTEER_KINDS
        )
        + "</tr>"
        for nat in NAT_TYPES
    )
    hour_offers = round_up_for_privacy(sum(s.offers for s in last_hour))
    hour_refusals = round_up_for_privacy(sum(s.refusals for s in last_hour))
    scope = (
        "this broker instance (the state is shared with other instances through Redis)"
        if shared
        else "this broker"
    )
    figures = (
        ("volunteers online", stats.volunteers_online),
        ("clients helped in the last hour", stats.clients_helped_last_hour),
        ("clients waiting now", round_up_for_privacy(clients_waiting)),
        ("client offers in the last hour", hour_offers),
        ("requests refused in the last hour", hour_refusals),
    )
    figure_html = "".join(
        f'<div class="figure"><b>{value}</b>{escape(label)}</div>' for label, value in figures
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>ferry broker status</title><style>{_STYLE}</style></head><body><main>"
        "<h1>ferry broker status</h1>"
        f'<p class="note">Figures of {escape(scope)}, rounded up to multiples of 8 so that no '
        "one volunteer or client can be watched coming and going. The page refreshes every "
        "minute.</p>"
        f'<div class="figures">{figure_html}</div>'
        "<h2>Volunteers available now, by NAT type and kind</h2>"
        f"<table><tr><th>NAT \\ kind</th>{header}</tr>{rows}</table>"
        "<h2>The last hour</h2>"
        f"{_chart(last_hour)}"
        '<p class="note">Blue: volunteers available (most seen in each minute). Orange: '
        "clients matched with a volunteer in each minute.</p>"
        "</main></body></html>"
    )
