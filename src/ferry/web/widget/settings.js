// --- settings: every timeout and limit, and helpers all modules use ---------------------

/** Every timeout and limit of the widget, in one place (milliseconds and bytes). */
const LIMITS = Object.freeze({
  /** Wait before polling again after the broker failed; doubles on each failure. */
  pollBackoffInitialMs: 1000,
  /** Cap on that wait. */
  pollBackoffMaxMs: 30000,
  /** Longest wait taken from the broker's Retry-After (429/503); never below the backoff. */
  retryAfterMaxMs: 300000,
  /** Longest one broker request may take (the broker holds a poll up to 10 s). */
  requestTimeoutMs: 20000,
  /** Longest ICE candidate gathering may take before the answer is sent as it is. */
  gatherTimeoutMs: 3000,
  /** Once the candidates the STUN and TURN servers give are in, wait this much more for
   * the rest of the same round before sending the answer (see gatherCandidates). */
  gatherGraceMs: 150,
  /** Longest the client's data channel may take to open after the answer is sent. */
  openTimeoutMs: 15000,
  /** A datagram is dropped while the next hop's bufferedAmount is above this. */
  highWaterBytes: 1024 * 1024,
  /** Datagrams held for the egress while its WebSocket is still opening. */
  maxHeldDatagrams: 1024,
  /** Largest datagram relayed (docs/protocol.md §4). */
  maxDatagramBytes: 65527,
  /** Default number of clients relayed at once (data-capacity). */
  defaultCapacity: 5,
  /** Largest data-capacity accepted (the broker's own limit is 1000). */
  maxCapacity: 50,
  /** Longest sleep between clock checks while today's quota is used up (a clock set
   * forward, or a background tab's throttled timer, is noticed within this). */
  quotaRecheckMs: 60000,
});

/** ``bytes`` random bytes as unpadded base64url (volunteer ids, pairing codes). */
function randomToken(bytes) {
  const raw = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Resolves after ``ms``, or at once when ``signal`` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}
