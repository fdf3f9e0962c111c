// Calls to the gateway: the token as a header on every call (no cookies),
// the caller's role, and the live tail over /events/stream with a ticket.

const TOKEN_KEY = "valence.console.token";
const RANK = { reader: 1, operator: 2, admin: 3 };

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  role: null,
  authRequired: true,
  explorerUrl: "",
};

export function setToken(token) {
  session.token = token;
  session.role = null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { error: text };
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

export async function loadConfig() {
  const response = await fetch("/console/config.json");
  const config = await response.json();
  session.authRequired = config.authRequired;
  session.explorerUrl = config.explorerUrl || "";
}

// Who the token is: a stream ticket names its role.
export async function whoami() {
  const ticket = await post("/events/tickets");
  session.role = ticket.role;
  return ticket;
}

export function can(role) {
  return Boolean(session.role) && RANK[session.role] >= RANK[role];
}

// Why a button is off, or null when the role may use it.
export function needs(role) {
  if (can(role)) return null;
  return `needs the ${role} role; this token has ${session.role || "none"}`;
}

export function explorerLink(signature) {
  if (!signature || !session.explorerUrl) return null;
  return session.explorerUrl.replace("{signature}", encodeURIComponent(signature));
}

// The live tail: an EventSource on /events/stream. The browser reconnects
// on its own with Last-Event-ID while its ticket is good; when it gives up
// (a 401 once the ticket expired or the server restarted with a new key)
// a new ticket is fetched and the stream reopened right after the last
// event seen, so nothing is missed and nothing repeats.
export class Tail {
  constructor({ filters, start, onEvent, onStatus, onError }) {
    this.filters = filters || {};
    this.start = start ?? "now"; // "now", "oldest" or a sequence number
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.onError = onError || (() => {});
    this.last = null;
    this.source = null;
    this.timer = null;
    this.delay = 500;
    this.stopped = true;
  }

  open() {
    this.stopped = false;
    this.connect();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.onStatus("paused", "down");
  }

  params() {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(this.filters)) if (v) p.set(k, v);
    if (this.last !== null) {
      p.set("start", "from_sequence");
      p.set("from_sequence", String(this.last + 1));
    } else if (typeof this.start === "number") {
      p.set("start", "from_sequence");
      p.set("from_sequence", String(this.start));
    } else {
      p.set("start", this.start);
    }
    return p;
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    const p = this.params();
    try {
      const ticket = await post("/events/tickets");
      p.set("ticket", ticket.ticket);
    } catch (e) {
      this.retry(`no ticket: ${e.message}`);
      return;
    }
    if (this.stopped) return;
    const source = new EventSource(`/events/stream?${p}`);
    this.source = source;
    source.onopen = () => {
      this.delay = 500;
      this.onStatus("live", "live");
    };
    source.onmessage = (m) => {
      const event = JSON.parse(m.data);
      const sequence = Number(event.sequence);
      if (this.last !== null && sequence <= this.last) return;
      this.last = sequence;
      this.onEvent(event);
    };
    source.addEventListener("error", (m) => {
      if (source !== this.source) return;
      if (m.data) {
        // The server's final error (OUT_OF_RANGE names the oldest sequence).
        const error = JSON.parse(m.data);
        source.close();
        this.source = null;
        this.stopped = true;
        this.onStatus(`stopped: ${error.error}`, "down");
        this.onError(error);
        return;
      }
      if (source.readyState === EventSource.CLOSED) this.retry("disconnected");
      else this.onStatus("reconnecting…", "down");
    });
  }

  retry(why) {
    if (this.stopped) return;
    if (this.source) this.source.close();
    this.source = null;
    this.onStatus(`${why}; reconnecting…`, "down");
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 4000);
  }
}
