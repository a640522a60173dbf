// The system panel: each actor's state, last heartbeat and restarts (from GET /system,
// then the 5 s pulse and actor lifecycle events), the trading state, admin controls.

import { age, h, stamp } from "./dom.js";

const STATE_TONE = {
  running: "good",
  started: "good",
  ok: "good",
  starting: "muted",
  stopping: "muted",
  stopped: "muted",
  restarting: "warn",
  exited: "warn",
  silent: "warn",
  crashed: "bad",
  abandoned: "bad",
  escalated: "bad",
};
const TRADING_TONE = { ACTIVE: "good", REDUCING: "warn", HALTED: "bad" };

export class SystemPanel {
  /** els: {actors (tbody), tradingState, tradingBadge, pulseStatus, pulseAge, admin (or null)} */
  constructor(els) {
    this.els = els;
    this.actors = new Map(); // "actor/instance" -> status
    this.tradingState = null;
    this.lastPulse = null;
    this.ageTimer = window.setInterval(() => this.renderAges(), 1000);
    this.render();
  }

  reset() {
    this.actors.clear();
    this.tradingState = null;
    this.lastPulse = null;
    this.els.pulseStatus.textContent = "no pulse";
    this.els.pulseStatus.className = "badge tone-muted";
    this.render();
    this.renderAges();
    this.setTrading(null);
    this.els.tradingReason.textContent = "";
  }

  /** GET /system: {trading_state, actors: [...]} */
  setSystem(sys) {
    this.setTrading(sys.trading_state);
    this.els.tradingReason.textContent = sys.trading_reason || "";
    this.replaceActors(sys.actors || []);
  }

  /** heartbeat payload: {status, trading_state, actors, silent} */
  pulse(p, ts) {
    this.lastPulse = ts || new Date().toISOString();
    const status = this.els.pulseStatus;
    status.textContent = p.status;
    status.className = `badge tone-${p.status === "ok" ? "good" : "warn"}`;
    this.setTrading(p.trading_state);
    this.replaceActors(p.actors || []);
    this.renderAges();
  }

  /** actor lifecycle envelope: type is the new state */
  actorEvent(type, p) {
    const k = `${p.actor}/${p.instance}`;
    const prev = this.actors.get(k) || { actor: p.actor, instance: p.instance };
    this.actors.set(k, { ...prev, state: p.state || type, restarts: p.restarts ?? prev.restarts ?? 0 });
    this.render();
  }

  replaceActors(list) {
    this.actors.clear();
    for (const a of list) this.actors.set(`${a.actor}/${a.instance}`, a);
    this.render();
  }

  setTrading(state) {
    this.tradingState = state;
    const text = state || "—";
    const tone = TRADING_TONE[state] || "muted";
    for (const el of [this.els.tradingState, this.els.tradingBadge]) {
      el.textContent = text;
      el.dataset.state = state || "";
      el.className = `badge tone-${tone}`;
    }
    this.els.admin?.updateState(state);
  }

  render() {
    const tbody = this.els.actors;
    if (!this.actors.size) {
      tbody.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 4, text: "No actors reported yet" })));
      return;
    }
    const rows = [...this.actors.values()]
      .sort((a, b) => `${a.actor}/${a.instance}`.localeCompare(`${b.actor}/${b.instance}`))
      .map((a) => {
        const state = a.silent ? "silent" : a.state;
        return h(
          "tr",
          { dataset: { testid: "actor-row", actor: a.actor, state } },
          h("th", { scope: "row" }, a.actor, h("span", { class: "instance", text: a.instance })),
          h("td", {}, h("span", { class: `badge tone-${STATE_TONE[state] || "muted"}`, text: state })),
          h("td", { class: "time", dataset: { beat: a.last_beat || "" }, title: stamp(a.last_beat), text: age(a.last_beat) }),
          h("td", { class: "num", text: String(a.restarts ?? 0) }),
        );
      });
    tbody.replaceChildren(...rows);
  }

  renderAges() {
    const now = Date.now();
    for (const td of this.els.actors.querySelectorAll("td[data-beat]")) {
      if (td.dataset.beat) td.textContent = age(td.dataset.beat, now);
    }
    this.els.pulseAge.textContent = this.lastPulse ? `pulse ${age(this.lastPulse, now)}` : "no pulse yet";
  }
}

/** Admin controls: HALT / reduce-only / resume, with a reason. */
export class AdminControls {
  constructor(root, { onSetState }) {
    this.root = root;
    this.buttons = [...root.querySelectorAll("button[data-state]")];
    this.reason = root.querySelector("[name=reason]");
    this.message = root.querySelector('[data-testid="admin-message"]');
    for (const b of this.buttons) {
      b.addEventListener("click", async () => {
        this.message.textContent = "";
        this.message.classList.remove("error");
        for (const other of this.buttons) other.disabled = true;
        try {
          const reason = this.reason.value.trim() || `set from the dashboard`;
          await onSetState(b.dataset.state, reason);
          this.message.textContent = `Trading state set to ${b.dataset.state}`;
        } catch (err) {
          this.message.textContent = `${err.message}${err.code ? ` (${err.code})` : ""}`;
          this.message.classList.add("error");
        } finally {
          this.updateState(this.state);
        }
      });
    }
  }

  updateState(state) {
    this.state = state;
    for (const b of this.buttons) b.disabled = b.dataset.state === state;
  }
}
