// RBOT Arena dashboard: wires the session, the live stream and the panels.
// Plain ES modules, no build step; same origin as the API, cookie session only.

import * as api from "./api.js";
import { CandleChart } from "./chart.js";
import { Depth } from "./depth.js";
import { byTestId, fromTemplate, h } from "./dom.js";
import { describe, Feed, isLifecycleEvent, PulseNarrator, setLifecycleTypes } from "./narrate.js";
import { Prices } from "./prices.js";
import { EventStream, isOrderEvent, setOrderTypes } from "./sse.js";
import { AdminControls, SystemPanel } from "./system.js";
import { Tables } from "./tables.js";
import { setTokenPattern, Ticket } from "./ticket.js";

// order books ride the stream too (at most 4/s per product): the depth panel shows the selected one
const EVENTS_URL = `/events?subjects=${encodeURIComponent("evt.>,md.tick.>,md.book.>")}`;
const CONN_LABELS = {
  idle: "Disconnected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline — retrying",
};
const CANDLES = 100;
const RECONCILE_MS = 5000; // order tables: a full refetch at most this often (events do the rest)
const MARKS_MS = 3000; // open positions: the API's marks and P&L at most this often

const $ = (id) => byTestId(id);

// ---------------------------------------------------------------- panels (one page, built once)

const prices = new Prices($("prices-body"), { onSelect: (v, s) => selectSymbol(v, s, true) });
const chart = new CandleChart($("chart-canvas"), { max: CANDLES });
const depth = new Depth({ body: $("depth-body"), title: $("depth-symbol"), note: $("depth-note") });
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
/** GET /meta: the server's lists (granularities, venues, event types, token rule). */
let meta = null;

// ---------------------------------------------------------------- session

async function boot() {
  api.setUnauthorizedHandler(() => endSession("Your session has ended. Please sign in again."));
  $("login-form").addEventListener("submit", onLogin);
  $("logout-button").addEventListener("click", onLogout);
  $("chart-granularity").addEventListener("change", () => loadCandles());
  try {
    applyMeta(await api.get("/meta", { auth: false }));
    // the probe answers 200 either way: no failed request in the console before sign-in
    let probe = await api.get("/auth/session", { auth: false });
    if (!probe.authenticated && probe.refreshable && (await api.refreshSession())) {
      probe = await api.get("/auth/session", { auth: false });
    }
    if (probe.authenticated) startSession(probe.user);
    else showLogin();
  } catch (err) {
    showLogin(err.display);
  }
}

/** Fill what the page offers from the server's lists (no copies in the page). */
function applyMeta(m) {
  meta = m;
  setOrderTypes(m.event_types.order);
  setLifecycleTypes(m.event_types.lifecycle);
  setTokenPattern(m.token_pattern);
  const select = $("chart-granularity");
  const options = m.granularities.chart.map((g) =>
    h("option", { value: g, text: granularityLabel(m.granularities.seconds[g] ?? 0, g) }),
  );
  select.replaceChildren(...options);
  select.value = m.granularities.chart_default;
}

function granularityLabel(secs, name) {
  if (!secs) return name;
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${secs / 60} min`;
  if (secs < 86400) return `${secs / 3600} h`;
  return `${secs / 86400} d`;
}

function hasBooks(venue) {
  return Boolean(meta?.venues?.find((v) => v.venue === venue)?.books);
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
    session.ticket = new Ticket(panel.querySelector("form"), { prices, onPlaced: () => scheduleReconcile() });
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
  stopTimers();
  depth.select(null);
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
    if (tables.holds(p.venue, p.symbol)) scheduleMarks();
    session.ticket?.onTick(p);
    return;
  }
  if (env.type === "book") {
    depth.book(p);
    return;
  }
  if (env.type === "heartbeat") system.pulse(p, env.ts);
  else if (isLifecycleEvent(env.type)) system.actorEvent(env.type, p);
  const line = describe(env, pulses);
  if (line) feed.add(line, env, seq);
  if (seq !== null) $("conn-status").dataset.lastId = String(seq);
  if (isOrderEvent(env)) {
    // the event carries the order: the tables move it at once, no request per event
    if (tables.applyEvent(env.type, p, env.ts)) scheduleReconcile();
  }
}

// ---------------------------------------------------------------- data

function reportError(what, err) {
  if (!session || err.status === 401) return;
  const line = { icon: "warning", tone: "bad", text: `Could not load ${what}: ${err.display}` };
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

// Timers: a reconcile refetch at most every RECONCILE_MS after events (a burst of
// events costs one), the API's marks at most every MARKS_MS while ticks move a held
// symbol.
const timers = { reconcile: 0, marks: 0 };

function stopTimers() {
  window.clearTimeout(timers.reconcile);
  window.clearTimeout(timers.marks);
  timers.reconcile = timers.marks = 0;
}

function scheduleReconcile() {
  if (timers.reconcile) return;
  timers.reconcile = window.setTimeout(() => {
    timers.reconcile = 0;
    refreshOrders();
  }, RECONCILE_MS);
}

function scheduleMarks() {
  if (timers.marks) return;
  timers.marks = window.setTimeout(() => {
    timers.marks = 0;
    load("positions", "/positions", (d) => tables.renderPositions(d.positions || []));
    load("the account", "/account", (d) => tables.renderAccount(d));
  }, MARKS_MS);
}

function refreshOrders() {
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
    box.textContent = `Could not ${what} ${id}: ${err.display}`;
    box.hidden = false;
  }
  scheduleReconcile();
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
  selectBook(venue, symbol);
}

// ---------------------------------------------------------------- depth

function selectBook(venue, symbol) {
  if (hasBooks(venue)) {
    depth.select({ venue, symbol });
  } else {
    depth.select(null);
    depth.message(`No order book for ${symbol} (${venue} quotes prices only)`);
  }
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
