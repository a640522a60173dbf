// The live stream: one EventSource on /events, with a connection state, resume
// without gap and without duplicates.
//
// Order events carry `id:` (the ORDERS stream sequence). While the EventSource
// reconnects by itself the browser resends Last-Event-ID; when it gives up
// (an HTTP error: readyState CLOSED) or the pulse goes quiet, we open a new one
// with `&since=<last id>` after a backoff delay. Any replayed id <= the last one
// seen is dropped, and so is any envelope id seen recently.
//
// States: idle -> connecting -> connected -> reconnecting -> (offline) -> connected.

/** The order event types, from GET /meta (the server's one list). */
let orderTypes = new Set();

export function setOrderTypes(names) {
  if (Array.isArray(names)) orderTypes = new Set(names);
}

export function isOrderEvent(env) {
  return orderTypes.has(env.type);
}

/** Delays in ms: 0.5 s doubling to 15 s, with jitter; reset after a good connection. */
export function* backoff(initial = 500, factor = 2, max = 15000) {
  let delay = initial;
  for (;;) {
    yield Math.round(delay * (0.8 + Math.random() * 0.4));
    delay = Math.min(delay * factor, max);
  }
}

const SEEN_ENVELOPES = 2000;
const OFFLINE_AFTER = 3; // consecutive failures before the indicator says offline

export class EventStream {
  /**
   * @param {string} url  e.g. /events?subjects=evt.%3E
   * @param {object} hooks  onEnvelope(env, seq), onState(state, info), beforeReconnect() -> bool
   */
  constructor(url, hooks, options = {}) {
    this.url = url;
    this.hooks = hooks;
    this.silenceMs = options.silenceMs ?? 20000;
    this.state = "idle";
    this.lastSeq = null;
    this.duplicates = 0;
    this.failures = 0;
    this.es = null;
    this.idBuffer = "";
    this.seen = new Set();
    this.delays = backoff();
    this.timer = null;
    this.watchdog = null;
    this.lastMessageAt = 0;
    this.pulseSeen = false;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.setState("offline");
  }

  start() {
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.watchdog = window.setInterval(() => this.checkSilence(), 2500);
    this.open();
  }

  stop() {
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    window.clearInterval(this.watchdog);
    window.clearTimeout(this.timer);
    this.watchdog = null;
    this.timer = null;
    this.closeSource();
    this.setState("idle");
  }

  get running() {
    return this.watchdog !== null;
  }

  urlWithResume() {
    if (this.lastSeq === null) return this.url;
    const sep = this.url.includes("?") ? "&" : "?";
    return `${this.url}${sep}since=${this.lastSeq}`;
  }

  open() {
    this.closeSource();
    this.setState(this.failures ? this.retryState() : "connecting", { attempt: this.failures });
    const es = new EventSource(this.urlWithResume());
    this.es = es;
    this.idBuffer = "";
    this.lastMessageAt = Date.now();
    es.onopen = () => {
      if (this.es !== es) return;
      this.failures = 0;
      this.delays = backoff();
      this.lastMessageAt = Date.now();
      this.setState("connected");
    };
    es.onmessage = (event) => {
      if (this.es === es) this.receive(event);
    };
    es.onerror = () => {
      if (this.es !== es) return;
      this.failures += 1;
      if (es.readyState === EventSource.CLOSED) {
        // an HTTP error (401, 5xx, wrong type): the browser will not retry
        this.closeSource();
        this.schedule();
      } else {
        this.setState(this.retryState()); // the browser retries, with Last-Event-ID
      }
    };
  }

  closeSource() {
    if (this.es) {
      this.es.onopen = this.es.onmessage = this.es.onerror = null;
      this.es.close();
      this.es = null;
    }
  }

  retryState() {
    return this.failures >= OFFLINE_AFTER || !navigator.onLine ? "offline" : "reconnecting";
  }

  schedule() {
    window.clearTimeout(this.timer);
    const delay = this.delays.next().value;
    this.setState(this.retryState(), { retryInMs: delay });
    this.timer = window.setTimeout(() => this.reconnect(), delay);
  }

  async reconnect() {
    this.timer = null;
    if (!this.running) return;
    let go = true;
    try {
      go = (await this.hooks.beforeReconnect?.()) !== false;
    } catch {
      go = true; // the probe failing is no reason to stop trying
    }
    if (!this.running) return;
    if (go) this.open();
    else this.stop();
  }

  reconnectNow() {
    if (!this.running || this.state === "connected") return;
    window.clearTimeout(this.timer);
    this.reconnect();
  }

  checkSilence() {
    // Only once a pulse has been seen: a connected stream then carries one every 5 s.
    if (!this.es || !this.pulseSeen || this.state !== "connected") return;
    if (Date.now() - this.lastMessageAt > this.silenceMs) {
      this.failures += 1;
      this.closeSource();
      this.schedule();
    }
  }

  receive(event) {
    this.lastMessageAt = Date.now();
    let env;
    try {
      env = JSON.parse(event.data);
    } catch {
      return; // not an envelope (a comment would never reach here)
    }
    if (!env || typeof env !== "object" || typeof env.type !== "string") return;
    if (env.type === "heartbeat") this.pulseSeen = true;

    // The id buffer persists across events without an `id:` line, so only a change
    // of lastEventId says "this event had an id".
    let seq = null;
    const hadId = event.lastEventId !== this.idBuffer;
    this.idBuffer = event.lastEventId;
    if (hadId && event.lastEventId !== "") {
      const n = Number(event.lastEventId);
      if (Number.isSafeInteger(n)) seq = n;
    }
    if (seq !== null) {
      if (this.lastSeq !== null && seq <= this.lastSeq) {
        this.duplicates += 1;
        return;
      }
      this.lastSeq = seq;
    }
    if (isOrderEvent(env) && typeof env.id === "string" && env.id) {
      if (this.seen.has(env.id)) {
        this.duplicates += 1;
        return;
      }
      this.seen.add(env.id);
      if (this.seen.size > SEEN_ENVELOPES) {
        this.seen.delete(this.seen.values().next().value);
      }
    }
    this.hooks.onEnvelope(env, seq);
  }

  setState(state, info = {}) {
    const changed = state !== this.state;
    this.state = state;
    if (changed || Object.keys(info).length) this.hooks.onState?.(state, info);
  }
}
