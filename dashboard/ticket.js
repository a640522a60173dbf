// The order ticket (traders and admins only): inline validation, side-aware hints,
// the server's verdict (accepted id, or its rejection code and message) shown inline.

import { post } from "./api.js";
import { cmp, isDecimal } from "./decimal.js";

// symbols and ids: the server's token rule, from GET /meta (token_pattern)
let TOKEN_RE = /^[^\s.*>]{1,64}$/; // until /meta answers: at least nothing a subject forbids

export function setTokenPattern(pattern) {
  if (typeof pattern === "string" && pattern) TOKEN_RE = new RegExp(pattern);
}
const INT_RE = /^\d+$/;
const POSITIVE_RE = /^\d+(\.\d+)?$/;

// server field names (OANDA and Coinbase bodies) -> ticket fields
const LOC_FIELD = {
  instrument: "symbol",
  product_id: "symbol",
  units: "qty",
  size: "qty",
  entry_price: "price",
  limit_price: "price",
  stop_loss_price: "sl",
  take_profit_price: "tp",
  quality_score: "quality",
  ttl_minutes: "ttl",
  side: "side",
  order_type: "order_type",
};
const CODE_FIELDS = {
  quality_too_low: ["quality"],
  oco_wrong_side: ["sl", "tp"],
  oco_required: ["sl", "tp"],
  stale_price: ["price"],
};
const FIELDS = ["symbol", "qty", "price", "sl", "tp", "quality", "ttl"];

function newClientOrderId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const positive = (v) => POSITIVE_RE.test(v) && cmp(v, "0") > 0;

export class Ticket {
  constructor(form, { prices, onPlaced }) {
    this.form = form;
    this.prices = prices;
    this.onPlaced = onPlaced;
    this.touched = new Set();
    this.busy = false;
    this.el = (name) => form.querySelector(`[data-testid="ticket-${name}"]`);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    form.addEventListener("input", (e) => this.changed(e.target));
    form.addEventListener("change", (e) => this.changed(e.target));
    form.addEventListener("focusout", (e) => {
      if (e.target.name) {
        this.touched.add(e.target.name);
        this.check();
      }
    });
    this.el("market-fill").addEventListener("click", () => this.fillMarket());
    this.venueChanged();
  }

  value(name) {
    const field = this.form.elements.namedItem(name);
    return field ? String(field.value).trim() : "";
  }

  get venue() {
    return this.value("venue");
  }

  get side() {
    return this.value("side");
  }

  get orderType() {
    return this.value("order_type");
  }

  changed(target) {
    if (target.name === "venue") this.venueChanged();
    if (target.name === "venue" || target.name === "symbol") this.fillSymbols();
    this.clearServer();
    this.updateLabels();
    this.check();
  }

  /** Follow the chart's selection (only when it is this venue's symbol or the ticket is empty). */
  setSymbol(venue, symbol) {
    const venueField = this.form.elements.namedItem("venue");
    if (venueField.value !== venue) {
      venueField.value = venue;
      this.venueChanged();
    }
    this.form.elements.namedItem("symbol").value = symbol;
    this.fillSymbols();
    this.updateLabels();
    this.check();
  }

  venueChanged() {
    const oanda = this.venue === "oanda";
    this.el("qty-label").textContent = oanda ? "Units" : "Size";
    this.form.elements.namedItem("qty").setAttribute("inputmode", oanda ? "numeric" : "decimal");
    this.el("quality-label").textContent = oanda ? "Quality score" : "Quality score (optional)";
    this.form.elements.namedItem("quality").required = oanda;
    this.fillSymbols();
    this.updateLabels();
  }

  fillSymbols() {
    const list = this.el("symbols");
    const names = this.prices.symbols(this.venue);
    if (list.dataset.names !== names.join(",")) {
      list.dataset.names = names.join(",");
      list.replaceChildren(...names.map((n) => new Option(n, n)));
    }
  }

  /** The price the side-aware check compares with: the entered price, else the live quote. */
  reference() {
    const price = this.value("price");
    if (this.priceUsed() && isDecimal(price) && positive(price)) {
      return { value: price, what: this.orderType === "LIMIT" ? "limit" : "entry" };
    }
    const q = this.prices.quote(this.venue, this.value("symbol"));
    if (!q) return null;
    const buy = this.side === "BUY";
    const v = buy ? q.ask : q.bid;
    return v ? { value: v, what: buy ? "ask" : "bid" } : null;
  }

  /** OANDA takes an entry_price (the level of a LIMIT, optional for MARKET); Coinbase a limit_price. */
  priceUsed() {
    return this.venue === "oanda" || this.orderType === "LIMIT";
  }

  priceRequired() {
    return this.orderType === "LIMIT";
  }

  updateLabels() {
    const limit = this.orderType === "LIMIT";
    const usesPrice = this.priceUsed();
    this.el("price-field").hidden = !usesPrice;
    this.el("price-label").textContent = limit ? "Limit price" : "Entry price (optional)";
    this.form.elements.namedItem("price").required = usesPrice && this.priceRequired();
    const buy = this.side === "BUY";
    const submit = this.el("submit");
    if (!this.busy) submit.textContent = `Place ${this.side} order`;
    submit.classList.toggle("buy", buy);
    submit.classList.toggle("sell", !buy);
    this.updateHint();
  }

  /** Called on ticks: keep the side-aware hint current. */
  updateHint() {
    const ref = this.reference();
    const at = ref ? `${ref.value} (${ref.what})` : "price";
    const text = this.side === "BUY" ? `BUY: SL < ${at} < TP` : `SELL: TP < ${at} < SL`;
    const hint = this.el("hint");
    if (hint.textContent !== text) hint.textContent = text;
  }

  onTick(p) {
    if (p.venue === this.venue && p.symbol === this.value("symbol")) this.updateHint();
  }

  fillMarket() {
    const q = this.prices.quote(this.venue, this.value("symbol"));
    const v = q ? (this.side === "BUY" ? q.ask : q.bid) : null;
    if (v) {
      this.form.elements.namedItem("price").value = v;
      this.touched.add("price");
      this.changed(this.form.elements.namedItem("price"));
    } else {
      this.showError("price", "no live price for this symbol yet");
    }
  }

  /** {field: message} for the current values. */
  errors() {
    const e = {};
    const oanda = this.venue === "oanda";
    const symbol = this.value("symbol");
    const qty = this.value("qty");
    const price = this.value("price");
    const sl = this.value("sl");
    const tp = this.value("tp");
    const quality = this.value("quality");
    const ttl = this.value("ttl");
    if (!symbol) e.symbol = "required";
    else if (!TOKEN_RE.test(symbol)) e.symbol = "letters, digits, _ and - only";
    if (!qty) e.qty = "required";
    else if (oanda && !(INT_RE.test(qty) && cmp(qty, "0") > 0)) e.qty = "whole units above 0";
    else if (!positive(qty)) e.qty = "a number above 0";
    if (this.priceUsed()) {
      if (!price) {
        if (this.priceRequired()) e.price = "required for a LIMIT order";
      } else if (!positive(price)) e.price = "a price above 0";
    }
    if (!sl) e.sl = "stop-loss is required (OCO)";
    else if (!positive(sl)) e.sl = "a price above 0";
    if (!tp) e.tp = "take-profit is required (OCO)";
    else if (!positive(tp)) e.tp = "a price above 0";
    if (!quality) {
      if (oanda) e.quality = "required";
    } else if (!POSITIVE_RE.test(quality) || cmp(quality, "100") > 0) {
      e.quality = "a score from 0 to 100";
    }
    if (ttl && !(INT_RE.test(ttl) && cmp(ttl, "0") > 0)) e.ttl = "whole minutes above 0";
    if (!e.sl && !e.tp) {
      const buy = this.side === "BUY";
      const ref = this.reference();
      const below = buy ? "sl" : "tp";
      const above = buy ? "tp" : "sl";
      const lo = buy ? sl : tp;
      const hi = buy ? tp : sl;
      const name = { sl: "stop-loss", tp: "take-profit" };
      if (cmp(lo, hi) >= 0) {
        e[below] = `${this.side}: ${name[below]} must be below the ${name[above]}`;
      } else if (ref && cmp(lo, ref.value) >= 0) {
        e[below] = `${this.side}: ${name[below]} must be below ${ref.value} (${ref.what})`;
      } else if (ref && cmp(hi, ref.value) <= 0) {
        e[above] = `${this.side}: ${name[above]} must be above ${ref.value} (${ref.what})`;
      }
    }
    return e;
  }

  /** Show errors for touched fields (all fields when `all`). Returns true when valid. */
  check(all = false) {
    const errors = this.errors();
    for (const name of FIELDS) {
      const show = all || this.touched.has(name);
      this.showError(name, show ? errors[name] : null);
    }
    return Object.keys(errors).length === 0;
  }

  showError(name, message) {
    const input = this.form.elements.namedItem(name);
    const out = this.el(`${name}-error`);
    if (!input || !out) return;
    out.textContent = message || "";
    out.hidden = !message;
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }

  body() {
    const oanda = this.venue === "oanda";
    const quality = this.value("quality");
    const b = oanda
      ? {
          instrument: this.value("symbol"),
          side: this.side,
          units: Number(this.value("qty")),
          order_type: this.orderType,
        }
      : {
          product_id: this.value("symbol"),
          side: this.side,
          order_type: this.orderType,
          size: this.value("qty"),
        };
    if (oanda && this.value("price")) b.entry_price = this.value("price");
    if (!oanda && this.orderType === "LIMIT") b.limit_price = this.value("price");
    b.stop_loss_price = this.value("sl");
    b.take_profit_price = this.value("tp");
    if (quality) b.quality_score = Number(quality);
    if (this.value("ttl")) b.ttl_minutes = Number(this.value("ttl"));
    b.client_order_id = newClientOrderId();
    return b;
  }

  clearServer() {
    const err = this.el("error");
    err.hidden = true;
    err.textContent = "";
    delete err.dataset.code;
  }

  async submit() {
    if (this.busy) return;
    this.clearServer();
    this.el("result").textContent = "";
    FIELDS.forEach((f) => this.touched.add(f));
    if (!this.check(true)) {
      this.form.querySelector('[aria-invalid="true"]')?.focus();
      return;
    }
    const path = this.venue === "oanda" ? "/brokers/oanda/orders" : "/brokers/coinbase-adv/orders";
    const submit = this.el("submit");
    this.busy = true;
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    submit.textContent = "Placing…";
    try {
      const res = await post(path, this.body());
      this.el("result").textContent =
        `✓ Accepted ${res.order_id} · ${res.status || "PENDING"} · ${res.mode || "paper"}`;
      this.onPlaced?.(res);
    } catch (err) {
      this.showServerError(err);
    } finally {
      this.busy = false;
      submit.disabled = false;
      submit.removeAttribute("aria-busy");
      this.updateLabels();
    }
  }

  showServerError(err) {
    const box = this.el("error");
    box.dataset.code = err.code || "error";
    box.textContent = `${err.message}${err.code ? ` (${err.code})` : ""}`;
    box.hidden = false;
    if (Array.isArray(err.detail)) {
      for (const d of err.detail) {
        const loc = Array.isArray(d.loc) ? d.loc[d.loc.length - 1] : null;
        const field = LOC_FIELD[loc];
        if (field) this.showError(field, d.msg || "invalid");
      }
    }
    for (const field of CODE_FIELDS[err.code] || []) {
      const input = this.form.elements.namedItem(field);
      if (input) input.setAttribute("aria-invalid", "true");
    }
  }
}
