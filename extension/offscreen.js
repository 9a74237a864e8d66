// --- the extension's offscreen document: runs the widget's volunteer (volunteerApi) ------
// Bundled after the widget's settings, messages, limits, egress, relay, broker and api
// modules, inside their scope (scripts/build-extension). It asks the service worker for
// the settings, starts, and sends a status on every change; chrome.runtime is its only API.

const send = (status) => chrome.runtime.sendMessage({ type: "status", status });

async function run() {
  const { settings: stored, volunteerId: storedId, quotaUsed } = await chrome.runtime.sendMessage({ type: "options" });
  const volunteerId = storedId && IDENTIFIER.test(storedId) ? storedId : volunteerApi.newVolunteerId();
  const report = { state: "off", helping: 0, newlyHelped: 0, newBytes: 0, settingsError: null, volunteerId, quotaUsed: null };
  if (stored.unmeteredOnly && volunteerApi.isMetered()) return send({ ...report, state: "metered" });
  let options;
  try {
    const data = { broker: stored.broker, capacity: stored.capacity, pairing: stored.pairing || undefined };
    if (stored.maxRate) data.maxRate = stored.maxRate;
    if (stored.quota) data.quota = stored.quota;
    // internal egresses only when the broker itself is on this machine (tests and demos)
    options = volunteerApi.settings(data, new URL(stored.broker).hostname);
  } catch (error) {
    return send({ ...report, state: "settings", settingsError: error.field || "broker" });
  }
  let volunteer = null;
  let helped = 0;
  let bytes = 0;
  let queued = false;
  const flush = () => {
    queued = false;
    const now = Date.now() / 1000;
    const quota = options.quota ? { day: utcDay(now), used: volunteer.limits.quotaUsed(now) } : null;
    send({ ...report, state: volunteer.state, helping: volunteer.helping, newlyHelped: helped, newBytes: bytes, quotaUsed: quota });
    helped = 0;
    bytes = 0;
  };
  const changed = () => {
    if (!queued && volunteer) {
      queued = true;
      setTimeout(flush, 250); // at most four statuses a second, however fast bytes flow
    }
  };
  volunteer = volunteerApi.create({ ...options, volunteerId }, {
    onChange: changed,
    onHelped: () => ((helped += 1), changed()),
    onRelayed: (count) => ((bytes += count), changed()),
    onQuotaReached: changed,
  });
  const now = Date.now() / 1000;
  if (quotaUsed && quotaUsed.day === utcDay(now)) volunteer.limits.restoreQuota(quotaUsed.day, quotaUsed.used);
  volunteer.start();
  flush();
  // "only on unmetered connections": stop while the connection is metered, start again after
  if (stored.unmeteredOnly && navigator.connection) {
    navigator.connection.addEventListener("change", () => {
      if (volunteerApi.isMetered()) volunteer.stop();
      else volunteer.start();
      send({ ...report, state: volunteer.state === "off" ? "metered" : volunteer.state, helping: volunteer.helping });
    });
  }
}

run().catch((error) => console.error(`ferry: ${error.message}`));
