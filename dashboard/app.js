// RBOT Arena dashboard: wires the session, the live stream and the panels.
// Plain ES modules, no build step; same origin as the API, cookie session only.

import * as api from "./api.js";
import { CandleChart } from "./chart.js";
import { byTestId, fromTemplate } from "./dom.js";
import { describe, Feed, PulseNarrator } from "./narrate.js";
import { Prices } from "./prices.js";
import { EventStream, isOrderEvent } from "./sse.js";
import { AdminControls, SystemPanel } from "./system.js";
import { Tables } from "./tables.js";
import { Ticket } from "./ticket.js";

const EVENTS_URL = `/events?subjects=${encodeURIComponent("evt.>,md.tick.>")}`;
const ACTOR_TYPES = new Set([
  "starting",
  "started",
  "exited",
  "crashed",
  "restarting",
  "stopping",
  "stopped",
  "abandoned",
  "escalated",
  "silent",
]);
const CONN_LABELS = {
  idle: "Disconnected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline — retrying",
};
const CANDLES = 100;

const $ = (id) => byTestId(id);

// ---------------------------------------------------------------- panels (one page, built once)

const prices = new Prices($("prices-body"), { onSelect: (v, s) => selectSymbol(v, s, true) });
const chart = new CandleChart($("chart-canvas"), { max: CANDLES });
const feed = new Feed($("feed"), $("feed-list"), $("feed-jump"), { max: 500 });
const pulses = new PulseNarrator();
const system = new SystemPanel({
  actors: $("actors-body"),
  tradingState: $("trading-state"),
  tradingReason: $("trading-reason"),
  tradingBadge: $("trading-state-badge"),
  pulseStatus: $("pulse-status"),
  pulseAge: $("pulse-age"),
  admin: null,
});
const tables = new Tables(
  {
    pending: $("pending-body"),
    positions: $("positions-body"),
    closed: $("closed-body"),
    pendingCount: $("pending-count"),
    positionsCount: $("positions-count"),
    closedCount: $("closed-count"),
    account: {
      balance: $("account-balance"),
      equity: $("account-equity"),
      realized: $("account-realized"),
      unrealized: $("account-unrealized"),
      open: $("account-open-positions"),
    },
  },
  {
    canTrade: false,
    quote: (venue, symbol) => prices.quote(venue, symbol),
    onCancel: (id) => orderAction(id, "cancel"),
    onClose: (id) => orderAction(id, "close"),
  },
);

// Mirror the feed's pause state next to its title.
new MutationObserver(() => {
  $("feed-paused").hidden = $("feed").dataset.paused !== "true";
}).observe($("feed"), { attributes: true, attributeFilter: ["data-paused"] });

/** The signed-in session: who, the stream, the role-specific parts. */
let session = null;

// ---------------------------------------------------------------- session

async function boot() {
  api.setUnauthorizedHandler(() => endSession("Your session has ended. Please sign in again."));
  $("login-form").addEventListener("submit", onLogin);
  $("logout-button").addEventListener("click", onLogout);
  $("chart-granularity").addEventListener("change", () => loadCandles());
  try {
    startSession(await api.get("/auth/me"));
  } catch (err) {
    showLogin(err.status === 401 ? "" : err.display);
  }
}

function showLogin(error = "", note = "") {
  $("app").hidden = true;
  $("session-bar").hidden = true;
  $("login-view").hidden = false;
  const box = $("login-error");
  box.textContent = error;
  box.hidden = !error;
  $("login-note").textContent = note;
  $("login-password").value = "";
  $("login-email").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const email = $("login-email").value.trim();
  const password = $("login-password").value;
  const box = $("login-error");
  if (!email || !password) {
    box.textContent = "Enter your email and password.";
    box.hidden = false;
    return;
  }
  const button = $("login-submit");
  button.disabled = true;
  box.hidden = true;
  try {
    await api.post("/auth/login", { email, password, cookie: true }, { auth: false });
    startSession(await api.get("/auth/me"));
  } catch (err) {
    box.textContent = err.display;
    box.hidden = false;
    $("login-password").select();
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  try {
    await api.post("/auth/logout", {}, { auth: false });
  } catch {
    // signing out locally is what matters; the cookie expires anyway
  }
  endSession("", "You have signed out.");
}

function startSession(me) {
  if (session) endSession();
  const role = me.role;
  const canTrade = role === "trader" || role === "admin";
  session = { me, canTrade, stream: null, ticket: null, admin: null, connectedOnce: false };
  $("user-email").textContent = me.email || me.sub || "";
  $("user-role").textContent = role;
  $("user-role").className = `badge tone-${role === "admin" ? "bad" : role === "trader" ? "info" : "muted"}`;
  $("app").dataset.role = role;
  $("grid").classList.toggle("no-ticket", !canTrade);

  // Viewers get no ticket and no admin controls at all (not merely hidden).
  if (canTrade) {
    const panel = fromTemplate("tpl-ticket");
    $("ticket-slot").replaceChildren(panel);
    session.ticket = new Ticket(panel.querySelector("form"), { prices, onPlaced: () => scheduleRefresh() });
  }
  if (role === "admin") {
    const controls = fromTemplate("tpl-admin");
    $("admin-slot").replaceChildren(controls);
    session.admin = new AdminControls(controls, { onSetState: setTradingState });
    system.els.admin = session.admin;
  }
  tables.setCanTrade(canTrade);

  $("login-view").hidden = true;
  $("app").hidden = false;
  $("session-bar").hidden = false;

  session.stream = new EventStream(EVENTS_URL, {
    onEnvelope,
    onState,
    beforeReconnect: async () => {
      // An HTTP error ended the stream: it may be the session. The probe refreshes an
      // expired token, or ends the session (and so the stream) when that fails.
      await api.get("/auth/me");
      return session !== null;
    },
  });
  session.stream.start();
  loadAll();
}

function endSession(error = "", note = "") {
  const had = session !== null;
  if (had) {
    session.stream?.stop();
    session = null;
  }
  $("ticket-slot").replaceChildren();
  $("admin-slot").replaceChildren();
  system.els.admin = null;
  feed.clear();
  pulses.reset();
  prices.reset();
  system.reset();
  tables.renderPending([]);
  tables.renderPositions([]);
  tables.renderClosed([]);
  tables.resetAccount();
  chart.showMessage(null, "Select a symbol");
  onState("idle");
  showLogin(had ? error : "", note);
}

// ---------------------------------------------------------------- live stream

function onState(state, info = {}) {
  const el = $("conn-status");
  el.dataset.state = state;
  el.dataset.lastId = session?.stream?.lastSeq ?? "";
  const wait = info.retryInMs ? ` (${Math.ceil(info.retryInMs / 1000)} s)` : "";
  el.querySelector(".conn-label").textContent = CONN_LABELS[state] + (state === "connected" ? "" : wait);
  el.title = state === "connected" ? "live events streaming" : "";
  if (state === "connected" && session) {
    // After a gap, refetch what has no replay: prices, candles, tables, actors.
    if (session.connectedOnce) loadAll();
    session.connectedOnce = true;
  }
}

function onEnvelope(env, seq) {
  if (!session) return;
  const p = env.payload || {};
  if (env.type === "tick") {
    prices.update(p);
    chart.tick(p);
    tables.onTick(p.venue, p.symbol);
    session.ticket?.onTick(p);
    return;
  }
  if (env.type === "heartbeat") system.pulse(p, env.ts);
  else if (ACTOR_TYPES.has(env.type)) system.actorEvent(env.type, p);
  const line = describe(env, pulses);
  if (line) feed.add(line, env, seq);
  if (seq !== null) $("conn-status").dataset.lastId = String(seq);
  if (isOrderEvent(env)) {
    if (env.type === "position_closed" && p.balance != null) tables.setBalance(p.balance, p.currency);
    scheduleRefresh();
  }
}

// ---------------------------------------------------------------- data

function reportError(what, err) {
  if (!session || err.status === 401) return;
  const line = { icon: "⚠", tone: "bad", text: `Could not load ${what}: ${err.display}` };
  feed.add(line, { type: "client_error", ts: new Date().toISOString() }, null);
}

async function load(what, path, apply) {
  try {
    const data = await api.get(path);
    if (session) apply(data);
  } catch (err) {
    reportError(what, err);
  }
}

function loadAll() {
  load("prices", "/prices", (d) => {
    prices.setSnapshot(d.prices || []);
    session.ticket?.fillSymbols();
    if (!chart.series) {
      const first =
        (d.prices || []).find((q) => q.venue === "oanda" && q.symbol === "EUR_USD") || (d.prices || [])[0];
      if (first) selectSymbol(first.venue, first.symbol, false);
    } else {
      loadCandles();
    }
  });
  load("the system state", "/system", (d) => system.setSystem(d));
  refreshOrders();
}

let refreshTimer = 0;
function scheduleRefresh() {
  window.clearTimeout(refreshTimer);
  refreshTimer = window.setTimeout(refreshOrders, 200);
}

function refreshOrders() {
  refreshTimer = 0;
  load("pending orders", "/orders?status=PENDING&limit=200", (d) => tables.renderPending(d.orders || []));
  load("positions", "/positions", (d) => tables.renderPositions(d.positions || []));
  load("closed trades", "/orders?status=CLOSED&limit=50", (d) => tables.renderClosed(d.orders || []));
  load("the account", "/account", (d) => tables.renderAccount(d));
}

async function orderAction(id, what) {
  const box = $("orders-error");
  box.hidden = true;
  try {
    await api.del(`/orders/${encodeURIComponent(id)}`);
  } catch (err) {
    box.textContent = `⛔ Could not ${what} ${id}: ${err.display}`;
    box.hidden = false;
  }
  scheduleRefresh();
}

async function setTradingState(state, reason) {
  await api.post("/admin/trading-state", { state, reason });
  system.setTrading(state);
  load("the system state", "/system", (d) => system.setSystem(d));
}

// ---------------------------------------------------------------- chart

let candleRequest = 0;

function selectSymbol(venue, symbol, fromUser) {
  prices.select(venue, symbol);
  $("chart-symbol").textContent = `${symbol} · ${venue}`;
  $("chart-canvas").setAttribute("aria-label", `Candle chart for ${symbol} on ${venue}`);
  if (fromUser) session?.ticket?.setSymbol(venue, symbol);
  else if (session?.ticket && !session.ticket.value("symbol")) session.ticket.setSymbol(venue, symbol);
  loadCandles({ venue, symbol });
}

async function loadCandles(target = chart.series) {
  if (!target || !session) return;
  const granularity = $("chart-granularity").value;
  const series = { venue: target.venue, symbol: target.symbol, granularity };
  const mine = ++candleRequest;
  if (!chart.matches(series.venue, series.symbol) || chart.series.granularity !== granularity) {
    chart.showMessage(series, "Loading…");
  }
  const q = new URLSearchParams({ ...series, count: String(CANDLES) });
  try {
    const d = await api.get(`/candles?${q}`);
    if (mine === candleRequest && session) {
      chart.setSeries(series, d.candles || []);
      const q = prices.quote(series.venue, series.symbol);
      if (q) chart.tick(q); // the candles may be a moment behind the last tick
    }
  } catch (err) {
    if (mine === candleRequest && session) chart.showMessage(series, `Candles unavailable: ${err.message}`);
  }
}

boot();
