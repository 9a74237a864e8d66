// --- protocol: strict decoding, exactly as src/ferry/core/broker_messages.py ------------

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

/** A JSON number as written: an integer (1) or not (1.0, 1e0), which Python tells apart. */
class JsonNumber {
  constructor(text, value) {
    this.isInteger = /^-?(0|[1-9][0-9]*)$/.test(text);
    this.value = value;
  }
}

const codePoints = (text) => Array.from(text);
const fieldName = (key) => codePoints(key).slice(0, 64).join("");
const notJson = (why) => new MessageError(`the body is not valid JSON (${why})`, null, "not_json");

/** JSON.parse, then what Python's json.loads (with the decoder's hooks) sees differently:
 * - a number keeps its source text (the reviver's ``context.source``): "1.0" is a float in
 *   Python, so not an integer field; a browser without source access takes 1.0 for 1;
 * - a key given twice in one object is refused (JSON.parse keeps the last silently), found
 *   by ``repeatedKeys``; objects become Maps (Object.entries puts keys that look like array
 *   indexes first, so with several unknown fields another may be named first than in Python);
 * - NaN, Infinity, trailing data and a BOM are refused by JSON.parse itself, as by Python. */
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

/** Throws "duplicate_field" for the first object (in the order objects close, as Python's
 * object_pairs_hook sees them) that gives a key twice, and "not_json" past MAX_JSON_DEPTH
 * nested objects and arrays. ``text`` is valid JSON: strings are skipped whole, so a brace
 * in one is not counted, and a string followed by ":" is a key. */
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

/** Python's urlsplit(value) and .port, reduced to what check_egress_url looks at. */
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

// --- ICE servers: exactly src/ferry/core/ice_servers.py (RFC 7064/7065 URLs) ----------

const MAX_ICE_URL_LENGTH = 256;
const MAX_ICE_CREDENTIAL_LENGTH = 256;
const MAX_ICE_SERVERS = 8;
const MIN_ICE_TTL = 1;
const MAX_ICE_TTL = 86400;
const ICE_URL = /^(stuns?|turns?):(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::([0-9]{1,5}))?(?:\?transport=(udp|tcp))?$/;
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
const DEFAULT_ICE_PORTS = Object.freeze({ stun: 3478, stuns: 5349, turn: 3478, turns: 5349 });

/** An ICE server breaks a rule of ice_servers.py; ``reason`` is "bad_url" or "bad_credentials". */
class IceServerError extends Error {
  constructor(message, reason) {
    super(message);
    this.reason = reason;
  }
}

/** Whether Python's ipaddress.IPv6Address accepts ``text`` (its algorithm, step by step:
 * 1-4 hex digits a group, at most one "::", an optional dotted IPv4 last; no zone, which
 * the URL grammar cannot carry anyway). */
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

/** A host name of ice_servers.py: an IPv4 address, or DNS labels (an optional final dot)
 * whose last label is not all digits ("1.2.3" and "300.1.1.1" are numbers, not names). */
function isIceHostName(host) {
  if (isIpv4(host)) return true;
  const labels = (host.endsWith(".") ? host.slice(0, -1) : host).split(".");
  if (host.length > 253 || !labels.every((label) => DNS_LABEL.test(label))) return false;
  return !/^[0-9]+$/.test(labels[labels.length - 1]);
}

const quoted = (text) => JSON.stringify(codePoints(text).slice(0, 80).join(""));

/** parse_url: ``{scheme, host, port, transport, isTurn}`` of a STUN or TURN URL; throws
 * IceServerError("bad_url"). */
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

/** IceServer's checks: the URL, then credentials (both or neither, only for TURN, 1-256
 * printable ASCII characters each); throws IceServerError. */
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

/** One entry of an ``ice_servers`` list, named ``name`` (ice_servers.0) in errors. */
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

/** An ``ice_servers`` list (docs/protocol.md §2.10): at most 8 entries. */
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

/** An optional field among ``choices`` (docs/protocol.md §2.1, §2.2); left out: "unknown". */
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
    // as in Python, the ICE servers are checked before the match
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

/** Decodes ``bytes`` (a Uint8Array) as the message ``name``; throws MessageError. */
function decode(name, bytes) {
  return DECODERS[name](bytes);
}

/** The body of a volunteer poll or answer (docs/protocol.md §2.2, §2.3). */
function encodeRequest(fields) {
  return JSON.stringify({ version: 1, ...fields }).replace(
    /[\u007f-\uffff]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}

const protocol = Object.freeze({ decode, encodeRequest, MessageError, checkEgressUrl });
