// Account summary and the order tables: pending orders, open positions (unrealized
// P&L moved by ticks), closed trades. Cancel / close buttons exist only for traders.

import { add, mul, round, sign, signed, sub, sum } from "./decimal.js";
import { h, show, stamp, until, when } from "./dom.js";

const quoteCurrency = (symbol) => String(symbol).split(/[_-]/).pop();

/** Unrealized P&L of a position at a quote, in the symbol's quote currency (exact), or null. */
export function unrealized(pos, quote) {
  if (!quote) return null;
  const mark = pos.side === "BUY" ? quote.bid : quote.ask;
  if (!mark || !pos.entry_price || !pos.qty) return null;
  const diff = pos.side === "BUY" ? sub(mark, pos.entry_price) : sub(pos.entry_price, mark);
  return diff === null ? null : { mark, pnl: mul(diff, pos.qty) };
}

function pnlCell(value, currency, testid) {
  const s = value === null || value === undefined ? 0 : sign(value);
  return h("td", {
    class: `num pnl ${s > 0 ? "pos" : s < 0 ? "neg" : ""}`,
    dataset: { testid },
    text: value === null || value === undefined ? "—" : `${signed(value, 2)} ${currency || ""}`.trim(),
  });
}

function sideCell(side) {
  return h("td", {}, h("span", { class: `side side-${String(side).toLowerCase()}`, text: side }));
}

const REASONS = {
  TAKE_PROFIT_ORDER: "take-profit",
  STOP_LOSS_ORDER: "stop-loss",
  TIME_IN_FORCE_EXPIRED: "time limit",
  CLIENT_REQUEST: "closed by user",
};

function symbolCell(symbol, id, title) {
  return h("th", { scope: "row", title }, symbol, h("span", { class: "sub mono", text: id }));
}

function levelsCell(sl, tp) {
  return h("td", { class: "num levels", title: "stop-loss / take-profit" }, `${show(sl)} / ${show(tp)}`);
}

function emptyRow(cols, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: cols, text }));
}

function actionButton(label, aria, testid, onClick) {
  const b = h("button", {
    type: "button",
    class: "btn btn-small btn-danger-ghost",
    "aria-label": aria,
    dataset: { testid },
    text: label,
  });
  b.addEventListener("click", async () => {
    b.disabled = true;
    b.textContent = "…";
    try {
      await onClick();
    } finally {
      if (b.isConnected) {
        b.disabled = false;
        b.textContent = label;
      }
    }
  });
  return b;
}

export class Tables {
  /**
   * els: {pending, positions, closed} tbody elements, {pendingCount, positionsCount, closedCount}
   * opts: {canTrade, onCancel(id), onClose(id), quote(venue, symbol)}
   */
  constructor(els, opts) {
    this.els = els;
    this.opts = opts;
    this.positions = [];
    this.positionCells = new Map(); // order_id -> {mark, pnl}
    this.account = null;
    this.accountEls = els.account;
  }

  setCanTrade(canTrade) {
    this.opts.canTrade = canTrade;
    for (const th of document.querySelectorAll(".col-action")) th.hidden = !canTrade;
  }

  renderPending(orders) {
    this.els.pendingCount.textContent = String(orders.length);
    if (!orders.length) {
      this.els.pending.replaceChildren(emptyRow(7, "No pending orders"));
      return;
    }
    const rows = orders.map((o) => {
      const price = o.limit_price ?? o.entry_price;
      const type = o.order_type === "LIMIT" && price ? `LIMIT @ ${price}` : o.order_type || "—";
      return h(
        "tr",
        { dataset: { testid: "pending-row", orderId: o.id } },
        symbolCell(o.symbol, o.id, `created ${stamp(o.created_at)}`),
        sideCell(o.side),
        h("td", { class: "num", text: show(o.qty) }),
        h("td", { class: "mono", text: type }),
        levelsCell(o.stop_loss, o.take_profit),
        h("td", { class: "time", text: until(o.expires_at), title: stamp(o.expires_at) }),
        this.actionCell("Cancel", `Cancel order ${o.id}`, "cancel-button", () => this.opts.onCancel(o.id)),
      );
    });
    this.els.pending.replaceChildren(...rows);
  }

  actionCell(label, aria, testid, onClick) {
    if (!this.opts.canTrade) return null; // viewers get no buttons at all
    return h("td", { class: "col-action" }, actionButton(label, aria, testid, onClick));
  }

  renderPositions(positions) {
    this.positions = positions;
    this.positionCells.clear();
    this.els.positionsCount.textContent = String(positions.length);
    if (!positions.length) {
      this.els.positions.replaceChildren(emptyRow(8, "No open positions"));
      this.liveAccount();
      return;
    }
    const rows = positions.map((p) => {
      const mark = h("td", { class: "num", dataset: { testid: "position-mark" }, text: show(p.mark) });
      const pnl = pnlCell(p.unrealized_pnl, p.currency, "position-pnl");
      this.positionCells.set(p.order_id, { mark, pnl, live: null });
      return h(
        "tr",
        { dataset: { testid: "position-row", orderId: p.order_id, symbol: p.symbol } },
        symbolCell(p.symbol, p.order_id, `opened ${stamp(p.opened_at)}`),
        sideCell(p.side),
        h("td", { class: "num", text: show(p.qty) }),
        h("td", { class: "num", text: show(p.entry_price) }),
        mark,
        levelsCell(p.stop_loss, p.take_profit),
        pnl,
        this.actionCell("Close", `Close position ${p.order_id}`, "close-button", () => this.opts.onClose(p.order_id)),
      );
    });
    this.els.positions.replaceChildren(...rows);
    for (const p of positions) this.onTick(p.venue, p.symbol);
  }

  /** A tick moved a symbol: recompute its positions' mark and unrealized P&L. */
  onTick(venue, symbol) {
    let touched = false;
    for (const p of this.positions) {
      if (p.venue !== venue || p.symbol !== symbol) continue;
      const cells = this.positionCells.get(p.order_id);
      // live only when the P&L's currency is the symbol's quote currency (no FX conversion here)
      if (!cells || (p.currency && quoteCurrency(p.symbol) !== p.currency)) continue;
      const live = unrealized(p, this.opts.quote(venue, symbol));
      if (!live) continue;
      cells.live = live.pnl;
      cells.mark.textContent = live.mark;
      const fresh = pnlCell(live.pnl, p.currency, "position-pnl");
      cells.pnl.className = fresh.className;
      cells.pnl.textContent = fresh.textContent;
      touched = true;
    }
    if (touched) this.liveAccount();
  }

  renderClosed(orders) {
    const sorted = [...orders].sort((a, b) => String(b.closed_at || "").localeCompare(String(a.closed_at || "")));
    this.els.closedCount.textContent = String(sorted.length);
    if (!sorted.length) {
      this.els.closed.replaceChildren(emptyRow(7, "No closed trades yet"));
      return;
    }
    const rows = sorted.map((o) => {
      const entry = show(o.entry_fill?.price ?? o.entry_price);
      const exit = show(o.exit_fill?.price);
      return h(
        "tr",
        { dataset: { testid: "closed-row", orderId: o.id } },
        h("td", { class: "time", text: when(o.closed_at), title: stamp(o.closed_at) }),
        symbolCell(o.symbol, o.id, `opened ${stamp(o.opened_at)}`),
        sideCell(o.side),
        h("td", { class: "num", text: show(o.qty) }),
        h("td", { class: "num", text: `${entry} → ${exit}` }),
        h("td", {
          class: "reason",
          dataset: { testid: "closed-reason" },
          title: o.close_reason || "",
          text: REASONS[o.close_reason] || o.close_reason || "—",
        }),
        pnlCell(o.realized_pnl, o.currency, "closed-pnl"),
      );
    });
    this.els.closed.replaceChildren(...rows);
  }

  /** GET /account: {currency, balance, equity, realized_pnl, unrealized_pnl, open_positions} */
  renderAccount(acct) {
    this.account = acct;
    const a = this.accountEls;
    const cur = acct.currency || "";
    a.balance.textContent = `${show(acct.balance)} ${cur}`.trim();
    a.equity.textContent = `${show(acct.equity)} ${cur}`.trim();
    this.setPnl(a.realized, acct.realized_pnl, cur);
    this.setPnl(a.unrealized, acct.unrealized_pnl, cur);
    a.open.textContent = show(acct.open_positions);
    this.liveAccount();
  }

  resetAccount() {
    this.account = null;
    for (const el of Object.values(this.accountEls)) {
      el.textContent = "—";
      el.classList.remove("pos", "neg");
    }
  }

  /** A position_closed event carries the new balance: show it at once. */
  setBalance(balance, currency) {
    if (!this.account || balance == null) return;
    if (currency && this.account.currency && currency !== this.account.currency) return;
    this.account = { ...this.account, balance };
    this.accountEls.balance.textContent = `${balance} ${this.account.currency || ""}`.trim();
    this.liveAccount();
  }

  setPnl(el, value, currency) {
    const s = value == null ? 0 : sign(value);
    el.textContent = value == null ? "—" : `${signed(value, 2)} ${currency}`.trim();
    el.classList.toggle("pos", s > 0);
    el.classList.toggle("neg", s < 0);
  }

  /**
   * Live equity = balance + unrealized P&L of the positions in the account currency
   * (as the server counts it), with each position's live figure where ticks gave one.
   */
  liveAccount() {
    const acct = this.account;
    if (!acct || acct.balance == null) return;
    const cur = acct.currency;
    const parts = [];
    let live = 0;
    for (const p of this.positions) {
      if (p.currency && p.currency !== cur) continue;
      const cell = this.positionCells.get(p.order_id)?.live;
      if (cell != null) live += 1;
      const value = cell ?? p.unrealized_pnl;
      if (value != null) parts.push(value);
    }
    if (!live) return; // nothing moved since the server's figures: they stand
    const total = sum(parts);
    if (total === null) return;
    this.setPnl(this.accountEls.unrealized, total, cur);
    const equity = add(acct.balance, total);
    this.accountEls.equity.textContent = `${round(equity, 2) ?? show(acct.equity)} ${cur || ""}`.trim();
  }
}
