// --- the broker: long polls for clients, answers them, runs their relays ---------------

/** Milliseconds a Retry-After value asks for (RFC 9110 §10.2.3: seconds or an HTTP date),
 * -1 if there is none or it is malformed (the backoff alone applies then). */
function retryAfterMs(value) {
  value = (value || "").trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return /\d\d:\d\d:\d\d/.test(value) && date === date ? Math.max(0, date - Date.now()) : -1;
}

class BrowserVolunteer {
  constructor(options, onChange) {
    this.broker = options.broker.replace(/\/+$/, "");
    this.volunteerId = options.volunteerId;
    this.capacity = options.capacity;
    this.pairing = options.pairing;
    this.egressAllow = options.egressAllow;
    this.allowInternalEgress = options.allowInternalEgress;
    /** Matches not answered because of their egress; the egresses already logged. */
    this.egressRefused = 0;
    this.loggedEgresses = new Set();
    /** ICE servers the host page configured (RTCPeerConnection shape), used for every
     * answer after the ones the broker sends with each match. */
    this.iceServers = options.iceServers;
    /** ``{reason, state, iceServers}`` of the last answer's gathering (gatherCandidates):
     * why it stopped waiting, the browser's iceGatheringState then, the servers used. */
    this.lastGathering = null;
    this.limits = new VolunteerLimits({ capacity: options.capacity, max_rate: options.maxRate, quota: options.quota });
    this.onChange = onChange;
    this.onQuotaReached = () => {};
    this.quotaReached = false;
    this.pollAbort = null;
    this.relays = new Set();
    this.state = "off";
    this.abort = null;
    this.signal = null;
    this.slotFreed = null;
  }

  /** Aborted when the volunteer stops; every wait and request of this run listens to it. */
  get stopping() {
    return this.signal;
  }

  start() {
    if (this.abort) return;
    this.abort = new AbortController();
    this.signal = this.abort.signal;
    this.setState("looking");
    this.pollLoop(this.abort.signal);
  }

  stop() {
    if (!this.abort) return;
    this.abort.abort();
    this.abort = null;
    for (const relay of [...this.relays]) relay.close();
    if (this.slotFreed) this.slotFreed();
    this.setState("off");
  }

  setState(state) {
    this.state = state;
    this.onChange();
  }

  async request(path, body, signal) {
    const response = await fetch(this.broker + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(LIMITS.requestTimeoutMs)]),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { status: response.status, bytes, retryAfter: response.headers.get("Retry-After") };
  }

  async pollLoop(signal) {
    let delay = LIMITS.pollBackoffInitialMs;
    while (!signal.aborted) {
      const quotaWait = this.limits.nextPollDelay(Date.now() / 1000);
      if (quotaWait > 0) {
        this.quotaUsedUp();
        await sleep(Math.min(quotaWait * 1000, LIMITS.quotaRecheckMs), signal);
        continue;
      }
      if (this.quotaReached) {
        this.quotaReached = false; // a new UTC day
        this.setState(this.relays.size ? "helping" : "looking");
      }
      const free = this.limits.freeCapacity(this.relays.size);
      if (free === 0) {
        await new Promise((resolve) => (this.slotFreed = resolve));
        this.slotFreed = null;
        continue;
      }
      let match;
      let iceServers;
      const pollAbort = new AbortController();
      this.pollAbort = pollAbort;
      try {
        const fields = { volunteer_id: this.volunteerId, capacity: free, kind: "browser" };
        if (this.pairing) fields.pairing = this.pairing;
        const body = encodeRequest(fields);
        const { status, bytes, retryAfter } = await this.request("/v1/volunteer/poll", body, AbortSignal.any([signal, pollAbort.signal]));
        if (status !== 200) {
          const error = new Error(`the broker refused the poll (HTTP ${status}${status === 429 ? ": too many requests" : ""})`);
          if (status === 429 || status === 503) error.waitMs = retryAfterMs(retryAfter);
          throw error;
        }
        // a bad ice_servers list refuses the whole response, match included
        ({ match, ice_servers: iceServers } = decode("poll_response", bytes));
      } catch (error) {
        if (signal.aborted) return;
        if (pollAbort.signal.aborted) continue; // abandoned: the quota ran out meanwhile
        this.lastError = String(error && error.message);
        this.setState("error");
        // The broker's Retry-After raises the backoff, up to a cap; never lowers it.
        await sleep(Math.max(delay, Math.min((error && error.waitMs) ?? -1, LIMITS.retryAfterMaxMs)), signal);
        delay = Math.min(delay * 2, LIMITS.pollBackoffMaxMs);
        continue;
      }
      delay = LIMITS.pollBackoffInitialMs;
      if (signal.aborted) return;
      if (this.state === "error") this.setState(this.relays.size ? "helping" : "looking");
      // A match that arrives as the quota runs out is not answered: the broker gives the
      // client to another volunteer after its answer timeout.
      if (match) {
        // not answered: the broker gives the client to another volunteer
        const refusal = refuseEgress(match.egress, this.egressAllow, this.allowInternalEgress);
        if (refusal) {
          this.refusedEgress(refusal, match.egress);
          continue;
        }
      }
      if (match && this.limits.canTakeClient(this.relays.size, Date.now() / 1000)) this.serve(match, iceServers);
    }
  }

  /** Counts a refused egress; says why in the console once per egress. */
  refusedEgress(refusal, url) {
    this.egressRefused += 1;
    this.lastError = refusal.message;
    if (!this.loggedEgresses.has(url)) {
      this.loggedEgresses.add(url);
      console.warn(`ferry-widget: ${refusal.message}`);
    }
    this.onChange();
  }

  /** Whether a datagram of ``size`` bytes may be relayed now (rate and quota). */
  admit(size) {
    const verdict = this.limits.admit(size, Date.now() / 1000);
    if (verdict === "quota") this.quotaUsedUp();
    return verdict === "admitted";
  }

  /** Today's quota is used up: end every relay, abandon the poll, say so; once a day. */
  quotaUsedUp() {
    if (this.quotaReached) return;
    this.quotaReached = true;
    if (this.pollAbort) this.pollAbort.abort();
    for (const relay of [...this.relays]) relay.close();
    this.onQuotaReached();
    this.setState("quota");
  }

  serve(match, iceServers) {
    const relay = new ClientRelay(this, match, iceServers);
    this.relays.add(relay);
    relay.run().catch((error) => {
      this.lastError = String(error && error.message);
      relay.close();
    });
  }

  async sendAnswer(matchId, sdp) {
    const { status } = await this.request(
      "/v1/volunteer/answer",
      encodeRequest({ match_id: matchId, answer: sdp }),
      this.stopping,
    );
    return status === 200;
  }

  clientHelped() {
    this.onHelped();
    this.setState("helping");
  }

  relayed(bytes) {
    this.onRelayed(bytes);
  }

  relayEnded(relay) {
    this.relays.delete(relay);
    if (this.slotFreed) this.slotFreed();
    if (this.abort && !this.quotaReached) this.setState(this.relays.size ? "helping" : "looking");
  }

  get helping() {
    let count = 0;
    for (const relay of this.relays) if (relay.socket) count += 1;
    return count;
  }
}
