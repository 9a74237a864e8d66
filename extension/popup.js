// --- the extension's popup: the widget's switch and texts, counts, settings ----------------
// Bundled after the widget's settings, messages, limits, egress, api and locale modules,
// inside their scope (scripts/build-extension): the texts, checks and number formats are
// the widget's own. It writes settings to chrome.storage.local; the service worker acts.

/** The popup's own texts, in every language of the widget's MESSAGES. */
const POPUP_TEXTS = {
  en: { session: "This session", allTime: "All time", people: (p) => `${p} helped`, note: "Relays while your browser runs, with no tab open. No browsing data is shared: you only pass on encrypted traffic you cannot read.", settings: "Settings", broker: "Broker URL", capacity: "People at once (1–50)", rate: "Rate cap (bytes per second, e.g. 2M; empty: none)", quota: "Daily quota (bytes, e.g. 1G; empty: none)", unmetered: "Only on unmetered connections", pairing: "Private pairing code (empty: help anyone)" },
  "zh-Hans": { session: "本次会话", allTime: "累计", people: (p) => `帮助 ${p} 人`, note: "浏览器运行时即可转发，无需打开标签页。不会共享任何浏览数据：你只转发你无法读取的加密流量。", settings: "设置", broker: "代理服务器网址", capacity: "同时帮助的人数（1–50）", rate: "速率上限（字节/秒，如 2M；留空：不限）", quota: "每日额度（字节，如 1G；留空：不限）", unmetered: "仅在不按流量计费的网络上", pairing: "私人配对代码（留空：帮助任何人）" },
  "zh-Hant": { session: "本次工作階段", allTime: "累計", people: (p) => `幫助 ${p} 人`, note: "瀏覽器執行時即可轉送，無需開啟分頁。不會分享任何瀏覽資料：你只轉送你無法讀取的加密流量。", settings: "設定", broker: "代理伺服器網址", capacity: "同時幫助的人數（1–50）", rate: "速率上限（位元組/秒，如 2M；留空：不限）", quota: "每日額度（位元組，如 1G；留空：不限）", unmetered: "僅在非計量網路上", pairing: "私人配對代碼（留空：幫助任何人）" },
  fa: { session: "این نشست", allTime: "از ابتدا", people: (p) => `کمک به ${p} نفر`, note: "تا وقتی مرورگر باز است، بدون هیچ زبانهٔ باز، ترافیک را منتقل می‌کند. هیچ دادهٔ مرور شما به اشتراک گذاشته نمی‌شود: شما فقط ترافیک رمزنگاری‌شده‌ای را منتقل می‌کنید که نمی‌توانید بخوانید.", settings: "تنظیمات", broker: "نشانی کارگزار", capacity: "تعداد افراد هم‌زمان (۱ تا ۵۰)", rate: "سقف سرعت (بایت بر ثانیه، مثلاً 2M؛ خالی: بدون سقف)", quota: "سهمیهٔ روزانه (بایت، مثلاً 1G؛ خالی: بدون سقف)", unmetered: "فقط روی اتصال‌های غیرحجمی", pairing: "کد جفت‌سازی خصوصی (خالی: کمک به همه)" },
  ru: { session: "Этот сеанс", allTime: "За всё время", people: (p) => `помогли: ${p}`, note: "Пересылает, пока работает браузер, без открытых вкладок. Данные о вашем просмотре не передаются: вы лишь пересылаете зашифрованный трафик, который не можете прочитать.", settings: "Настройки", broker: "Адрес брокера", capacity: "Людей одновременно (1–50)", rate: "Предел скорости (байт в секунду, напр. 2M; пусто: нет)", quota: "Дневной лимит (байт, напр. 1G; пусто: нет)", unmetered: "Только в безлимитных сетях", pairing: "Личный код (пусто: помогать всем)" },
  es: { session: "Esta sesión", allTime: "Desde el principio", people: (p) => `${p} ayudadas`, note: "Retransmite mientras el navegador está abierto, sin ninguna pestaña. No se comparte ningún dato de tu navegación: solo retransmites tráfico cifrado que no puedes leer.", settings: "Opciones", broker: "URL del broker", capacity: "Personas a la vez (1–50)", rate: "Límite de velocidad (bytes por segundo, p. ej. 2M; vacío: sin límite)", quota: "Cuota diaria (bytes, p. ej. 1G; vacío: sin límite)", unmetered: "Solo en conexiones no medidas", pairing: "Código privado de emparejamiento (vacío: ayudar a cualquiera)" },
};

/** The label of each setting, by the name the widget's checks give it. */
const LABELS = { broker: "broker-label", pairing: "pairing-label", "data-max-rate": "rate-label", "data-quota": "quota-label" };
const $ = (id) => document.getElementById(id);
const form = $("form");
const language = chooseLanguage(new URLSearchParams(location.search).get("lang") || navigator.language);
const text = MESSAGES[language];
const own = POPUP_TEXTS[language];

/** The form's values checked with the widget's limits; throws LimitsError naming a field. */
function checked() {
  const values = Object.fromEntries(["broker", "capacity", "maxRate", "quota", "pairing"].map((name) => [name, form.elements[name].value.trim()]));
  try {
    new URL(values.broker);
  } catch {
    throw new LimitsError("not a URL", "broker");
  }
  if (values.pairing && !IDENTIFIER.test(values.pairing)) throw new LimitsError("bad pairing code", "pairing");
  const data = { broker: values.broker, capacity: values.capacity };
  if (values.maxRate) data.maxRate = values.maxRate;
  if (values.quota) data.quota = values.quota;
  volunteerSettings(data, new URL(values.broker).hostname);
  return { ...values, unmeteredOnly: form.elements.unmeteredOnly.checked };
}

async function save() {
  let values;
  try {
    values = checked();
  } catch (error) {
    if (!(error instanceof LimitsError)) throw error;
    $("error").textContent = text.badSetting($(LABELS[error.field] || "capacity-label").textContent);
    return;
  }
  $("error").textContent = "";
  await chrome.storage.local.set(values);
}

function texts() {
  const box = $("box");
  document.documentElement.lang = language;
  document.documentElement.dir = RIGHT_TO_LEFT.has(language) ? "rtl" : "ltr";
  box.lang = language;
  $("title").textContent = text.title;
  $("label").textContent = text.switchLabel;
  $("switch").title = text.switchLabel;
  $("note").textContent = own.note;
  $("settings-title").textContent = own.settings;
  for (const name of ["broker", "capacity", "rate", "quota", "unmetered", "pairing"]) $(`${name}-label`).textContent = own[name];
}

/** The status line, as the widget words it. */
function statusLine(session, settings) {
  if (session.settingsError) return text.badSetting(session.settingsError);
  if (!settings.enabled) return text.off;
  if (session.state === "metered") return text.metered;
  if (session.state === "error") return text.error;
  if (session.state === "quota") {
    const resume = new Date((utcDay(Date.now() / 1000) + 1) * 86400000);
    const time = new Intl.DateTimeFormat(language, { hour: "numeric", minute: "2-digit" }).format(resume);
    return text.quota(formatBytes(parseByteCount(settings.quota), language).text, time);
  }
  return session.helping > 0 ? text.helping(session.helping) : text.looking;
}

const counts = (label, helped, bytes) =>
  `${label}: ${own.people(formatCount(helped, language).text)}, ${formatBytes(bytes, language).text}`;

async function show() {
  const settings = { enabled: false, broker: FERRY_BUILD.broker, capacity: "5", maxRate: "", quota: "", unmeteredOnly: false, pairing: "", ...(await chrome.storage.local.get()) };
  const session = { state: "off", helping: 0, helped: 0, bytes: 0, settingsError: null, ...(await chrome.storage.session.get()) };
  const totals = settings.totals || { helped: 0, bytes: 0 };
  $("switch").setAttribute("aria-checked", String(Boolean(settings.enabled)));
  $("status").textContent = statusLine(session, settings);
  $("session").textContent = counts(own.session, session.helped, session.bytes);
  $("all-time").textContent = counts(own.allTime, totals.helped, totals.bytes);
  $("pair").textContent = settings.pairing ? text.pairStop : text.pairButton;
  // the widget's private link: the broker's page with the code, for the people to help
  $("pairing").hidden = !settings.pairing;
  if (settings.pairing) {
    const link = `${settings.broker.replace(/\/+$/, "")}/#pairing=${settings.pairing}`;
    $("pairing-text").textContent = text.pairOn(settings.pairing);
    $("pairing-link").href = link;
    $("pairing-link").textContent = link;
  }
  for (const name of ["broker", "capacity", "maxRate", "quota", "pairing"]) {
    if (document.activeElement !== form.elements[name]) form.elements[name].value = settings[name];
  }
  form.elements.unmeteredOnly.checked = Boolean(settings.unmeteredOnly);
}

texts();
show();
$("switch").addEventListener("click", async () => {
  const { enabled = false } = await chrome.storage.local.get("enabled");
  await chrome.storage.local.set({ enabled: !enabled });
});
form.addEventListener("change", save);
form.addEventListener("submit", (event) => (event.preventDefault(), save()));
$("pair").addEventListener("click", async () => {
  form.elements.pairing.value = form.elements.pairing.value ? "" : volunteerApi.newPairingCode();
  await save();
});
chrome.storage.onChanged.addListener(() => show());
