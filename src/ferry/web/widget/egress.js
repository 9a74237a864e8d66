// --- egresses: as src/ferry/core/volunteer_egress.py (tests/vectors/volunteer_egress.json)

/** [network address >>> (32 - bits), bits, label]: the internal IPv4 networks. */
const INTERNAL_V4 = [[0, 8, "unspecified"], [127, 8, "loopback"], [10, 8, "private"],
  [0xac1, 12, "private"], [0xc0a8, 16, "private"], [0x191, 10, "shared_address_space"],
  [0xa9fe, 16, "link_local"], [0xe, 4, "multicast"], [0xf, 4, "reserved"]];
const v4Class = (n) => INTERNAL_V4.find(([top, bits]) => n >>> (32 - bits) === top)?.[2] ?? null;

/** The internal class of a host as URL writes it, null when public, undefined for a name. */
function internalHostClass(host) {
  if (isIpv4(host)) return v4Class(host.split(".").reduce((n, part) => n * 256 + Number(part), 0));
  if (!isIpv6(host) || /[.%]/.test(host)) return undefined;
  const [head, tail = []] = host.split("::").map((half) => (half ? half.split(":").map((x) => parseInt(x, 16)) : []));
  const g = [...head, ...Array(8 - head.length - tail.length).fill(0), ...tail];
  const zeros = (from, to) => g.slice(from, to).every((x) => x === 0);
  const mapped = zeros(0, 5) && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6);
  if (mapped || nat64) return v4Class(g[6] * 65536 + g[7]);
  if (zeros(0, 7) && g[7] < 2) return g[7] ? "loopback" : "unspecified";
  if (g[0] >> 9 === 0xfc >> 1) return "private"; // fc00::/7
  return { 0x3fa: "link_local", 0x3fb: "site_local" }[g[0] >> 6] || (g[0] >> 8 === 0xff ? "multicast" : null);
}

const namesThisHost = (host) => /(^|\.)localhost$/.test(host);
/** A host without IPv6 brackets and final dots. */
const bareHost = (host) => host.replace(/^\[|\]$/g, "").replace(/\.+$/, "");
/** A host as the browser connects to it (URL's parser: lower case, canonical addresses). */
function normalHost(host) {
  const inner = bareHost(host);
  return bareHost(new URL(`ws://${inner.includes(":") ? `[${inner}]` : inner}`).hostname);
}

function normalUrl(value) {
  const url = new URL(value);
  const port = url.port || (url.protocol === "wss:" ? "443" : "80");
  return `${url.protocol}//${url.hostname.replace(/\.+$/, "")}:${port}${url.pathname}${url.search}`;
}

class EgressSettingError extends Error {}

/** One data-egress entry (a ws/wss URL or a host); throws EgressSettingError. */
function parseAllowEntry(text) {
  const entry = text.trim();
  try {
    if (entry.includes("://")) {
      checkEgressUrl(entry, "data-egress");
      return { url: normalUrl(entry) };
    }
    if (entry && !/[/?#@ ]/.test(entry)) return { host: normalHost(entry) };
    throw new Error("write an egress URL or a host");
  } catch (error) {
    throw new EgressSettingError(`egress allowlist entry "${text}": ${error.message}`);
  }
}

/** {reason, message, addressClass} when the egress ``url`` is refused, else null; as
 * EgressChoice.refuse_url, but names are not resolved (docs/widget.md). */
function refuseEgress(url, allowed, allowInternal) {
  const host = normalHost(new URL(url).hostname);
  const refuse = (reason, why, addressClass = null) => ({ reason, message: `refusing egress ${url}: ${why}`, addressClass });
  if (allowed.length && !allowed.map(parseAllowEntry).some((e) => e.url === normalUrl(url) || e.host === host)) {
    return refuse("egress_not_allowed", "it is not on this volunteer's egress allowlist");
  }
  if (allowInternal) return null;
  const label = internalHostClass(host) ?? (namesThisHost(host) ? "this_host" : null);
  if (!label) return null;
  const special = { shared_address_space: "carrier-grade NAT addresses", this_host: "names of this host", private: "private network addresses" };
  return refuse("egress_internal_address", `${special[label] || `${label.replace("_", "-")} addresses`} are not egresses`, label);
}

/** Whether a page or broker on ``host`` is this machine (loopback tests and demos). */
function isLoopbackHost(host) {
  const label = internalHostClass(normalHost(host)) ?? (namesThisHost(normalHost(host)) ? "this_host" : null);
  return label === "loopback" || label === "this_host";
}

const egressChoice = Object.freeze({ refuseEgress, parseAllowEntry, isLoopbackHost, EgressSettingError });
