// The live narration: one line per event in the seed's style, and the feed that
// holds them (newest last, 500 lines, auto-scroll that pauses while the reader
// looks further up).
//
//   11:55:27 [placed] OCO Placed EUR_USD BUY 100 units | SL: 1.16, TP: 1.17 | Mode: paper | Status: PENDING
//   11:55:28 [filled] Order Filled EUR_USD BUY 100 @ 1.16515 (ask 1.16515, spread 0.00014, slip 0)
//   11:58:02 [closed] Position Closed EUR_USD BUY 100 @ 1.17000 TAKE_PROFIT_ORDER P&L +4.85 USD
//
// Icons are inline SVG by name (icons.js), never emoji.

import { sign, signed } from "./decimal.js";
import { clock, h } from "./dom.js";
import { icon } from "./icons.js";

const dash = (v) => (v === null || v === undefined || v === "" ? "—" : String(v));

function amount(p) {
  return p.venue === "oanda" ? `${dash(p.qty)} units` : dash(p.qty);
}

function placed(p) {
  const limit = p.order_type === "LIMIT" && p.limit_price ? ` LIMIT @ ${p.limit_price}` : "";
  return {
    icon: "placed",
    tone: "info",
    text:
      `OCO Placed ${p.symbol} ${p.side} ${amount(p)}${limit} | SL: ${dash(p.stop_loss)}, ` +
      `TP: ${dash(p.take_profit)} | Mode: ${dash(p.mode)} | Status: ${dash(p.status)}`,
  };
}

function filled(p) {
  const f = p.fill;
  if (!f) {
    const at = p.entry_price ? ` @ ${p.entry_price}` : "";
    return { icon: "filled", tone: "good", text: `Order Filled ${p.symbol} ${p.side} ${dash(p.qty)}${at}` };
  }
  const buy = p.side === "BUY";
  const quote = buy ? `ask ${dash(f.tick_ask)}` : `bid ${dash(f.tick_bid)}`;
  const gap = f.gap && sign(f.gap) ? `, gap ${f.gap}` : "";
  return {
    icon: "filled",
    tone: "good",
    text:
      `Order Filled ${p.symbol} ${p.side} ${dash(p.qty)} @ ${f.price} ` +
      `(${quote}, spread ${dash(f.spread)}, slip ${dash(f.slippage)}${gap})`,
  };
}

function closed(p) {
  const at = p.fill ? ` @ ${p.fill.price}` : "";
  const reason = p.reason ? ` ${p.reason}` : "";
  let pnl = "";
  let tone = "neutral";
  if (p.realized_pnl !== undefined && p.realized_pnl !== null) {
    pnl = ` P&L ${signed(p.realized_pnl)}${p.currency ? ` ${p.currency}` : ""}`;
    const s = sign(p.realized_pnl);
    tone = s > 0 ? "good" : s < 0 ? "bad" : "neutral";
  }
  return {
    icon: "closed",
    tone,
    text: `Position Closed ${p.symbol} ${p.side} ${dash(p.qty)}${at}${reason}${pnl}`,
  };
}

function ended(icon, title, tone) {
  return (p) => ({
    icon,
    tone,
    text: `${title} ${p.symbol} Order ID: ${dash(p.order_id)}${p.reason ? ` (${p.reason})` : ""}`,
  });
}

function rejected(p) {
  const why = [p.reason, p.message].filter(Boolean).join(": ");
  return {
    icon: "rejected",
    tone: "bad",
    text: `Order Rejected ${p.symbol} ${p.side} ${amount(p)}${why ? ` — ${why}` : ""}`,
  };
}

const ORDER = {
  oco_placed: placed,
  order_filled: filled,
  position_closed: closed,
  order_cancelled: ended("cancelled", "Order Cancelled", "muted"),
  order_expired: ended("expired", "Order Expired", "warn"),
  order_rejected: rejected,
};

const ENDED = new Set(["order_cancelled", "order_expired"]);

// lifecycle event -> tone; the icon is the event's own (icons.js)
const ACTOR_TONES = {
  starting: "muted",
  started: "good",
  stopping: "muted",
  stopped: "muted",
  exited: "warn",
  crashed: "bad",
  restarting: "warn",
  abandoned: "bad",
  escalated: "bad",
  silent: "warn",
};

/** The lifecycle event names, from GET /meta (the server's one list). */
let lifecycleTypes = new Set();

export function setLifecycleTypes(names) {
  if (Array.isArray(names)) lifecycleTypes = new Set(names);
}

export function isLifecycleEvent(type) {
  return lifecycleTypes.has(type);
}

function actor(env) {
  const p = env.payload || {};
  const icon = env.type;
  const tone = ACTOR_TONES[env.type] || "muted";
  const bits = [];
  if (p.restarts) bits.push(`restarts ${p.restarts}`);
  if (p.reason) bits.push(p.reason);
  const extra = bits.length ? ` (${bits.join(", ")})` : "";
  return { icon, tone, text: `actor ${p.actor || env.source} ${env.type}${extra}` };
}

/** The heartbeat line, or null when nothing changed since the last pulse. */
export class PulseNarrator {
  constructor() {
    this.last = null;
  }

  reset() {
    this.last = null;
  }

  describe(p) {
    const silent = (p.silent || []).join(", ");
    const key = `${p.status}|${p.trading_state}|${silent}`;
    if (key === this.last) return null;
    this.last = key;
    const n = (p.actors || []).length;
    const ok = p.status === "ok";
    const halted = p.trading_state === "HALTED";
    return {
      icon: ok ? "heartbeat" : "warning",
      tone: halted ? "bad" : ok ? "muted" : "warn",
      text:
        `Heartbeat ${p.status} | Trading: ${p.trading_state} | ${n} actor${n === 1 ? "" : "s"}` +
        (silent ? ` | silent: ${silent}` : ""),
    };
  }
}

/** {icon, tone, text, orderId} for one envelope, or null when it is not narrated. */
export function describe(env, pulses) {
  const p = env.payload || {};
  if (ORDER[env.type]) {
    // cancel / expiry lines name the order already; the others get it as a muted tag
    const tagged = !ENDED.has(env.type) && p.order_id;
    return { ...ORDER[env.type](p), orderId: tagged ? p.order_id : null };
  }
  if (isLifecycleEvent(env.type)) return actor(env);
  if (env.type === "heartbeat") return pulses ? pulses.describe(p) : null;
  if (env.type === "tick") return null;
  return { icon: "dot", tone: "muted", text: `${env.type} ${env.source || ""}`.trim() };
}

export class Feed {
  constructor(scroller, list, jump, { max = 500 } = {}) {
    this.scroller = scroller;
    this.list = list;
    this.jump = jump;
    this.max = max;
    this.stick = true;
    this.unseen = 0;
    scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    jump.addEventListener("click", () => this.toLatest());
    this.renderJump();
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= 24;
  }

  onScroll() {
    const was = this.stick;
    this.stick = this.atBottom();
    if (this.stick && this.unseen) this.unseen = 0;
    if (was !== this.stick || (this.stick && !this.jump.hidden)) this.renderJump();
  }

  toLatest() {
    this.stick = true;
    this.unseen = 0;
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.renderJump();
  }

  renderJump() {
    const paused = !this.stick;
    this.jump.hidden = !paused;
    this.jump.textContent = this.unseen ? `↓ Jump to latest (${this.unseen} new)` : "↓ Jump to latest";
    this.scroller.dataset.paused = paused ? "true" : "false";
  }

  /** Append one line: {icon, tone, text, orderId} for an envelope (type, ts, seq). */
  add(line, env, seq) {
    const ts = env?.ts || new Date().toISOString();
    const li = h(
      "li",
      {
        class: `feed-line tone-${line.tone}`,
        dataset: { testid: "feed-line", type: env?.type || "local", seq: seq ?? "" },
      },
      h("time", { class: "feed-time", datetime: ts, text: clock(ts) }),
      " ",
      h("span", { class: "feed-icon", "aria-hidden": "true" }, icon(line.icon)),
      " ",
      h("span", { class: "feed-text", text: line.text }),
      line.orderId ? " " : null,
      line.orderId ? h("span", { class: "feed-ref", text: line.orderId }) : null,
    );
    const follow = this.stick;
    this.list.append(li);
    this.trim(follow);
    if (follow) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else {
      this.unseen += 1;
      this.renderJump();
    }
    return li;
  }

  trim(follow) {
    let removed = 0;
    while (this.list.childElementCount > this.max) {
      const first = this.list.firstElementChild;
      if (!follow) removed += first.offsetHeight;
      first.remove();
    }
    // keep the reader's place when lines above it go
    if (removed) this.scroller.scrollTop = Math.max(0, this.scroller.scrollTop - removed);
  }

  clear() {
    this.list.replaceChildren();
    this.stick = true;
    this.unseen = 0;
    this.renderJump();
  }
}
