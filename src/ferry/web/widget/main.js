// --- main: the element's parts for tests and pages, and its definition (once per page) ---

if (typeof customElements !== "undefined" && !customElements.get("ferry-widget")) {
  FerryWidget.protocol = protocol;
  FerryWidget.limits = limits;
  FerryWidget.egressChoice = egressChoice;
  FerryWidget.volunteer = volunteerApi;
  FerryWidget.LIMITS = LIMITS;
  FerryWidget.languages = Object.keys(MESSAGES);
  customElements.define("ferry-widget", FerryWidget);
}
