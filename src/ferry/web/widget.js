/* ferry volunteer widget: <script src=BROKER/widget.js async></script> + <ferry-widget>.
 * Built by ferry.web.bundle from src/ferry/web/widget/*.js; edit those, not this. */
(() => {
"use strict";
const LIMITS = Object.freeze({
pollBackoffInitialMs: 1000,
pollBackoffMaxMs: 30000,
retryAfterMaxMs: 300000,
requestTimeoutMs: 20000,
gatherTimeoutMs: 3000,
gatherGraceMs: 150,
openTimeoutMs: 15000,
highWaterBytes: 1024 * 1024,
maxHeldDatagrams: 1024,
maxDatagramBytes: 65527,
defaultCapacity: 5,
maxCapacity: 50,
quotaRecheckMs: 60000,
});
function randomToken(bytes) {
const raw = crypto.getRandomValues(new Uint8Array(bytes));
return btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function sleep(ms, signal) {
return new Promise((resolve) => {
const timer = setTimeout(resolve, ms);
signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
});
}
const MAX_BODY_BYTES = 64 * 1024;
const MAX_SDP_BYTES = 32 * 1024;
const MAX_EGRESS_URL_LENGTH = 2048;
const MAX_JSON_DEPTH = 500;
const IDENTIFIER = /^[A-Za-z0-9_-]{16,64}$/;
const CONTROL_OR_SPACE = /[\x00-\x20\x7f]/;
const SCHEME_CHARS = /^[A-Za-z0-9+\-.]+$/;
const LINE_BREAK = /\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]/;
class MessageError extends Error {
constructor(message, field, reason) {
super(message);
this.field = field;
this.reason = reason;
}
}
class JsonNumber {
constructor(text, value) {
this.isInteger = /^-?(0|[1-9][0-9]*)$/.test(text);
this.value = value;
}
}
const codePoints = (text) => Array.from(text);
const fieldName = (key) => codePoints(key).slice(0, 64).join("");
const notJson = (why) => new MessageError(`the body is not valid JSON (${why})`, null, "not_json");
function parseJson(text) {
let value;
try {
value = JSON.parse(text, (key, item, context) => {
if (typeof item === "number") return new JsonNumber(context ? context.source : String(item), item);
if (item !== null && typeof item === "object" && !Array.isArray(item)) return new Map(Object.entries(item));
return item;
});
} catch (error) {
throw notJson(error.message);
}
repeatedKeys(text);
return value;
}
function repeatedKeys(text) {
const open = [];
for (const [token, key, colon] of text.matchAll(/("(?:[^"\\]|\\.)*")(\s*:)?|[{}[\]]/g)) {
if (token === "{" || token === "[") {
open.push({ keys: new Set(), repeated: null });
if (open.length > MAX_JSON_DEPTH) throw notJson("nested too deeply");
} else if (colon) {
const scope = open[open.length - 1];
const name = JSON.parse(key);
if (scope.keys.has(name) && scope.repeated === null) scope.repeated = name;
scope.keys.add(name);
} else if (!key) {
const { repeated } = open.pop();
if (repeated !== null) {
throw new MessageError(`field '${repeated}' is given twice`, fieldName(repeated), "duplicate_field");
}
}
}
}
function utf8Length(text) {
let length = 0;
for (const c of text) {
const code = c.codePointAt(0);
length += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
}
return length;
}
function checkSdp(value, field) {
if (utf8Length(value) > MAX_SDP_BYTES) {
throw new MessageError(`${field} is longer than ${MAX_SDP_BYTES} bytes`, field, "bad_sdp");
}
if (!value.startsWith("v=0")) {
throw new MessageError(`${field} is not an SDP: it must begin with "v=0"`, field, "bad_sdp");
}
if (!value.split(LINE_BREAK).some((line) => line.startsWith("m=application "))) {
throw new MessageError(`${field} has no "m=application" line`, field, "bad_sdp");
}
}
function checkIdentifier(value, field, reason = "bad_id") {
if (!IDENTIFIER.test(value)) {
throw new MessageError(`${field} must be 16 to 64 characters of A-Z, a-z, 0-9, '_' or '-'`, field, reason);
}
}
function isIpv4(text) {
const parts = text.split(".");
return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}
function isIpv6(text) {
let address = text;
const scope = address.indexOf("%");
if (scope !== -1) {
if (scope === address.length - 1 || address.indexOf("%", scope + 1) !== -1) return false;
address = address.slice(0, scope);
}
let groups = address.split(":");
let needed = 8;
if (groups.length > 0 && groups[groups.length - 1].includes(".")) {
if (!isIpv4(groups[groups.length - 1])) return false;
groups = groups.slice(0, -1);
needed = 6;
}
const joined = groups.join(":");
const halves = joined.split("::");
if (halves.length > 2) return false;
const pieces = (half) => (half === "" ? [] : half.split(":"));
const hex = (piece) => /^[0-9a-fA-F]{1,4}$/.test(piece);
if (halves.length === 1) {
const all = pieces(halves[0]);
return all.length === needed && all.every(hex);
}
const head = pieces(halves[0]);
const tail = pieces(halves[1]);
return head.length + tail.length < needed && [...head, ...tail].every(hex);
}
function splitUrl(value) {
let rest = value;
let scheme = "";
const colon = rest.indexOf(":");
if (colon > 0 && /^[A-Za-z]$/.test(rest[0]) && SCHEME_CHARS.test(rest.slice(0, colon))) {
scheme = rest.slice(0, colon).toLowerCase();
rest = rest.slice(colon + 1);
}
let netloc = "";
if (rest.startsWith("//")) {
let end = rest.length;
for (const c of "/?#") {
const found = rest.indexOf(c, 2);
if (found !== -1 && found < end) end = found;
}
netloc = rest.slice(2, end);
rest = rest.slice(end);
if (netloc.includes("[") !== netloc.includes("]")) throw new Error("Invalid IPv6 URL");
if (netloc.includes("[")) {
const bracketed = netloc.split("[")[1].split("]")[0];
if (bracketed.startsWith("v")) {
if (!/^v[a-fA-F0-9]+\..+$/s.test(bracketed)) throw new Error("IPvFuture address is invalid");
} else if (!isIpv6(bracketed)) {
throw new Error(`'${bracketed}' does not appear to be an IPv4 or IPv6 address`);
}
}
if (!/^[\x00-\x7f]*$/.test(netloc)) {
const plain = netloc.replace(/[@:#?]/g, "");
const normal = plain.normalize("NFKC");
if (plain !== normal && /[/?#@:]/.test(normal)) {
throw new Error("netloc contains invalid characters under NFKC normalization");
}
}
}
const hash = rest.indexOf("#");
const fragment = hash === -1 ? "" : rest.slice(hash + 1);
const at = netloc.lastIndexOf("@");
const hostinfo = at === -1 ? netloc : netloc.slice(at + 1);
let hostname;
let port;
const open = hostinfo.indexOf("[");
if (open !== -1) {
const bracketed = hostinfo.slice(open + 1);
const close = bracketed.indexOf("]");
hostname = close === -1 ? bracketed : bracketed.slice(0, close);
const after = close === -1 ? "" : bracketed.slice(close + 1);
const portColon = after.indexOf(":");
port = portColon === -1 ? "" : after.slice(portColon + 1);
} else {
const portColon = hostinfo.indexOf(":");
hostname = portColon === -1 ? hostinfo : hostinfo.slice(0, portColon);
port = portColon === -1 ? "" : hostinfo.slice(portColon + 1);
}
if (port !== "") {
if (!/^[0-9]+$/.test(port)) throw new Error(`Port could not be cast to integer value as '${port}'`);
if (Number(port) > 65535) throw new Error("Port out of range 0-65535");
}
return { scheme, hostname, hasUserInfo: at !== -1, fragment };
}
function checkEgressUrl(value, field) {
const refuse = (why) => new MessageError(`${field} ${why}`, field, "bad_egress");
if (codePoints(value).length > MAX_EGRESS_URL_LENGTH) {
throw refuse(`is longer than ${MAX_EGRESS_URL_LENGTH} characters`);
}
if (CONTROL_OR_SPACE.test(value)) throw refuse("contains spaces or control characters");
let parts;
try {
parts = splitUrl(value);
} catch (error) {
throw refuse(`is not a valid URL (${error.message})`);
}
if (parts.scheme !== "ws" && parts.scheme !== "wss") throw refuse("must be a ws:// or wss:// URL");
if (!parts.hostname) throw refuse("has no host");
if (parts.hasUserInfo) throw refuse("must not carry a user name or password");
if (parts.fragment || value.endsWith("#")) throw refuse("must not have a #fragment");
}
function checkCapacity(value, field) {
if (!(value >= 1 && value <= 1000)) {
throw new MessageError(`${field} must be between 1 and 1000, not ${value}`, field, "bad_capacity");
}
}
const MAX_ICE_URL_LENGTH = 256;
const MAX_ICE_CREDENTIAL_LENGTH = 256;
const MAX_ICE_SERVERS = 8;
const MIN_ICE_TTL = 1;
const MAX_ICE_TTL = 86400;
const ICE_URL = /^(stuns?|turns?):(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::([0-9]{1,5}))?(?:\?transport=(udp|tcp))?$/;
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
const DEFAULT_ICE_PORTS = Object.freeze({ stun: 3478, stuns: 5349, turn: 3478, turns: 5349 });
class IceServerError extends Error {
constructor(message, reason) {
super(message);
this.reason = reason;
}
}
function isPythonIpv6(text) {
const parts = text.split(":");
if (parts.length < 3) return false;
if (parts[parts.length - 1].includes(".")) {
if (!isIpv4(parts.pop())) return false;
parts.push("0", "0"); // the IPv4 address as two groups
}
if (parts.length > 9) return false;
let skip = null;
for (let i = 1; i < parts.length - 1; i += 1) {
if (parts[i] !== "") continue;
if (skip !== null) return false; // a second "::"
skip = i;
}
let high = parts.length;
let low = 0;
if (skip !== null) {
high = skip;
low = parts.length - skip - 1;
if (parts[0] === "" && --high) return false; // a leading ":" not part of "::"
if (parts[parts.length - 1] === "" && --low) return false; // a trailing one
if (8 - (high + low) < 1) return false;
} else if (parts.length !== 8) {
return false;
}
const groups = [...parts.slice(0, high), ...parts.slice(parts.length - low)];
return groups.every((group) => /^[0-9A-Fa-f]{1,4}$/.test(group));
}
function isIceHostName(host) {
if (isIpv4(host)) return true;
const labels = (host.endsWith(".") ? host.slice(0, -1) : host).split(".");
if (host.length > 253 || !labels.every((label) => DNS_LABEL.test(label))) return false;
return !/^[0-9]+$/.test(labels[labels.length - 1]);
}
const quoted = (text) => JSON.stringify(codePoints(text).slice(0, 80).join(""));
function parseIceUrl(url) {
const refuse = (why) => new IceServerError(`the ICE server URL ${quoted(url)} ${why}`, "bad_url");
if (codePoints(url).length > MAX_ICE_URL_LENGTH) throw refuse(`is longer than ${MAX_ICE_URL_LENGTH} characters`);
const match = ICE_URL.exec(url);
if (match === null) {
throw refuse("is not stun:HOST[:PORT], stuns:HOST[:PORT] or turn(s):HOST[:PORT][?transport=udp|tcp]");
}
const [, scheme, ipv6, name, portText, transport] = match;
const port = portText === undefined ? DEFAULT_ICE_PORTS[scheme] : Number(portText);
if (!(port >= 1 && port <= 65535)) throw refuse("has a port outside 1..65535");
const isTurn = scheme === "turn" || scheme === "turns";
if (transport !== undefined && !isTurn) throw refuse("has ?transport=, which only TURN URLs take");
let host;
if (ipv6 !== undefined) {
if (!isPythonIpv6(ipv6)) throw refuse("has a malformed IPv6 address");
host = ipv6;
} else {
host = name.toLowerCase();
if (!isIceHostName(host)) throw refuse("has a malformed host name");
}
return { scheme, host, port, transport: transport ?? null, isTurn };
}
function checkIceServer(url, username, credential) {
const parsed = parseIceUrl(url);
const refuse = (why) => new IceServerError(why, "bad_credentials");
if ((username === null) !== (credential === null)) {
throw refuse(`the ICE server ${quoted(url)} has a user name without a credential or the other way round`);
}
if (username !== null && !parsed.isTurn) throw refuse(`the STUN server ${quoted(url)} takes no user name or credential`);
for (const value of [username, credential]) {
if (value !== null && (codePoints(value).length > MAX_ICE_CREDENTIAL_LENGTH || !PRINTABLE_ASCII.test(value))) {
throw refuse(
`the TURN user name and credential of ${quoted(url)} must be 1 to ${MAX_ICE_CREDENTIAL_LENGTH} printable ASCII characters without spaces`,
);
}
}
return parsed;
}
function iceServerEntry(value, name) {
if (!(value instanceof Map)) throw new MessageError(`${name} must be an object`, name, "wrong_type");
const prefix = name + ".";
checkKeys(value, ["url"], prefix, ["username", "credential"]);
const url = stringField(value, "url", prefix);
const username = value.has("username") ? stringField(value, "username", prefix) : null;
const credential = value.has("credential") ? stringField(value, "credential", prefix) : null;
try {
checkIceServer(url, username, credential);
} catch (error) {
if (!(error instanceof IceServerError)) throw error;
const field = error.reason === "bad_url" ? `${name}.url` : name;
throw new MessageError(`${field}: ${error.message}`, field, "bad_ice_server");
}
return { url, username, credential };
}
function iceServersField(value) {
if (!Array.isArray(value)) throw new MessageError("ice_servers must be a list", "ice_servers", "wrong_type");
if (value.length > MAX_ICE_SERVERS) {
throw new MessageError(
`ice_servers holds ${value.length} servers; at most ${MAX_ICE_SERVERS} are allowed`,
"ice_servers",
"bad_ice_server",
);
}
return value.map((entry, index) => iceServerEntry(entry, `ice_servers.${index}`));
}
function parseObject(bytes) {
if (bytes.length > MAX_BODY_BYTES) {
throw new MessageError(`the body is ${bytes.length} bytes`, null, "too_large");
}
let text;
try {
text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
} catch {
throw new MessageError("the body is not UTF-8", null, "not_utf8");
}
const value = parseJson(text);
if (!(value instanceof Map)) throw new MessageError("the body must be a JSON object", null, "not_object");
return value;
}
function checkVersion(fields) {
if (!fields.has("version")) throw new MessageError('no "version" field', "version", "missing_field");
const version = fields.get("version");
if (!(version instanceof JsonNumber && version.isInteger && version.value === 1)) {
throw new MessageError("version must be 1", "version", "bad_version");
}
}
function checkKeys(fields, expected, prefix, optional = []) {
for (const key of fields.keys()) {
if (!expected.includes(key) && !optional.includes(key)) {
const name = prefix + fieldName(key);
throw new MessageError(`unknown field '${name}'`, name, "unknown_field");
}
}
for (const key of expected) {
if (!fields.has(key)) throw new MessageError(`missing field '${prefix + key}'`, prefix + key, "missing_field");
}
}
function stringField(fields, key, prefix) {
const value = fields.get(key);
if (typeof value !== "string") throw new MessageError(`${prefix + key} must be a string`, prefix + key, "wrong_type");
return value;
}
function integerField(fields, key, prefix) {
const value = fields.get(key);
if (!(value instanceof JsonNumber && value.isInteger)) {
throw new MessageError(`${prefix + key} must be an integer`, prefix + key, "wrong_type");
}
return value.value;
}
function requestFields(bytes, expected, optional = []) {
const fields = parseObject(bytes);
checkVersion(fields);
checkKeys(fields, ["version", ...expected], "", optional);
return fields;
}
function optionalPairing(fields) {
if (!fields.has("pairing")) return null;
const pairing = stringField(fields, "pairing", "");
checkIdentifier(pairing, "pairing", "bad_pairing");
return pairing;
}
function optionalChoice(fields, key, choices, text) {
if (!fields.has(key)) return "unknown";
const value = stringField(fields, key, "");
if (!choices.includes(value)) throw new MessageError(`${key} must be ${text}`, key, `bad_${key}`);
return value;
}
const NAT_TYPES = ["restricted", "unrestricted", "unknown"];
const natField = (fields) => optionalChoice(fields, "nat", NAT_TYPES, '"restricted", "unrestricted" or "unknown"');
const DECODERS = {
client_offer(bytes) {
const fields = requestFields(bytes, ["offer", "egress"], ["pairing", "nat"]);
const offer = stringField(fields, "offer", "");
checkSdp(offer, "offer");
const egress = stringField(fields, "egress", "");
checkEgressUrl(egress, "egress");
return { offer, egress, pairing: optionalPairing(fields), nat: natField(fields) };
},
client_answer(bytes) {
const fields = parseObject(bytes);
checkKeys(fields, ["answer"], "");
const answer = stringField(fields, "answer", "");
checkSdp(answer, "answer");
return { answer };
},
volunteer_poll(bytes) {
const fields = requestFields(bytes, ["volunteer_id", "capacity"], ["pairing", "nat", "kind"]);
const volunteerId = stringField(fields, "volunteer_id", "");
checkIdentifier(volunteerId, "volunteer_id");
const capacity = integerField(fields, "capacity", "");
checkCapacity(capacity, "capacity");
const pairing = optionalPairing(fields);
const kind = optionalChoice(
fields,
"kind",
["browser", "python", "python-browser-engine"],
'"browser", "python" or "python-browser-engine"',
);
return { volunteer_id: volunteerId, capacity, pairing, nat: natField(fields), kind };
},
poll_response(bytes) {
const fields = parseObject(bytes);
checkKeys(fields, ["match"], "", ["ice_servers"]);
const match = fields.get("match");
const iceServers = fields.has("ice_servers") ? iceServersField(fields.get("ice_servers")) : [];
if (match === null) return { match: null, ice_servers: iceServers };
if (!(match instanceof Map)) throw new MessageError("match must be an object or null", "match", "wrong_type");
checkKeys(match, ["id", "offer", "egress"], "match.");
const id = stringField(match, "id", "match.");
checkIdentifier(id, "match.id");
const offer = stringField(match, "offer", "match.");
checkSdp(offer, "match.offer");
const egress = stringField(match, "egress", "match.");
checkEgressUrl(egress, "match.egress");
return { match: { id, offer, egress }, ice_servers: iceServers };
},
ice_servers_request(bytes) {
requestFields(bytes, []);
return {};
},
ice_servers_response(bytes) {
const fields = parseObject(bytes);
checkKeys(fields, ["ice_servers", "ttl"], "");
const iceServers = iceServersField(fields.get("ice_servers"));
const ttl = integerField(fields, "ttl", "");
if (!(ttl >= MIN_ICE_TTL && ttl <= MAX_ICE_TTL)) {
throw new MessageError(`ttl must be between ${MIN_ICE_TTL} and ${MAX_ICE_TTL} seconds, not ${ttl}`, "ttl", "bad_ttl");
}
return { ice_servers: iceServers, ttl };
},
volunteer_answer(bytes) {
const fields = requestFields(bytes, ["match_id", "answer"]);
const matchId = stringField(fields, "match_id", "");
checkIdentifier(matchId, "match_id");
const answer = stringField(fields, "answer", "");
checkSdp(answer, "answer");
return { match_id: matchId, answer };
},
answer_accepted(bytes) {
const fields = parseObject(bytes);
checkKeys(fields, ["ok"], "");
if (fields.get("ok") !== true) throw new MessageError("ok must be true", "ok", "wrong_type");
return { ok: true };
},
egress_list(bytes) {
const fields = parseObject(bytes);
checkKeys(fields, ["egresses"], "");
const values = fields.get("egresses");
if (!Array.isArray(values)) throw new MessageError("egresses must be a list", "egresses", "wrong_type");
for (const value of values) {
if (typeof value !== "string") throw new MessageError("egresses must hold strings", "egresses", "wrong_type");
checkEgressUrl(value, "egresses");
}
return { egresses: values };
},
network_stats(bytes) {
const fields = parseObject(bytes);
const keys = ["volunteers_online", "clients_helped_last_hour"];
checkKeys(fields, keys, "");
const counts = keys.map((key) => integerField(fields, key, ""));
keys.forEach((key, index) => {
if (counts[index] < 0) throw new MessageError(`${key} must not be negative`, key, "wrong_type");
});
return { volunteers_online: counts[0], clients_helped_last_hour: counts[1] };
},
error_body(bytes) {
const fields = parseObject(bytes);
checkKeys(fields, ["error", "field"], "");
const error = stringField(fields, "error", "");
const field = fields.get("field");
if (field !== null && typeof field !== "string") {
throw new MessageError("field must be a string or null", "field", "wrong_type");
}
return { error, field };
},
};
function decode(name, bytes) {
return DECODERS[name](bytes);
}
function encodeRequest(fields) {
return JSON.stringify({ version: 1, ...fields }).replace(
/[\u007f-\uffff]/g,
(c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"),
);
}
const protocol = Object.freeze({ decode, encodeRequest, MessageError, checkEgressUrl });
const SECONDS_PER_DAY = 86400;
const MIN_BURST = 65536;
const MAX_BYTE_COUNT = Number.MAX_SAFE_INTEGER; // 2**53 - 1, as in Python
const PY_SPACE = "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const BYTE_COUNT = new RegExp(`^([0-9]{1,20})${PY_SPACE}*(?:([kmgt])([i\\u0130\\u0131]?))?b?$`, "iu");
const STRIP = new RegExp(`^${PY_SPACE}+|${PY_SPACE}+$`, "gu");
class LimitsError extends Error {
constructor(message, field) {
super(message);
this.field = field;
}
}
const utcDay = (now) => Math.floor(now / SECONDS_PER_DAY);
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
nextPollDelay(now) {
return this.quotaExhausted(now) ? (utcDay(now) + 1) * SECONDS_PER_DAY - now : 0;
}
restoreQuota(day, used) {
this.day = day;
this.usedToday = used;
}
rollDay(now) {
const day = utcDay(now);
if (day !== this.day) this.restoreQuota(day, 0);
}
}
function isMetered() {
const connection = navigator.connection;
return Boolean(connection && (connection.saveData || connection.type === "cellular"));
}
const limits = Object.freeze({ VolunteerLimits, parseByteCount, utcDay, LimitsError });
const INTERNAL_V4 = [[0, 8, "unspecified"], [127, 8, "loopback"], [10, 8, "private"],
[0xac1, 12, "private"], [0xc0a8, 16, "private"], [0x191, 10, "shared_address_space"],
[0xa9fe, 16, "link_local"], [0xe, 4, "multicast"], [0xf, 4, "reserved"]];
const v4Class = (n) => INTERNAL_V4.find(([top, bits]) => n >>> (32 - bits) === top)?.[2] ?? null;
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
const bareHost = (host) => host.replace(/^\[|\]$/g, "").replace(/\.+$/, "");
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
function isLoopbackHost(host) {
const label = internalHostClass(normalHost(host)) ?? (namesThisHost(normalHost(host)) ? "this_host" : null);
return label === "loopback" || label === "this_host";
}
const egressChoice = Object.freeze({ refuseEgress, parseAllowEntry, isLoopbackHost, EgressSettingError });
function rtcIceServers(servers) {
const result = [];
for (const { url, username, credential } of servers) {
if (username !== null) result.push({ urls: url, username, credential });
else if (!url.startsWith("turn")) result.push({ urls: url });
}
return result;
}
function wantedCandidates(iceServers) {
const urls = iceServers.flatMap((server) => [].concat(server.urls));
return {
srflx: urls.some((url) => /^stuns?:/.test(url)),
relay: urls.some((url) => /^turns?:/.test(url)),
};
}
function gatherCandidates(peer, wanted) {
return new Promise((resolve) => {
const seen = new Set();
let grace = null;
const timer = setTimeout(() => finish("timeout"), LIMITS.gatherTimeoutMs);
const finish = (reason) => {
clearTimeout(timer);
clearTimeout(grace);
peer.removeEventListener("icecandidate", onCandidate);
peer.removeEventListener("icegatheringstatechange", check);
resolve(reason);
};
const check = () => {
if (peer.iceGatheringState === "complete") return finish("complete");
const enough = (!wanted.srflx || seen.has("srflx")) && (!wanted.relay || seen.has("relay"));
if (grace === null && (wanted.srflx || wanted.relay) && enough) {
grace = setTimeout(() => finish("enough"), LIMITS.gatherGraceMs);
}
};
const onCandidate = (event) => {
if (event.candidate) seen.add(/ typ ([a-z]+)/.exec(event.candidate.candidate)?.[1]);
check();
};
const sdp = peer.localDescription ? peer.localDescription.sdp : "";
for (const found of sdp.matchAll(/ typ ([a-z]+)/g)) seen.add(found[1]);
peer.addEventListener("icecandidate", onCandidate);
peer.addEventListener("icegatheringstatechange", check);
check();
});
}
function routeKeyOf(sdp) {
const lines = sdp.split(/\r\n|\r|\n/);
const media = lines.findIndex((line) => line.startsWith("m="));
const found = lines.map((line, index) => [line, index]).filter(([line]) => line.startsWith("a=x-ferry-route"));
if (found.length === 0) return null;
const [line, index] = found[0];
const match = /^a=x-ferry-route:([A-Za-z0-9_-]{21}[AQgw])$/.exec(line);
return found.length === 1 && match && (media < 0 || index < media) ? match[1] : undefined;
}
function relayUrlWithRoute(url, key) {
if (key === null) return url;
return `${url}${url.includes("?") ? "&" : "?"}route=${key}`; // egress URLs have no #fragment
}
const routeKey = Object.freeze({ routeKeyOf, relayUrlWithRoute });
class ClientRelay {
constructor(volunteer, match, iceServers) {
this.volunteer = volunteer;
this.match = match;
this.iceServers = iceServers;
this.peer = null;
this.channel = null;
this.socket = null;
this.held = [];
this.closed = false;
}
async run() {
const volunteer = this.volunteer;
this.route = routeKeyOf(this.match.offer); // docs/protocol.md §3.1
if (this.route === undefined) return this.close(); // a malformed key: refused, as in Python
const iceServers = [...rtcIceServers(this.iceServers), ...volunteer.iceServers];
const peer = new RTCPeerConnection({ iceServers });
this.peer = peer;
const channelArrived = new Promise((resolve) => {
peer.ondatachannel = (event) => resolve(event.channel);
});
peer.onconnectionstatechange = () => {
if (["failed", "closed"].includes(peer.connectionState)) this.close();
};
await peer.setRemoteDescription({ type: "offer", sdp: this.match.offer });
await peer.setLocalDescription(await peer.createAnswer());
const reason = await gatherCandidates(peer, wantedCandidates(iceServers));
volunteer.lastGathering = { reason, state: peer.iceGatheringState, iceServers };
if (this.closed) return;
const accepted = await volunteer.sendAnswer(this.match.id, peer.localDescription.sdp);
if (!accepted || this.closed) return this.close(); // the client gave up meanwhile
const channel = await Promise.race([channelArrived, sleep(LIMITS.openTimeoutMs, volunteer.stopping)]);
if (!channel || this.closed) return this.close();
if (channel.label !== "ferry" || channel.protocol !== "ferry-quic/1") return this.close();
this.channel = channel;
channel.binaryType = "arraybuffer";
channel.onmessage = (event) => this.toEgress(event.data);
channel.onclose = () => this.close();
const socket = new WebSocket(relayUrlWithRoute(this.match.egress, this.route));
this.socket = socket;
socket.binaryType = "arraybuffer";
socket.onopen = () => {
for (const datagram of this.held.splice(0)) this.toEgress(datagram);
};
socket.onmessage = (event) => this.toClient(event.data);
socket.onclose = () => this.close();
socket.onerror = () => this.close();
volunteer.clientHelped();
}
toEgress(data) {
if (typeof data === "string" || data.byteLength < 1 || data.byteLength > LIMITS.maxDatagramBytes) {
return; // docs/protocol.md §3: text and oversize messages are dropped
}
const socket = this.socket;
if (!socket || socket.readyState === WebSocket.CONNECTING) {
if (this.held.length < LIMITS.maxHeldDatagrams) this.held.push(data);
return;
}
if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > LIMITS.highWaterBytes) return;
if (!this.volunteer.admit(data.byteLength)) return;
socket.send(data);
this.volunteer.relayed(data.byteLength);
}
toClient(data) {
const channel = this.channel;
if (typeof data === "string" || !channel || channel.readyState !== "open") return;
if (channel.bufferedAmount > LIMITS.highWaterBytes) return;
if (!this.volunteer.admit(data.byteLength)) return;
try {
channel.send(data);
} catch {
return; // closed under us, or larger than the client accepts
}
this.volunteer.relayed(data.byteLength);
}
close() {
if (this.closed) return;
this.closed = true;
this.held = [];
if (this.socket) this.socket.close();
if (this.channel) this.channel.close();
if (this.peer) this.peer.close();
this.volunteer.relayEnded(this);
}
}
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
this.egressRefused = 0;
this.loggedEgresses = new Set();
this.iceServers = options.iceServers;
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
({ match, ice_servers: iceServers } = decode("poll_response", bytes));
} catch (error) {
if (signal.aborted) return;
if (pollAbort.signal.aborted) continue; // abandoned: the quota ran out meanwhile
this.lastError = String(error && error.message);
this.setState("error");
await sleep(Math.max(delay, Math.min((error && error.waitMs) ?? -1, LIMITS.retryAfterMaxMs)), signal);
delay = Math.min(delay * 2, LIMITS.pollBackoffMaxMs);
continue;
}
delay = LIMITS.pollBackoffInitialMs;
if (signal.aborted) return;
if (this.state === "error") this.setState(this.relays.size ? "helping" : "looking");
if (match) {
const refusal = refuseEgress(match.egress, this.egressAllow, this.allowInternalEgress);
if (refusal) {
this.refusedEgress(refusal, match.egress);
continue;
}
}
if (match && this.limits.canTakeClient(this.relays.size, Date.now() / 1000)) this.serve(match, iceServers);
}
}
refusedEgress(refusal, url) {
this.egressRefused += 1;
this.lastError = refusal.message;
if (!this.loggedEgresses.has(url)) {
this.loggedEgresses.add(url);
console.warn(`ferry-widget: ${refusal.message}`);
}
this.onChange();
}
admit(size) {
const verdict = this.limits.admit(size, Date.now() / 1000);
if (verdict === "quota") this.quotaUsedUp();
return verdict === "admitted";
}
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
const MESSAGES = {
en: {
title: "Help people get around censorship",
switchLabel: "Share my connection",
off: "Off. Turn the switch on to help.",
looking: "On: looking for someone to help…",
helping: (n) => (n === 1 ? "Helping 1 person now." : `Helping ${n} people now.`),
error: "Cannot reach the ferry network; trying again…",
totals: (people, data) =>
`In this browser: ${people.text} ${people.plural === "one" ? "person" : "people"} helped, ${data.text} relayed.`,
bytes: (n, plural) => `${n} ${plural === "one" ? "byte" : "bytes"}`,
quota: (limit, time) => `Today's limit of ${limit} is used up. Helping again at ${time}.`,
badSetting: (name) => `The ${name} setting of this widget is not valid, so it cannot start.`,
note: "Keep this tab open while the switch is on. No browsing data is shared: you only pass on encrypted traffic you cannot read.",
metered: "Not started automatically: this device is on a metered or data-saving connection. Turn the switch on if you still want to help.",
pairButton: "Create a private link",
pairStop: "Stop private mode",
pairOn: (code) => `Private mode: only people with your code ${code} are helped. Share this link with them:`,
pairLink: "Private link",
},
"zh-Hans": {
title: "帮助他人绕过审查",
switchLabel: "分享我的网络连接",
off: "已关闭。打开开关即可提供帮助。",
looking: "已开启：正在寻找需要帮助的人…",
helping: (n) => `正在帮助 ${n} 人。`,
error: "无法连接 ferry 网络，正在重试…",
totals: (people, data) => `在此浏览器中：已帮助 ${people.text} 人，转发 ${data.text}。`,
bytes: (n) => `${n} 字节`,
quota: (limit, time) => `今天的额度（${limit}）已用完，将于 ${time} 恢复帮助。`,
badSetting: (name) => `此小组件的 ${name} 设置无效，无法启动。`,
note: "开关打开时请保持此标签页开启。不会共享任何浏览数据：你只转发你无法读取的加密流量。",
metered: "未自动开启：此设备使用按流量计费或省流量的网络。如仍想帮助，请手动打开开关。",
pairButton: "创建私人链接",
pairStop: "停止私人模式",
pairOn: (code) => `私人模式：只帮助持有你的代码 ${code} 的人。把这个链接分享给他们：`,
pairLink: "私人链接",
},
"zh-Hant": {
title: "幫助他人繞過審查",
switchLabel: "分享我的網路連線",
off: "已關閉。開啟開關即可提供幫助。",
looking: "已開啟：正在尋找需要幫助的人…",
helping: (n) => `正在幫助 ${n} 人。`,
error: "無法連線 ferry 網路，正在重試…",
totals: (people, data) => `在此瀏覽器中：已幫助 ${people.text} 人，轉送 ${data.text}。`,
bytes: (n) => `${n} 位元組`,
quota: (limit, time) => `今天的額度（${limit}）已用完，將於 ${time} 恢復幫忙。`,
badSetting: (name) => `此小工具的 ${name} 設定無效，無法啟動。`,
note: "開關開啟時請保持此分頁開啟。不會分享任何瀏覽資料：你只轉送你無法讀取的加密流量。",
metered: "未自動開啟：此裝置使用計量或省流量的網路。如仍想幫忙，請手動開啟開關。",
pairButton: "建立私人連結",
pairStop: "停止私人模式",
pairOn: (code) => `私人模式：只幫助持有你的代碼 ${code} 的人。把這個連結分享給他們：`,
pairLink: "私人連結",
},
fa: {
title: "به دیگران برای عبور از سانسور کمک کنید",
switchLabel: "اشتراک‌گذاری اتصال من",
off: "خاموش. برای کمک، کلید را روشن کنید.",
looking: "روشن: در جستجوی کسی برای کمک…",
helping: (n) => `اکنون به ${n} نفر کمک می‌کنید.`,
error: "دسترسی به شبکهٔ ferry ممکن نیست؛ دوباره تلاش می‌شود…",
totals: (people, data) => `در این مرورگر: به ${people.text} نفر کمک شده، ${data.text} منتقل شده.`,
bytes: (n) => `${n} بایت`,
quota: (limit, time) => `سهمیهٔ امروز (${limit}) تمام شده است؛ کمک از ساعت ${time} دوباره آغاز می‌شود.`,
badSetting: (name) => `تنظیم ${name} این ابزارک نامعتبر است، پس نمی‌تواند شروع به کار کند.`,
note: "تا وقتی کلید روشن است این زبانه را باز نگه دارید. هیچ دادهٔ مرور شما به اشتراک گذاشته نمی‌شود: شما فقط ترافیک رمزنگاری‌شده‌ای را منتقل می‌کنید که نمی‌توانید بخوانید.",
metered: "خودکار روشن نشد: این دستگاه به اتصال حجمی یا کم‌مصرف وصل است. اگر باز هم می‌خواهید کمک کنید، کلید را روشن کنید.",
pairButton: "ساختن پیوند خصوصی",
pairStop: "توقف حالت خصوصی",
pairOn: (code) => `حالت خصوصی: فقط به کسانی که کد ${code} را دارند کمک می‌شود. این پیوند را با آنها به اشتراک بگذارید:`,
pairLink: "پیوند خصوصی",
},
ru: {
title: "Помогите людям обойти цензуру",
switchLabel: "Делиться моим подключением",
off: "Выключено. Включите переключатель, чтобы помочь.",
looking: "Включено: ищем, кому помочь…",
helping: (n) => `Сейчас вы помогаете: ${n}.`,
error: "Сеть ferry недоступна; повторяем попытку…",
totals: (people, data) =>
`В этом браузере: помогли ${people.text} ${people.plural === "one" ? "человеку" : "людям"}, ${data.plural === "one" ? "передан" : "передано"} ${data.text}.`,
bytes: (n, plural) => `${n} ${plural === "few" ? "байта" : "байт"}`,
quota: (limit, time) => `Дневной лимит (${limit}) исчерпан. Помощь возобновится в ${time}.`,
badSetting: (name) => `Настройка ${name} этого виджета неверна, поэтому он не может запуститься.`,
note: "Не закрывайте вкладку, пока переключатель включён. Данные о вашем просмотре не передаются: вы лишь пересылаете зашифрованный трафик, который не можете прочитать.",
metered: "Не включено автоматически: устройство подключено к лимитной или экономной сети. Включите переключатель, если всё же хотите помочь.",
pairButton: "Создать личную ссылку",
pairStop: "Выключить личный режим",
pairOn: (code) => `Личный режим: помощь получают только люди с вашим кодом ${code}. Отправьте им эту ссылку:`,
pairLink: "Личная ссылка",
},
es: {
title: "Ayuda a otras personas a esquivar la censura",
switchLabel: "Compartir mi conexión",
off: "Apagado. Activa el interruptor para ayudar.",
looking: "Activado: buscando a alguien a quien ayudar…",
helping: (n) => (n === 1 ? "Ayudando a 1 persona ahora." : `Ayudando a ${n} personas ahora.`),
error: "No se puede conectar con la red ferry; reintentando…",
totals: (people, data) =>
`En este navegador: ${people.text} ${people.plural === "one" ? "persona ayudada" : "personas ayudadas"}, ${data.text} ${data.plural === "one" ? "retransmitido" : "retransmitidos"}.`,
bytes: (n, plural) => `${n} ${plural === "one" ? "byte" : "bytes"}`,
quota: (limit, time) => `Se agotó el límite de hoy (${limit}). Volverás a ayudar a las ${time}.`,
badSetting: (name) => `La opción ${name} de este widget no es válida, así que no puede empezar.`,
note: "Mantén esta pestaña abierta mientras el interruptor esté activado. No se comparte ningún dato de tu navegación: solo retransmites tráfico cifrado que no puedes leer.",
metered: "No se activó solo: este dispositivo usa una conexión medida o de ahorro de datos. Activa el interruptor si aun así quieres ayudar.",
pairButton: "Crear un enlace privado",
pairStop: "Salir del modo privado",
pairOn: (code) => `Modo privado: solo se ayuda a quien tenga tu código ${code}. Comparte este enlace con esas personas:`,
pairLink: "Enlace privado",
},
};
const RIGHT_TO_LEFT = new Set(["fa"]);
function catalogueLanguage(tag) {
const lower = String(tag || "").toLowerCase();
if (lower.startsWith("zh")) {
return /^zh-(hant|tw|hk|mo)\b/.test(lower) ? "zh-Hant" : "zh-Hans";
}
const base = lower.split("-")[0];
return Object.hasOwn(MESSAGES, base) ? base : null;
}
function chooseLanguage(attribute) {
const wanted = attribute ? [attribute] : navigator.languages || [navigator.language];
for (const tag of wanted) {
const language = catalogueLanguage(tag);
if (language) return language;
}
return "en";
}
function formatBytes(bytes, language) {
const plurals = new Intl.PluralRules(language);
if (bytes < 1000) {
const text = MESSAGES[language].bytes(new Intl.NumberFormat(language).format(bytes), plurals.select(bytes));
return { text, plural: plurals.select(bytes) };
}
const units = ["kilobyte", "megabyte", "gigabyte", "terabyte", "petabyte"];
let unit = 0;
let value = Math.round(bytes / 100) / 10;
while (value >= 1000 && unit < units.length - 1) {
unit += 1;
value = Math.round(bytes / 1000 ** (unit + 1) * 10) / 10; // 999,950 bytes is "1 MB"
}
const format = { style: "unit", unit: units[unit], unitDisplay: "short", maximumFractionDigits: 1 };
return { text: new Intl.NumberFormat(language, format).format(value), plural: plurals.select(value) };
}
function formatCount(count, language) {
return { text: new Intl.NumberFormat(language).format(count), plural: new Intl.PluralRules(language).select(count) };
}
const SCRIPT_URL = document.currentScript ? document.currentScript.src : "";
const STORAGE = Object.freeze({
enabled: "ferry-widget.enabled",
totals: "ferry-widget.totals",
pairing: "ferry-widget.pairing",
volunteerId: "ferry-widget.volunteer-id",
quota: "ferry-widget.quota",
});
function storageGet(key) {
try {
return window.localStorage.getItem(key);
} catch {
return null; // storage blocked (sandboxed frame, privacy mode): remember nothing
}
}
function storageSet(key, value) {
try {
if (value === null) window.localStorage.removeItem(key);
else window.localStorage.setItem(key, value);
} catch {
}
}
const STYLE = `
:host { all: initial; display: block; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
--bg: #ffffff; --fg: #1a1a1a; --muted: #4d4d4d; --border: #c7c7c7; --accent: #0a6b4d; --track: #6b6b6b;
--knob: #ffffff; --focus: #1a56db; --link: #0b57d0; }
:host([data-theme="dark"]) { --bg: #17191e; --fg: #f2f2f2; --muted: #c9c9c9; --border: #4a4d55;
--accent: #4fd1a1; --track: #9a9a9a; --knob: #17191e; --focus: #8ab4ff; --link: #8ab4ff; }
@media (prefers-color-scheme: dark) {
:host([data-theme="auto"]), :host(:not([data-theme])) { --bg: #17191e; --fg: #f2f2f2; --muted: #c9c9c9;
  --border: #4a4d55; --accent: #4fd1a1; --track: #9a9a9a; --knob: #17191e; --focus: #8ab4ff; --link: #8ab4ff; }
}
.box { box-sizing: border-box; background: var(--bg); color: var(--fg); border: 1px solid var(--border);
border-radius: 10px; padding: 14px 16px; }
.panel { max-width: 24rem; }
.banner { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 20px; }
.banner .head { flex: 1 1 16rem; }
.banner .text { flex: 2 1 20rem; }
.head { display: flex; align-items: center; gap: 12px; }
.title { font-weight: 600; flex: 1; margin: 0; font-size: 1em; }
p { margin: 6px 0 0; }
.muted { color: var(--muted); font-size: 0.87em; }
.status { font-weight: 500; }
button { font: inherit; color: inherit; }
.switch { position: relative; flex: none; width: 52px; height: 30px; border-radius: 15px; border: 2px solid var(--track);
background: var(--track); cursor: pointer; padding: 0; }
.switch::after { content: ""; position: absolute; top: 2px; inset-inline-start: 2px; width: 22px; height: 22px;
border-radius: 50%; background: var(--knob); transition: inset-inline-start 0.15s; }
.switch[aria-checked="true"] { background: var(--accent); border-color: var(--accent); }
.switch[aria-checked="true"]::after { inset-inline-start: 24px; }
.switch:focus-visible, .pair:focus-visible, a:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.pair { margin-top: 8px; background: transparent; border: 1px solid var(--border); border-radius: 6px; padding: 3px 10px;
cursor: pointer; font-size: 0.87em; }
a { color: var(--link); word-break: break-all; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (prefers-reduced-motion: reduce) { .switch::after { transition: none; } }
`;
class FerryWidget extends HTMLElement {
static get observedAttributes() {
return ["data-lang", "data-layout"];
}
constructor() {
super();
this.attachShadow({ mode: "open" });
this.volunteer = null;
this.totals = { helped: 0, bytes: 0 };
this.meteredHold = false;
this.settingsError = null;
this.quotaSynced = null;
this.onPageHide = () => this.stopVolunteer();
this.onPageShow = (event) => {
if (event.persisted && storageGet(STORAGE.enabled) === "on" && !isMetered()) {
this.startVolunteer();
this.update();
}
};
}
connectedCallback() {
this.loadTotals();
this.render();
window.addEventListener("pagehide", this.onPageHide);
window.addEventListener("pageshow", this.onPageShow);
if (storageGet(STORAGE.enabled) === "on") {
if (isMetered()) this.meteredHold = true;
else this.startVolunteer();
}
this.update();
}
disconnectedCallback() {
window.removeEventListener("pagehide", this.onPageHide);
window.removeEventListener("pageshow", this.onPageShow);
this.stopVolunteer();
}
attributeChangedCallback() {
if (this.shadowRoot.firstChild) {
this.render();
this.update();
}
}
get broker() {
const broker = this.dataset.broker || (SCRIPT_URL ? new URL(SCRIPT_URL).origin : location.origin);
return new URL(broker, location.href).href;
}
get pairingCode() {
const fromAttribute = this.dataset.pairing;
if (fromAttribute && IDENTIFIER.test(fromAttribute)) return fromAttribute;
const stored = storageGet(STORAGE.pairing);
return stored && IDENTIFIER.test(stored) ? stored : null;
}
get status() {
const volunteer = this.volunteer;
return {
state: volunteer ? volunteer.state : "off",
helping: volunteer ? volunteer.helping : 0,
peopleHelped: this.totals.helped,
bytesRelayed: this.totals.bytes,
pairing: this.pairingCode,
meteredHold: this.meteredHold,
quotaReached: Boolean(volunteer && volunteer.quotaReached),
settingsError: this.settingsError,
egressRefused: volunteer ? volunteer.egressRefused : 0,
};
}
loadTotals() {
try {
const saved = JSON.parse(storageGet(STORAGE.totals) || "{}");
this.totals = {
helped: Number.isSafeInteger(saved.helped) ? saved.helped : 0,
bytes: Number.isSafeInteger(saved.bytes) ? saved.bytes : 0,
};
} catch {
this.totals = { helped: 0, bytes: 0 };
}
}
saveTotals() {
storageSet(STORAGE.totals, JSON.stringify(this.totals));
}
syncQuota() {
const volunteer = this.volunteer;
if (!volunteer || !volunteer.limits.quota) return;
const now = Date.now() / 1000;
const day = utcDay(now);
let stored = null;
try {
stored = JSON.parse(storageGet(STORAGE.quota) || "null");
} catch {
}
const base = stored && stored.day === day && Number.isSafeInteger(stored.used) ? stored.used : 0;
const synced = this.quotaSynced && this.quotaSynced.day === day ? this.quotaSynced.used : 0;
const used = base + Math.max(0, volunteer.limits.quotaUsed(now) - synced);
storageSet(STORAGE.quota, JSON.stringify({ day, used }));
volunteer.limits.restoreQuota(day, used);
this.quotaSynced = { day, used };
}
startVolunteer() {
if (this.volunteer) return;
this.meteredHold = false;
let settings;
try {
settings = volunteerSettings({ ...this.dataset, broker: this.broker, pairing: this.pairingCode }, location.hostname);
this.settingsError = null;
} catch (error) {
if (!(error instanceof LimitsError)) throw error;
this.settingsError = error.field;
console.error(`ferry-widget: ${error.message}`);
return;
}
let volunteerId = storageGet(STORAGE.volunteerId);
if (!volunteerId || !IDENTIFIER.test(volunteerId)) {
volunteerId = randomToken(24);
storageSet(STORAGE.volunteerId, volunteerId);
}
let unsaved = 0;
const volunteer = volunteerApi.create({ ...settings, volunteerId }, {
onChange: () => this.update(),
onQuotaReached: () => {
this.syncQuota();
this.saveTotals();
},
onHelped: () => {
this.totals.helped += 1;
this.saveTotals();
},
onRelayed: (bytes) => {
this.totals.bytes += bytes;
unsaved += bytes;
if (unsaved > 256 * 1024) {
unsaved = 0;
this.saveTotals();
this.syncQuota();
this.scheduleUpdate();
}
},
});
this.volunteer = volunteer;
this.quotaSynced = null;
this.syncQuota();
volunteer.start();
}
stopVolunteer() {
const volunteer = this.volunteer;
if (!volunteer) return;
this.syncQuota();
this.volunteer = null;
volunteer.stop();
this.saveTotals();
}
toggle() {
if (this.volunteer) {
storageSet(STORAGE.enabled, "off");
this.stopVolunteer();
} else {
storageSet(STORAGE.enabled, "on");
this.startVolunteer();
}
this.update();
}
togglePairing() {
const running = Boolean(this.volunteer);
if (this.pairingCode && !this.dataset.pairing) storageSet(STORAGE.pairing, null);
else if (!this.pairingCode) storageSet(STORAGE.pairing, randomToken(16));
if (running) {
this.stopVolunteer();
this.startVolunteer();
}
this.update();
}
get messages() {
return MESSAGES[chooseLanguage(this.dataset.lang)];
}
render() {
const language = chooseLanguage(this.dataset.lang);
const layout = this.dataset.layout === "banner" ? "banner" : "panel";
const root = this.shadowRoot;
root.replaceChildren();
const style = document.createElement("style");
style.textContent = STYLE;
const box = document.createElement("section");
box.className = `box ${layout}`;
box.lang = language;
box.dir = RIGHT_TO_LEFT.has(language) ? "rtl" : "ltr";
box.innerHTML = `
      <div class="head">
        <h2 class="title" id="title"></h2>
        <span class="visually-hidden" id="label"></span>
        <button class="switch" type="button" role="switch" aria-checked="false" aria-labelledby="label"
          aria-describedby="status"></button>
      </div>
      <div class="text">
        <p class="status" id="status" role="status" aria-live="polite"></p>
        <p class="totals muted"></p>
        <p class="metered muted" hidden></p>
        <p class="note muted"></p>
        <button class="pair" type="button"></button>
        <p class="pairing muted" hidden><span class="pairing-text"></span> <a class="pairing-link" target="_blank" rel="noopener noreferrer"></a></p>
      </div>`;
root.append(style, box);
const switchButton = root.querySelector(".switch");
switchButton.addEventListener("click", () => this.toggle());
root.querySelector(".pair").addEventListener("click", () => this.togglePairing());
}
scheduleUpdate() {
if (this.updateQueued) return;
this.updateQueued = true;
requestAnimationFrame(() => {
this.updateQueued = false;
this.update();
});
}
update() {
const root = this.shadowRoot;
if (!root.firstChild) return;
const text = this.messages;
const language = chooseLanguage(this.dataset.lang);
const status = this.status;
const on = Boolean(this.volunteer);
root.querySelector("#title").textContent = text.title;
root.querySelector("#label").textContent = text.switchLabel;
const switchButton = root.querySelector(".switch");
switchButton.setAttribute("aria-checked", String(on));
switchButton.title = text.switchLabel;
let line = text.off;
if (this.settingsError) line = text.badSetting(this.settingsError);
else if (status.state === "quota") {
const now = Date.now() / 1000;
const resume = new Date((utcDay(now) + 1) * SECONDS_PER_DAY * 1000);
const time = new Intl.DateTimeFormat(language, { hour: "numeric", minute: "2-digit" }).format(resume);
line = text.quota(formatBytes(this.volunteer.limits.quota, language).text, time);
} else if (status.state === "error") line = text.error;
else if (on && status.helping > 0) line = text.helping(status.helping);
else if (on) line = text.looking;
root.querySelector(".status").textContent = line;
root.querySelector(".totals").textContent = text.totals(
formatCount(this.totals.helped, language),
formatBytes(this.totals.bytes, language),
);
const metered = root.querySelector(".metered");
metered.hidden = !this.meteredHold;
metered.textContent = text.metered;
root.querySelector(".note").textContent = text.note;
const code = this.pairingCode;
const pairButton = root.querySelector(".pair");
pairButton.textContent = code ? text.pairStop : text.pairButton;
pairButton.hidden = Boolean(this.dataset.pairing);
const pairing = root.querySelector(".pairing");
pairing.hidden = !code;
if (code) {
const link = `${this.broker.replace(/\/+$/, "")}/#pairing=${code}`;
root.querySelector(".pairing-text").textContent = text.pairOn(code);
const anchor = root.querySelector(".pairing-link");
anchor.href = link;
anchor.textContent = link;
}
this.dispatchEvent(new CustomEvent("ferry-status", { detail: status }));
}
}
if (typeof customElements !== "undefined" && !customElements.get("ferry-widget")) {
FerryWidget.protocol = protocol;
FerryWidget.limits = limits;
FerryWidget.egressChoice = egressChoice;
FerryWidget.routeKey = routeKey;
FerryWidget.volunteer = volunteerApi;
FerryWidget.LIMITS = LIMITS;
FerryWidget.languages = Object.keys(MESSAGES);
customElements.define("ferry-widget", FerryWidget);
}
})();
