// Account summary and the order tables: pending orders, open positions, closed trades.
// Cancel / close buttons exist only for traders.
//
// The tables follow the order events themselves (applyEvent: each event carries the
// order after the change), so an event costs no request. Marks, unrealized P&L and
// equity are the API's numbers (/positions, /account): the page keeps no copy of the
// formula; the caller refetches them at a modest rate while positions are open.

import { sign, signed } from "./decimal.js";
import { h, show, stamp, until, when } from "./dom.js";

const CLOSED_ROWS = 50;

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
    this.pending = [];
    this.positions = [];
    this.closed = [];
    this.account = null;
    this.accountEls = els.account;
  }

  setCanTrade(canTrade) {
    this.opts.canTrade = canTrade;
    for (const th of document.querySelectorAll(".col-action")) th.hidden = !canTrade;
  }

  renderPending(orders) {
    this.pending = orders;
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
    this.els.positionsCount.textContent = String(positions.length);
    if (!positions.length) {
      this.els.positions.replaceChildren(emptyRow(8, "No open positions"));
      return;
    }
    const rows = positions.map((p) =>
      h(
        "tr",
        { dataset: { testid: "position-row", orderId: p.order_id, symbol: p.symbol } },
        symbolCell(p.symbol, p.order_id, `opened ${stamp(p.opened_at)}`),
        sideCell(p.side),
        h("td", { class: "num", text: show(p.qty) }),
        h("td", { class: "num", text: show(p.entry_price) }),
        h("td", { class: "num", dataset: { testid: "position-mark" }, text: show(p.mark) }),
        levelsCell(p.stop_loss, p.take_profit),
        pnlCell(p.unrealized_pnl, p.currency, "position-pnl"),
        this.actionCell("Close", `Close position ${p.order_id}`, "close-button", () => this.opts.onClose(p.order_id)),
      ),
    );
    this.els.positions.replaceChildren(...rows);
  }

  /** Whether a symbol has an open position (its marks are worth refetching). */
  holds(venue, symbol) {
    return this.positions.some((p) => p.venue === venue && p.symbol === symbol);
  }

  /**
   * One order event (type, payload = the order after the change, ts): move the order
   * between the tables at once. Returns true when the tables changed.
   */
  applyEvent(type, p, ts) {
    const id = p.order_id;
    if (!id) return false; // a rejection before an id: not in any table
    const withoutPending = this.pending.filter((o) => o.id !== id);
    const withoutPosition = this.positions.filter((o) => o.order_id !== id);
    if (type === "oco_placed") {
      this.renderPending([...withoutPending, pendingRow(p, ts)]);
    } else if (type === "order_filled") {
      this.renderPending(withoutPending);
      this.renderPositions([...withoutPosition, positionRow(p, ts)]);
    } else if (type === "position_closed") {
      this.renderPositions(withoutPosition);
      const rest = this.closed.filter((o) => o.id !== id);
      this.renderClosed([closedRow(p, ts), ...rest].slice(0, CLOSED_ROWS));
      if (p.balance != null) this.setBalance(p.balance, p.currency);
    } else if (type === "order_cancelled" || type === "order_expired" || type === "order_rejected") {
      this.renderPending(withoutPending);
      if (withoutPosition.length !== this.positions.length) this.renderPositions(withoutPosition);
    } else {
      return false;
    }
    return true;
  }

  renderClosed(orders) {
    this.closed = orders;
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
  }

  setPnl(el, value, currency) {
    const s = value == null ? 0 : sign(value);
    el.textContent = value == null ? "—" : `${signed(value, 2)} ${currency}`.trim();
    el.classList.toggle("pos", s > 0);
    el.classList.toggle("neg", s < 0);
  }
}

// ---------------------------------------------------------------- rows from event payloads
// (OrderEvent: order_id, venue, symbol, side, qty, order_type, status, stop_loss,
// take_profit, entry_price, limit_price, expires_at, fill, reason, realized_pnl, currency)

function pendingRow(p, ts) {
  return {
    id: p.order_id,
    venue: p.venue,
    symbol: p.symbol,
    side: p.side,
    qty: p.qty,
    order_type: p.order_type,
    limit_price: p.limit_price ?? null,
    entry_price: p.entry_price ?? null,
    stop_loss: p.stop_loss,
    take_profit: p.take_profit,
    expires_at: p.expires_at ?? null,
    created_at: ts,
  };
}

function positionRow(p, ts) {
  return {
    order_id: p.order_id,
    venue: p.venue,
    symbol: p.symbol,
    side: p.side,
    qty: p.qty,
    entry_price: p.fill?.price ?? p.entry_price,
    mark: null, // the API's, on the next /positions
    unrealized_pnl: null,
    currency: p.currency ?? null,
    stop_loss: p.stop_loss,
    take_profit: p.take_profit,
    opened_at: p.fill?.time ?? ts,
  };
}

function closedRow(p, ts) {
  return {
    id: p.order_id,
    venue: p.venue,
    symbol: p.symbol,
    side: p.side,
    qty: p.qty,
    entry_price: p.entry_price,
    exit_fill: p.fill ?? null,
    close_reason: p.reason ?? null,
    realized_pnl: p.realized_pnl ?? null,
    currency: p.currency ?? null,
    closed_at: p.fill?.time ?? ts,
  };
}
