// The depth panel: the order book of the selected product as a ladder (best first),
// bids left and asks right, each level with a bar of the cumulative size up to it.
// Fed by the `book` envelopes of the live stream (SSE md.book.>, at most 4/s per
// product: the bus's Book, levels as [price, size]); drawn at most RENDER_MS apart.

import { clock, h, show } from "./dom.js";

const RENDER_MS = 250;

const LEVELS = 12;

function cumulative(levels) {
  let total = 0;
  return levels.map((lv) => {
    total += Number(lv.size) || 0;
    return total;
  });
}

function sizeText(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return show(value);
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(3) : n.toPrecision(3);
}

function bar(side, cum, max) {
  const el = h("span", { class: `depth-bar depth-bar-${side}`, "aria-hidden": "true" });
  el.style.width = `${max > 0 ? Math.round((cum / max) * 100) : 0}%`; // CSSOM: CSP-safe
  return el;
}

export class Depth {
  constructor(els, { levels = LEVELS } = {}) {
    this.els = els; // {body, title, note}
    this.levels = levels;
    this.target = null;
    this.latest = null;
    this.timer = 0;
  }

  /** Which product the panel shows (null: none); clears what it showed. */
  select(target) {
    this.target = target;
    this.latest = null;
    this.els.note.textContent = "";
    this.els.title.textContent = target ? `${target.symbol} · ${target.venue}` : "";
    this.message(target ? "Waiting for the book…" : "Select a symbol");
  }

  message(text) {
    this.els.body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 4, text })));
    this.els.body.closest("table").dataset.levels = "0";
  }

  /** A `book` payload from the stream: drawn when it is the selected product's. */
  book(p) {
    const t = this.target;
    if (!t || p.venue !== t.venue || p.symbol !== t.symbol) return;
    this.latest = p;
    if (this.timer) return;
    this.timer = window.setTimeout(() => {
      this.timer = 0;
      if (this.latest) this.render(this.latest);
    }, RENDER_MS);
  }

  /** A bus Book: {venue, symbol, bids: [[price, size], ...], asks, time, seq}. */
  render(book) {
    const level = (lv) => (Array.isArray(lv) ? { price: lv[0], size: lv[1] } : lv);
    const bids = (book.bids || []).slice(0, this.levels).map(level);
    const asks = (book.asks || []).slice(0, this.levels).map(level);
    const cb = cumulative(bids);
    const ca = cumulative(asks);
    const max = Math.max(cb[cb.length - 1] || 0, ca[ca.length - 1] || 0);
    const rows = [];
    for (let i = 0; i < Math.max(bids.length, asks.length); i++) {
      const b = bids[i];
      const a = asks[i];
      rows.push(
        h(
          "tr",
          { dataset: { testid: "depth-row" } },
          h("td", { class: "num depth-size" }, b ? bar("bid", cb[i], max) : null, b ? sizeText(b.size) : ""),
          h("td", { class: "num depth-bid", dataset: { testid: "depth-bid" }, text: b ? b.price : "" }),
          h("td", { class: "num depth-ask", dataset: { testid: "depth-ask" }, text: a ? a.price : "" }),
          h("td", { class: "num depth-size" }, a ? bar("ask", ca[i], max) : null, a ? sizeText(a.size) : ""),
        ),
      );
    }
    if (!rows.length) {
      this.message("The book is empty");
      return;
    }
    this.els.body.replaceChildren(...rows);
    this.els.body.closest("table").dataset.levels = String(rows.length);
    this.els.note.textContent = book.time ? `as of ${clock(book.time)}` : "";
  }
}
