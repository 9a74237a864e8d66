// --- the volunteer's limits: exactly src/ferry/core/volunteer_limits.py ------------------
// (docs/architecture.md, "Volunteer limits"; pinned by tests/vectors/volunteer_limits.json)

const SECONDS_PER_DAY = 86400;
const MIN_BURST = 65536;
const MAX_BYTE_COUNT = Number.MAX_SAFE_INTEGER; // 2**53 - 1, as in Python
// Python's whitespace (str.strip, \s) and re.IGNORECASE matches ("i" matches "\u0130", "\u0131")
const PY_SPACE = "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const BYTE_COUNT = new RegExp(`^([0-9]{1,20})${PY_SPACE}*(?:([kmgt])([i\\u0130\\u0131]?))?b?$`, "iu");
const STRIP = new RegExp(`^${PY_SPACE}+|${PY_SPACE}+$`, "gu");

class LimitsError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

/** The UTC calendar day ``now`` (Unix seconds) falls in, as days since 1970-01-01. */
const utcDay = (now) => Math.floor(now / SECONDS_PER_DAY);

/** "2000000", "2M", "500k", "1GiB" -> bytes, as parse_byte_count; throws LimitsError. */
function parseByteCount(text, what = "the value") {
  const match = BYTE_COUNT.exec(String(text).replace(STRIP, ""));
  if (match === null) {
    throw new LimitsError(`${what} "${text}" is not a byte count: write a whole number, optionally with k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024), e.g. 2M or 500k`, what);
  }
  const power = match[2] ? "kmgt".indexOf(match[2].toLowerCase()) + 1 : 0;
  const value = BigInt(match[1]) * BigInt(match[3] ? 1024 : 1000) ** BigInt(power);
  if (value > BigInt(MAX_BYTE_COUNT)) throw new LimitsError(`${what} "${text}" is too large (at most ${MAX_BYTE_COUNT} bytes)`, what);
  return Number(value);
}

/** One volunteer's limits over all its clients: capacity, a token bucket for max_rate, a
 * quota per UTC day. ``config`` has Python's field names (capacity, max_rate, burst, quota);
 * every method takes ``now`` in Unix seconds (Date.now() / 1000). */
class VolunteerLimits {
  constructor({ capacity = 5, max_rate = 0, burst = 0, quota = 0 } = {}) {
    if (!(Number.isInteger(capacity) && capacity >= 1 && capacity <= 1000)) {
      throw new LimitsError("capacity must be between 1 and 1000 clients", "capacity");
    }
    for (const [name, value] of Object.entries({ max_rate, burst, quota })) {
      if (!(Number.isInteger(value) && value >= 0 && value <= MAX_BYTE_COUNT)) {
        throw new LimitsError(`${name} must be between 0 and ${MAX_BYTE_COUNT} bytes`, name);
      }
    }
    if (burst && burst < MIN_BURST) {
      throw new LimitsError(`burst must be at least ${MIN_BURST} bytes, or 0 for the default`, "burst");
    }
    Object.assign(this, { capacity, maxRate: max_rate, quota });
    this.bucketSize = burst || Math.max(Math.floor(max_rate / 4), MIN_BURST);
    this.tokens = this.bucketSize;
    this.refilledAt = null;
    this.day = null;
    this.usedToday = 0;
  }

  /** "admitted", "rate" or "quota" for a datagram of ``size`` bytes, and count it. */
  admit(size, now) {
    if (this.quota) {
      this.rollDay(now);
      if (this.usedToday >= this.quota) return "quota";
    }
    if (this.maxRate) {
      if (this.refilledAt !== null && now > this.refilledAt) {
        this.tokens = Math.min(this.bucketSize, this.tokens + (now - this.refilledAt) * this.maxRate);
      }
      this.refilledAt = now;
      if (this.tokens < size) return "rate";
      this.tokens -= size;
    }
    if (this.quota) this.usedToday += size;
    return "admitted";
  }

  quotaUsed(now) {
    return this.day === utcDay(now) ? this.usedToday : 0;
  }

  quotaExhausted(now) {
    return Boolean(this.quota) && this.quotaUsed(now) >= this.quota;
  }

  canTakeClient(active, now) {
    return active < this.capacity && !this.quotaExhausted(now);
  }

  freeCapacity(active) {
    return Math.max(0, this.capacity - active);
  }

  /** Seconds to wait before polling: 0, or until 00:00 UTC while today's quota is used up. */
  nextPollDelay(now) {
    return this.quotaExhausted(now) ? (utcDay(now) + 1) * SECONDS_PER_DAY - now : 0;
  }

  /** Sets the count of ``day`` (restored from localStorage, see docs/widget.md). */
  restoreQuota(day, used) {
    this.day = day;
    this.usedToday = used;
  }

  rollDay(now) {
    const day = utcDay(now);
    if (day !== this.day) this.restoreQuota(day, 0);
  }
}

/** Whether the browser says the connection is metered or saving data (the switch then
 * waits for the visitor instead of turning itself on). */
function isMetered() {
  const connection = navigator.connection;
  return Boolean(connection && (connection.saveData || connection.type === "cellular"));
}

const limits = Object.freeze({ VolunteerLimits, parseByteCount, utcDay, LimitsError });
