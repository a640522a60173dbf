// The live prices table: symbol, venue, bid, ask, spread and the last tick's direction.
// Quotes are kept at once; the table is redrawn at most once per animation frame.

import { add, cmp, sub } from "./decimal.js";
import { h, parseTime, show } from "./dom.js";

const ARROWS = { up: ["▲", "up"], down: ["▼", "down"], flat: ["•", "unchanged"] };

export const key = (venue, symbol) => `${venue}:${symbol}`;

export class Prices {
  constructor(tbody, { onSelect }) {
    this.tbody = tbody;
    this.onSelect = onSelect;
    this.quotes = new Map(); // key -> {venue, symbol, bid, ask, time, dir, tradeable}
    this.rows = new Map(); // key -> {tr, bid, ask, spread, dir, button}
    this.dirty = new Set();
    this.frame = 0;
    this.selected = null;
    this.reset();
  }

  reset() {
    this.quotes.clear();
    this.rows.clear();
    this.dirty.clear();
    this.tbody.replaceChildren(this.emptyRow());
  }

  emptyRow() {
    return h("tr", { class: "empty" }, h("td", { colspan: 5, text: "Waiting for prices…" }));
  }

  /** GET /prices rows: [{venue, symbol, bid, ask, time}] */
  setSnapshot(list) {
    for (const p of list) this.update(p);
  }

  /** A tick payload (or a snapshot row). Returns the stored quote. */
  update(p) {
    const k = key(p.venue, p.symbol);
    const prev = this.quotes.get(k);
    if (prev && parseTime(p.time) < parseTime(prev.time)) return prev; // older than what we show
    let dir = prev?.dir || "flat";
    const mid2 = p.bid != null && p.ask != null ? add(p.bid, p.ask) : null;
    if (prev?.mid2 != null && mid2 != null) {
      const c = cmp(mid2, prev.mid2);
      if (c > 0) dir = "up";
      else if (c < 0) dir = "down";
    }
    const q = {
      venue: p.venue,
      symbol: p.symbol,
      bid: p.bid ?? null,
      ask: p.ask ?? null,
      time: p.time,
      tradeable: p.tradeable !== false,
      mid2,
      dir,
    };
    this.quotes.set(k, q);
    this.dirty.add(k);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
    return q;
  }

  quote(venue, symbol) {
    return this.quotes.get(key(venue, symbol)) || null;
  }

  symbols(venue) {
    return [...this.quotes.values()].filter((q) => q.venue === venue).map((q) => q.symbol).sort();
  }

  flush() {
    this.frame = 0;
    for (const k of this.dirty) this.render(k);
    this.dirty.clear();
  }

  render(k) {
    const q = this.quotes.get(k);
    let row = this.rows.get(k);
    if (!row) row = this.addRow(q);
    row.bid.textContent = show(q.bid);
    row.ask.textContent = show(q.ask);
    row.spread.textContent = q.bid != null && q.ask != null ? sub(q.ask, q.bid) : "—";
    const [arrow, label] = ARROWS[q.dir];
    row.dir.textContent = arrow;
    row.dir.setAttribute("aria-label", label);
    row.tr.dataset.dir = q.dir;
    row.tr.classList.toggle("untradeable", !q.tradeable);
    row.tr.title = q.tradeable ? "" : "market closed / not tradeable";
  }

  addRow(q) {
    this.tbody.querySelector("tr.empty")?.remove();
    const k = key(q.venue, q.symbol);
    const button = h("button", {
      type: "button",
      class: "sym",
      "aria-pressed": "false",
      dataset: { testid: "price-select" },
      text: q.symbol,
      onclick: () => this.onSelect(q.venue, q.symbol),
    });
    const cell = (testid) => h("td", { class: "num", dataset: { testid } });
    const row = {
      button,
      bid: cell("price-bid"),
      ask: cell("price-ask"),
      spread: cell("price-spread"),
      dir: h("span", { class: "dir", dataset: { testid: "price-dir" }, role: "img" }),
    };
    row.tr = h(
      "tr",
      { dataset: { testid: "price-row", venue: q.venue, symbol: q.symbol } },
      h("th", { scope: "row" }, button, h("span", { class: `venue venue-${q.venue}`, text: q.venue })),
      row.bid,
      row.ask,
      row.spread,
      h("td", { class: "dir-cell" }, row.dir),
    );
    // keep rows ordered by venue then symbol
    const after = [...this.rows.entries()]
      .filter(([other]) => other > k)
      .sort(([a], [b]) => (a < b ? -1 : 1))[0];
    this.tbody.insertBefore(row.tr, after ? after[1].tr : null);
    this.rows.set(k, row);
    this.markSelected(row, k);
    return row;
  }

  select(venue, symbol) {
    this.selected = key(venue, symbol);
    for (const [k, row] of this.rows) this.markSelected(row, k);
  }

  markSelected(row, k) {
    const on = k === this.selected;
    row.button.setAttribute("aria-pressed", on ? "true" : "false");
    row.tr.classList.toggle("selected", on);
  }
}
