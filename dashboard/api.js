// HTTP to the API on the same origin, authenticated by the session cookie only.
// No token is ever read, stored or put in a URL. A 401 `token_expired` triggers one
// POST /auth/refresh (shared by concurrent callers) and one retry.

export class ApiError extends Error {
  constructor(status, code, message, detail = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  /** "message (code)" for people. */
  get display() {
    return this.code ? `${this.message} (${this.code})` : this.message;
  }
}

let refreshing = null;
let onUnauthorized = () => {};

/** Called once when the session is gone (401 that a refresh cannot fix). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function readError(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (body && typeof body === "object" && typeof body.code === "string") {
    return new ApiError(res.status, body.code, body.message || body.code, body.detail ?? null);
  }
  const text = res.statusText || "request failed";
  return new ApiError(res.status, `http_${res.status}`, `${res.status} ${text}`);
}

async function send(method, path, body) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError(0, "network_error", "cannot reach the server");
  }
}

/** POST /auth/refresh once for everyone waiting; true when the session was renewed. */
export function refreshSession() {
  if (!refreshing) {
    refreshing = send("POST", "/auth/refresh")
      .then((res) => res.ok)
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/**
 * request("GET", "/orders?status=PENDING") -> parsed JSON, or throws ApiError.
 * opts.auth === false: a 401 is just an error (login, the session probe).
 */
export async function request(method, path, body, opts = {}) {
  let res = await send(method, path, body);
  if (res.status === 401 && opts.auth !== false) {
    const err = await readError(res);
    if (err.code === "token_expired" && (await refreshSession())) {
      res = await send(method, path, body);
    } else {
      onUnauthorized(err);
      throw err;
    }
    if (res.status === 401) {
      const again = await readError(res);
      onUnauthorized(again);
      throw again;
    }
  }
  if (!res.ok) throw await readError(res);
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  // a reply that says it failed although the status is 200 (e.g. a guard's verdict)
  if (data && data.ok === false && typeof data.code === "string") {
    throw new ApiError(res.status, data.code, data.message || data.code, data.detail ?? null);
  }
  return data;
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body ?? {}, opts);
export const del = (path, opts) => request("DELETE", path, undefined, opts);
