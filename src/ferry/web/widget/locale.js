// --- locale: the texts in every language the widget speaks, and number formats ----------

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

/** The catalogue language for a BCP 47 tag, or null. */
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

/** ``{text, plural}``: "0 bytes", "1 byte", "999 bytes", "1.2 kB", "3.5 MB" (powers of
 * 1000, one decimal) in ``language``, and the plural category of the number shown. */
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

/** ``{text, plural}`` for a count of people. */
function formatCount(count, language) {
  return { text: new Intl.NumberFormat(language).format(count), plural: new Intl.PluralRules(language).select(count) };
}
