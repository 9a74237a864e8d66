// --- the programmatic volunteer: the element and the browser extension both start it here

/** Checks settings written as the widget's data-* attributes (``data``: strings, a missing
 * one takes its default) with the widget's limits, and gives BrowserVolunteer's options;
 * throws LimitsError naming the attribute. ``data.broker`` is an absolute URL; ``pageHost``
 * is where the page runs (internal egresses only with page and broker both on loopback). */
function volunteerSettings(data, pageHost) {
  const capacity = Number.parseInt(data.capacity || "", 10);
  const read = (name, value) => (value === undefined ? 0 : parseByteCount(value, name));
  const byteLimits = { maxRate: read("data-max-rate", data.maxRate), quota: read("data-quota", data.quota) };
  const egressAllow = (data.egress || "").split(/[\s,]+/).filter(Boolean);
  for (const entry of egressAllow) {
    try {
      parseAllowEntry(entry);
    } catch (error) {
      if (error instanceof EgressSettingError) throw new LimitsError(error.message, "data-egress");
      throw error;
    }
  }
  const broker = new URL(data.broker).href;
  return {
    broker,
    capacity: capacity >= 1 ? Math.min(capacity, LIMITS.maxCapacity) : LIMITS.defaultCapacity,
    pairing: data.pairing && IDENTIFIER.test(data.pairing) ? data.pairing : null,
    iceServers: [],
    ...byteLimits,
    egressAllow,
    allowInternalEgress: isLoopbackHost(pageHost) && isLoopbackHost(new URL(broker).hostname),
  };
}

/** What an extension or a test may call (docs/extension.md): ``settings(data, pageHost)``,
 * ``create(options, hooks)`` (a BrowserVolunteer, not started; ``options``: what ``settings``
 * gives plus ``volunteerId``; ``hooks``: onChange(), onHelped(), onRelayed(bytes),
 * onQuotaReached()), and a volunteer's ``start()``, ``stop()``, ``state``, ``helping``,
 * ``quotaReached``, ``limits`` (restoreQuota(day, used), quotaUsed(now)). */
const volunteerApi = Object.freeze({
  settings: volunteerSettings,
  create(options, hooks) {
    const volunteer = new BrowserVolunteer(options, hooks.onChange);
    const { onHelped, onRelayed, onQuotaReached } = hooks;
    return Object.assign(volunteer, { onHelped, onRelayed, onQuotaReached });
  },
  newVolunteerId: () => randomToken(24),
  newPairingCode: () => randomToken(16),
  isMetered,
  LimitsError,
});
