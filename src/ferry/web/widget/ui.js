// --- the element: <ferry-widget>, its switch, texts and localStorage --------------------

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
    /* storage blocked: the choice lasts for this page only */
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
      // back from the back/forward cache: resume if the visitor had it on
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

  /** The broker: data-broker, else where widget.js came from. */
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

  /** What the widget is doing now (also sent as the "ferry-status" event). */
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

  /** Adds this page's bytes counted towards today's quota to the browser's count in
   * localStorage (which other tabs add theirs to) and gives the limiter that total. */
  syncQuota() {
    const volunteer = this.volunteer;
    if (!volunteer || !volunteer.limits.quota) return;
    const now = Date.now() / 1000;
    const day = utcDay(now);
    let stored = null;
    try {
      stored = JSON.parse(storageGet(STORAGE.quota) || "null");
    } catch {
      /* unreadable: start from this page's count */
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
