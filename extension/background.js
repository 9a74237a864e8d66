/*
 * ferry extension: the service worker. It keeps the settings (chrome.storage.local), opens
 * the offscreen document that runs the widget's relay modules while the switch is on and
 * closes it when it is off, keeps the counts, and shows how many people are helped now on
 * the badge. It opens no connection itself (docs/extension.md).
 */
importScripts("build.js");

const OFFSCREEN = "offscreen.html";
const DEFAULTS = Object.freeze({
  enabled: false,
  broker: FERRY_BUILD.broker,
  capacity: "5",
  maxRate: "",
  quota: "",
  unmeteredOnly: false,
  pairing: "",
});
const SESSION_DEFAULTS = Object.freeze({ state: "off", helping: 0, helped: 0, bytes: 0, settingsError: null });

async function settings() {
  return { ...DEFAULTS, ...(await chrome.storage.local.get(Object.keys(DEFAULTS))) };
}

async function offscreenOpen() {
  const contexts = await chrome.runtime.getContexts({ contextTypes: ["OFFSCREEN_DOCUMENT"] });
  return contexts.length > 0;
}

let applying = Promise.resolve();

/** Closes the offscreen document, then opens it again when the switch is on: every change of
 * a setting restarts the volunteer with the new one. */
function apply() {
  applying = applying.then(async () => {
    if (await offscreenOpen()) await chrome.offscreen.closeDocument();
    const current = await settings();
    await chrome.storage.session.set({ state: current.enabled ? "starting" : "off", helping: 0 });
    await chrome.action.setBadgeText({ text: "" });
    if (!current.enabled) return;
    await chrome.offscreen.createDocument({
      url: OFFSCREEN,
      reasons: ["WEB_RTC"],
      justification: "relays WebRTC data channels for people facing censorship while the switch is on",
    });
  }).catch((error) => console.error(`ferry: ${error.message}`));
  return applying;
}

/** The settings the offscreen document starts with, a volunteer id, and today's quota count. */
async function startOptions() {
  const current = await settings();
  const { volunteerId = null, quotaUsed = null } = await chrome.storage.local.get(["volunteerId", "quotaUsed"]);
  return { settings: current, volunteerId, quotaUsed }; // without an id, the offscreen page makes one
}

let recording = Promise.resolve();

/** A status from the offscreen document: the state, the people helped now (the badge), and
 * what was relayed since its last status (added to this session's and all-time counts).
 * One at a time, since each adds to what the previous one wrote. */
function record(status) {
  recording = recording.then(() => write(status)).catch((error) => console.error(`ferry: ${error.message}`));
  return recording;
}

async function write(status) {
  const session = { ...SESSION_DEFAULTS, ...(await chrome.storage.session.get(Object.keys(SESSION_DEFAULTS))) };
  const { totals = { helped: 0, bytes: 0 } } = await chrome.storage.local.get("totals");
  session.helped += status.newlyHelped;
  session.bytes += status.newBytes;
  totals.helped += status.newlyHelped;
  totals.bytes += status.newBytes;
  const local = { totals };
  if (status.volunteerId) local.volunteerId = status.volunteerId;
  if (status.quotaUsed) local.quotaUsed = status.quotaUsed;
  await chrome.storage.local.set(local);
  await chrome.storage.session.set({
    ...session,
    state: status.state,
    helping: status.helping,
    settingsError: status.settingsError,
  });
  await chrome.action.setBadgeText({ text: status.helping > 0 ? String(status.helping) : "" });
}

chrome.runtime.onMessage.addListener((message, sender, reply) => {
  if (sender.id !== chrome.runtime.id) return false;
  if (message.type === "options") {
    startOptions().then(reply);
    return true;
  }
  if (message.type === "status") {
    record(message.status).then(() => reply(true));
    return true;
  }
  return false;
});

chrome.storage.onChanged.addListener((changes, area) => {
  if (area === "local" && Object.keys(changes).some((key) => Object.hasOwn(DEFAULTS, key))) apply();
});
chrome.runtime.onStartup.addListener(apply);
chrome.runtime.onInstalled.addListener(apply);
chrome.action.setBadgeBackgroundColor({ color: "#0a6b4d" });
