"""The Chromium command the client's page and ``--print-browser-setup`` advise keeps WebRTC in
the proxy: started with its WebRTC switch, Debian's Chromium gathers no UDP candidate, so a web
page's WebRTC cannot reveal the user's address around ferry. Without the switch the same browser
gathers UDP host candidates, which is what makes the check able to fail (a switch Chromium does
not know, such as the former ``--force-webrtc-ip-handling-policy``, changes nothing).

No STUN server is given, so gathering sends nothing anywhere; the proxy is a closed loopback
port, since only its presence matters to the policy.
"""

from __future__ import annotations

import shlex

import pytest
from playwright.async_api import async_playwright

from ferry.client.local_page import browser_setup

from .support import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

GATHER = """async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  pc.createDataChannel('probe');
  const candidates = [];
  pc.onicecandidate = (event) => {
    if (event.candidate) candidates.push(event.candidate.candidate);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    const timer = setTimeout(done, 5000);
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(timer); done(); }
    };
  });
  pc.close();
  return candidates;
}"""


def advised_webrtc_switches() -> list[str]:
    """The switches of the advised Chromium command other than the PAC URL."""
    command = browser_setup(("127.0.0.1", 1080), "http://127.0.0.1:1081/").chromium_command
    words = shlex.split(command)
    assert words[0] == "chromium", command
    switches = [word for word in words[1:] if not word.startswith("--proxy-pac-url=")]
    assert switches, f"the advised command has no WebRTC switch: {command}"
    return switches


async def udp_candidates(extra: list[str]) -> list[str]:
    """The UDP candidates a page gathers in a Chromium started with ``extra``."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--proxy-server=socks5://127.0.0.1:9", *extra],
        )
        try:
            page = await browser.new_page()
            candidates = await page.evaluate(GATHER)
        finally:
            await browser.close()
    return [candidate for candidate in candidates if " udp " in f" {candidate.lower()} "]


async def test_the_advised_chromium_switch_leaves_no_udp_candidate() -> None:
    without = await udp_candidates([])
    assert without, "Chromium gathered no UDP candidate even without the switch"
    advised = advised_webrtc_switches()
    assert await udp_candidates(advised) == [], f"{advised} left UDP candidates"
