"""The widget's limits (data-max-rate, data-quota) and its totals line, in real Chromium.

The limiter is the one of ``ferry.core.volunteer_limits``, pinned for both implementations by
``tests/vectors/volunteer_limits.json`` (docs/architecture.md, "Volunteer limits").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from playwright.async_api import Page

from ferry.core.volunteer_limits import parse_byte_count
from ferry.errors import ConfigError

from ..integration.chain import Origin, run_curl
from .support import WidgetNetwork, chromium, wait_for_widget, widget_status

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOT = Path(__file__).parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "volunteer_limits.json").read_text("utf-8"))
ODD_BYTE_COUNTS = [
    "1\u212a",  # KELVIN SIGN: Python's re.IGNORECASE takes it for "k"
    "1k\u0130",
    "1k\u0131",
    "\x1c5\x1f",
    "5\u3000",
    "\ufeff5",
    "1\u00a0MiB",
    "\uff11",  # FULLWIDTH DIGIT ONE: not [0-9]
    "00000000000000000001",
    "000000000000000000001",
    "8796093022208Ki",
    "8796093022207Ki",
]

RUN_VECTORS = """(vectors) => {
  const { VolunteerLimits, parseByteCount, LimitsError } =
    customElements.get('ferry-widget').limits;
  const cases = vectors.cases.map((c) => {
    const limits = new VolunteerLimits(c.config);
    const got = c.steps.map((s) => {
      switch (s.op) {
        case 'admit': return limits.admit(s.size, s.now);
        case 'quota_exhausted': return limits.quotaExhausted(s.now);
        case 'quota_used': return limits.quotaUsed(s.now);
        case 'next_poll_delay': return limits.nextPollDelay(s.now);
        case 'can_take_client': return limits.canTakeClient(s.active, s.now);
        case 'free_capacity': return limits.freeCapacity(s.active);
        default: return `unknown op ${s.op}`;
      }
    });
    return { bucket_size: limits.bucketSize, steps: got };
  });
  const refused = vectors.invalid_configs.map((v) => {
    try { new VolunteerLimits(v.config); return null; }
    catch (e) { return e instanceof LimitsError ? e.field : `crashed: ${e}`; }
  });
  const parse = (text) => {
    try { return parseByteCount(text, 'data-quota'); }
    catch (e) {
      return e instanceof LimitsError && e.field === 'data-quota' ? null : `crashed: ${e}`;
    }
  };
  return { cases, refused, counts: vectors.texts.map(parse) };
}"""


async def _open(page: Page, url: str) -> None:
    await page.goto(url)
    await wait_for_widget(page, "true")


async def test_the_widget_limiter_gives_the_python_answers_for_every_vector() -> None:
    texts = [v["text"] for v in VECTORS["byte_counts"]] + VECTORS["bad_byte_counts"]
    texts += ODD_BYTE_COUNTS
    expected_counts: list[int | None] = []
    for text in texts:
        try:
            expected_counts.append(parse_byte_count(text))
        except ConfigError:
            expected_counts.append(None)
    assert expected_counts[: len(VECTORS["byte_counts"])] == [
        v["bytes"] for v in VECTORS["byte_counts"]
    ]
    assert any(count is None for count in expected_counts)
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await _open(page, net.page_url())
        got = await page.evaluate(RUN_VECTORS, {**VECTORS, "texts": texts})
    mismatches: list[tuple[object, ...]] = []
    for case, result in zip(VECTORS["cases"], got["cases"], strict=True):
        if result["bucket_size"] != case["bucket_size"]:
            mismatches.append((case["name"], "bucket_size", case["bucket_size"], result))
        for index, (step, answer) in enumerate(zip(case["steps"], result["steps"], strict=True)):
            # exact: the vectors' numbers are exact in IEEE-754 doubles on both sides
            expect = step["expect"]
            if answer != expect or isinstance(answer, bool) != isinstance(expect, bool):
                mismatches.append((case["name"], index, step, answer))
    assert mismatches == []
    assert sum(len(case["steps"]) for case in got["cases"]) >= 60
    assert got["refused"] == [v["field"] for v in VECTORS["invalid_configs"]]
    assert got["counts"] == expected_counts


TOTALS = {
    "en": [
        (0, 0, "In this browser: 0 people helped, 0 bytes relayed."),
        (1, 1, "In this browser: 1 person helped, 1 byte relayed."),
        (2, 999, "In this browser: 2 people helped, 999 bytes relayed."),
        (3, 3_456_789, "In this browser: 3 people helped, 3.5 MB relayed."),
        (4, 999_950, "In this browser: 4 people helped, 1 MB relayed."),
        (1_234, 2_000_000_000, "In this browser: 1,234 people helped, 2 GB relayed."),
    ],
    "zh-Hans": [(0, 0, "0 字节"), (1, 3_456_789, "3.5 MB")],
    "zh-Hant": [(0, 0, "0 位元組"), (1, 3_456_789, "3.5 MB")],
    "fa": [(0, 0, "۰ بایت"), (1, 3_456_789, "۳٫۵ MB")],
    "ru": [(1, 0, "помогли 1 человеку, передано 0 байт"), (2, 2, "передано 2 байта")],
    "es": [(0, 0, "0 personas ayudadas, 0 bytes retransmitidos"), (1, 1, "1 persona ayudada")],
}


@pytest.mark.parametrize("lang", list(TOTALS))
async def test_totals_read_naturally(lang: str) -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await _open(page, net.page_url(lang=lang))
        for helped, relayed, text in TOTALS[lang]:
            await page.evaluate(
                "(t) => localStorage.setItem('ferry-widget.totals', JSON.stringify(t))",
                {"helped": helped, "bytes": relayed},
            )
            await page.reload()
            await wait_for_widget(page, f"s.bytesRelayed === {relayed}")
            shown = await page.locator("ferry-widget .totals").inner_text()
            if lang == "en":
                assert shown == text
            else:
                assert text in shown, (shown, text)


USED_UP = (
    "localStorage.setItem('ferry-widget.enabled', 'on');"
    "localStorage.setItem('ferry-widget.quota',"
    " JSON.stringify({ day: Math.floor(Date.now() / 86400000), used: 1000000 }));"
)


async def test_a_used_up_quota_stops_polling_and_says_so() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.add_init_script(USED_UP)
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "/v1/volunteer/" in r.url else None)
        await page.goto(net.page_url(self_hosted=True, quota="1M", lang="en"))
        await wait_for_widget(page, "s.state === 'quota' && s.quotaReached === true")
        line = await page.locator("ferry-widget .status").inner_text()
        assert line.startswith("Today's limit of 1 MB is used up. Helping again at ")
        assert await page.get_by_role("switch").get_attribute("aria-checked") == "true"
        await page.wait_for_timeout(1500)  # a poll would have left by now; none must
        assert polls == []
        # the same stored count under a larger quota is not used up: the widget polls
        async with page.expect_request(lambda r: r.url.endswith("/v1/volunteer/poll")):
            await page.goto(net.page_url(self_hosted=True, quota="2M", lang="en"))
        await wait_for_widget(page, "s.state === 'looking' && s.quotaReached === false")


async def test_the_quota_running_out_mid_transfer_ends_the_relay(tmp_path: Path) -> None:
    size = 8 * 1024 * 1024
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "/v1/volunteer/" in r.url else None)
        await page.goto(net.page_url(quota="1M"))
        await page.get_by_role("switch").click()
        await wait_for_widget(page, "s.state === 'looking'")
        client = await net.start_client(volunteers=2)  # the widget is its first path
        python_volunteer = net.start_python_volunteer()
        target = tmp_path / "download.bin"
        proxy = f"{client.proxy_address[0]}:{client.proxy_address[1]}"
        url = f"http://127.0.0.1:{net.origin.port}/bytes/{size}"
        download = asyncio.create_task(
            run_curl("--socks5-hostname", proxy, "--limit-rate", "4M", "-o", str(target), url)
        )
        await wait_for_widget(page, "s.state === 'quota'", timeout=60)
        polls_at_quota = len(polls)
        code, _, err = await download
        assert code == 0, err
        expected = hashlib.sha256(Origin.payload(size)).hexdigest()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        assert python_volunteer.bytes_relayed > 0
        status = await widget_status(page)
        assert (status["state"], status["helping"], status["quotaReached"]) == ("quota", 0, True)
        relayed = status["bytesRelayed"]
        # admitted while the day's count was below 1 MB: past it by one datagram at most
        assert isinstance(relayed, int) and 900_000 < relayed <= 1_000_000 + 65_527
        assert len(polls) == polls_at_quota  # no poll since (the download took a while)
        stored = await page.evaluate("JSON.parse(localStorage.getItem('ferry-widget.quota'))")
        assert stored["used"] >= 1_000_000


@pytest.mark.parametrize("attribute", ["quota", "max-rate"])
async def test_a_bad_byte_count_is_refused_naming_the_attribute(attribute: str) -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await _open(page, f"{net.page_url(lang='en')}&{attribute}=2.5M")
        await page.get_by_role("switch").click()
        await wait_for_widget(page, f"s.state === 'off' && s.settingsError === 'data-{attribute}'")
        line = await page.locator("ferry-widget .status").inner_text()
        assert f"data-{attribute}" in line
        assert any(f'data-{attribute} "2.5M" is not a byte count' in e for e in errors)
