// The ferry client's local page (served by ferry.client.local_page): polls /v1/status once
// a second, draws the speed chart, and sends the page's POST requests with its token.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("ferry-data").textContent);
  const words = data.messages;
  const $ = (id) => document.getElementById(id);
  const rightToLeft = document.documentElement.dir === "rtl";

  function t(id, values) {
    let text = words[id] || id;
    for (const [name, value] of Object.entries(values || {})) {
      text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  function bytes(count) {
    const units = ["B", "kB", "MB", "GB"];
    let unit = 0;
    while (count >= 1000 && unit < units.length - 1) {
      count /= 1000;
      unit += 1;
    }
    const text = (unit === 0 ? count.toFixed(0) : count.toFixed(1)) + " " + units[unit];
    // In right-to-left text a number and its unit stay in order: isolate them left to right.
    return rightToLeft ? "\u2066" + text + "\u2069" : text;
  }

  function speed(perSecond) {
    const text = bytes(perSecond);
    return rightToLeft ? text.slice(0, -1) + "/s\u2069" : text + "/s";
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Ferry-Token": data.token },
      body: JSON.stringify(body || {}),
    });
    return response.json();
  }

  function drawLine(element, values, peak) {
    const width = 300;
    const height = 80;
    const step = values.length > 1 ? width / (values.length - 1) : width;
    element.setAttribute(
      "points",
      values
        .map((value, index) => {
          const x = rightToLeft ? width - index * step : index * step;
          const y = height - 2 - (value / peak) * (height - 6);
          return x.toFixed(1) + "," + y.toFixed(1);
        })
        .join(" "),
    );
  }

  function show(status) {
    const state = $("state");
    state.dataset.state = status.state;
    state.dataset.connected = String(status.connected);
    $("headline").textContent = t(status.connected ? "page.connected" : "page.not_connected");
    $("reason").textContent = t("state." + status.state, { count: status.volunteers });
    $("detail").textContent = status.detail ? t("page.last_problem", { detail: status.detail }) : "";
    $("volunteers").textContent = status.standby
      ? t("page.volunteers_value", { count: status.volunteers, standby: status.standby })
      : String(status.volunteers);
    const history = status.history;
    const last = history.length ? history[history.length - 1] : { up: 0, down: 0 };
    $("down").textContent = speed(last.down);
    $("up").textContent = speed(last.up);
    $("used").textContent = t("page.used_value", {
      down: bytes(status.bytesReceived),
      up: bytes(status.bytesSent),
    });
    $("bridge").textContent = status.bridge;
    const peak = Math.max(1, ...history.map((s) => Math.max(s.up, s.down)));
    const chart = $("chart");
    chart.dataset.peakDown = String(Math.max(0, ...history.map((s) => s.down)));
    drawLine($("line-down"), history.map((s) => s.down), peak);
    drawLine($("line-up"), history.map((s) => s.up), peak);
  }

  async function poll() {
    try {
      const response = await fetch("/v1/status");
      show(await response.json());
    } catch (error) {
      $("state").dataset.state = "unreachable";
      $("headline").textContent = t("page.not_connected");
      $("reason").textContent = t("page.client_unreachable");
    }
  }

  $("reconnect").addEventListener("click", async () => {
    $("reconnect").disabled = true;
    $("reason").textContent = t("page.reconnecting");
    try {
      await post("/v1/reconnect");
    } finally {
      $("reconnect").disabled = false;
      poll();
    }
  });

  $("apply-bridge").addEventListener("click", async () => {
    const result = $("bridge-result");
    result.className = "";
    result.textContent = "…";
    const answer = await post("/v1/bridge", { bridge: $("new-bridge").value });
    if (answer.ok) {
      result.className = "ok";
      result.textContent = t("bridge.applied");
      $("new-bridge").value = "";
    } else {
      result.className = "error";
      result.dataset.error = answer.error;
      result.textContent =
        answer.error === "bridge.invalid" ? t(answer.error, { detail: answer.detail }) : t(answer.error);
    }
    poll();
  });

  $("run-check").addEventListener("click", async () => {
    const list = $("check-results");
    const summary = $("check-summary");
    $("run-check").disabled = true;
    list.textContent = "";
    summary.className = "";
    summary.textContent = t("page.check_running");
    try {
      const answer = await post("/v1/check");
      if (!answer.ok) {
        summary.textContent = t(answer.error);
        return;
      }
      let failed = 0;
      answer.results.forEach((result, index) => {
        const item = document.createElement("li");
        item.className = result.outcome;
        item.dataset.step = result.step;
        let text = t("check.line", {
          number: index + 1,
          name: t("check." + result.step + ".name"),
          label: t("check.label." + result.outcome),
          explanation: t(result.explanation),
        });
        if (result.detail) text += " (" + result.detail + ")";
        item.textContent = text;
        if (result.advice) {
          const advice = document.createElement("div");
          advice.className = "advice";
          advice.textContent = t("check.try", { advice: t(result.advice) });
          item.appendChild(advice);
        }
        list.appendChild(item);
        if (result.outcome === "failed" && !failed) failed = index + 1;
      });
      summary.className = failed ? "error" : "ok";
      summary.textContent = failed
        ? t("check.summary.failed", {
            number: failed,
            step: t("check." + answer.results[failed - 1].step + ".name"),
          })
        : t("check.summary.ok");
    } finally {
      $("run-check").disabled = false;
    }
  });

  poll();
  setInterval(poll, 1000);
})();
