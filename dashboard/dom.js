// Small DOM helpers: build elements without innerHTML (no injection, CSP-friendly).

/**
 * h("td", {class: "num", dataset: {testid: "x"}, text: "1.2"}, child, ...)
 * Attributes: class, text, dataset, hidden, disabled, on<Event>, anything else as attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`missing element ${selector}`);
  return el;
}

export function byTestId(id, root = document) {
  return $(`[data-testid="${id}"]`, root);
}

/** Clone a <template>'s first element. */
export function fromTemplate(id) {
  const tpl = document.getElementById(id);
  return tpl.content.firstElementChild.cloneNode(true);
}

/** Milliseconds since the epoch from an ISO time (any fraction length) or unix seconds. */
export function parseTime(value) {
  if (value === null || value === undefined || value === "") return NaN;
  const text = String(value);
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  // Date.parse wants at most milliseconds: OANDA sends nanoseconds.
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

const pad = (n) => String(n).padStart(2, "0");

/** Local HH:MM:SS of an ISO time ("" when unknown). */
export function clock(value) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (!Number.isFinite(ms)) return "";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "2025-10-16 11:55:27" local, for tables. */
export function stamp(value) {
  const ms = parseTime(value);
  if (!Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ms)}`;
}

/** HH:MM:SS for today, "MM-DD HH:MM" before: short enough for a table cell. */
export function when(value, now = Date.now()) {
  const ms = parseTime(value);
  if (!Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  if (d.toDateString() === new Date(now).toDateString()) return clock(ms);
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ms).slice(0, 5)}`;
}

/** "3s ago", "4m ago", "2h ago". */
export function age(value, now = Date.now()) {
  const ms = parseTime(value);
  if (!Number.isFinite(ms)) return "—";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

/** Time left until an ISO time: "5h 59m", "12m", "40s", "due". */
export function until(value, now = Date.now()) {
  const ms = parseTime(value);
  if (!Number.isFinite(ms)) return "—";
  const s = Math.round((ms - now) / 1000);
  if (s <= 0) return "due";
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** A decimal string for display as given; a dash for missing values. */
export function show(value) {
  return value === null || value === undefined || value === "" ? "—" : String(value);
}
