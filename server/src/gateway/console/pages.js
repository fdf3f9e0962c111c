// The console's pages. Everything shown is set as text (never as HTML):
// ids, names and messages come from the chain and from clients.

import { get, post, session, can, needs, explorerLink, Tail } from "./api.js";

// An element: h("td", { class: "num" }, "12", child, ...).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function notice(text, kind) {
  const el = document.getElementById("notice");
  el.textContent = text || "";
  el.className = text ? `notice ${kind || ""}` : "notice hidden";
}

function fail(el, e) {
  el.replaceChildren(h("p", { class: "bad" }, e.message));
}

function short(name, prefix) {
  return String(name || "").replace(prefix, "").toLowerCase();
}

function table(headers, rows) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows),
  );
}

function dl(pairs) {
  return h("dl", {}, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

// A button the role may lack: disabled with the reason shown beside it.
function guarded(role, label, attrs, onclick) {
  const reason = needs(role);
  const button = h("button", { ...attrs, disabled: Boolean(reason), title: reason, onclick }, label);
  return reason ? h("span", {}, button, h("span", { class: "reason" }, reason)) : button;
}

function signatureLink(signature) {
  if (!signature) return "—";
  const url = explorerLink(signature);
  const text = `${signature.slice(0, 10)}…`;
  return url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, text) : h("code", {}, text);
}

function every(ms, fn) {
  fn();
  const timer = setInterval(fn, ms);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- Overview

function overview(el) {
  el.append(h("h2", {}, "Overview"));
  const body = h("div", { id: "overview" });
  el.append(body);
  let previous = null;
  return every(2000, async () => {
    let health;
    let stats = null;
    try {
      health = await get("/health").catch((e) => e.body || Promise.reject(e));
      if (session.role) stats = await get("/stats");
    } catch (e) {
      fail(body, e);
      return;
    }
    const now = Date.now();
    let rate = "—";
    if (stats && previous) {
      const per = ((stats.head_sequence - previous.head) * 1000) / (now - previous.at);
      rate = `${per.toFixed(1)} events/s`;
    }
    if (stats) previous = { head: stats.head_sequence, at: now };
    const leader = health.leader || {};
    const chain = (stats && stats.chain) || {};
    const cards = h(
      "div",
      { class: "cards" },
      h(
        "div",
        { class: "card" },
        h("h3", {}, "Health"),
        dl([
          ["status", h("span", { class: `state-${health.status}`, id: "health-status" }, health.status)],
          ["checked", health.timestamp],
          ["uptime", stats ? `${stats.uptime_seconds} s` : null],
          ["store", stats ? stats.store_backend : null],
        ]),
      ),
      h(
        "div",
        { class: "card" },
        h("h3", {}, "Leader"),
        dl([
          ["this replica", leader.replica_id],
          ["leads", leader.is_leader ? "yes" : "no"],
          ["leader", leader.leader_replica_id],
          ["since", leader.leader_since],
        ]),
      ),
      h(
        "div",
        { class: "card" },
        h("h3", {}, "Chain"),
        dl([
          ["RPC", chain.rpc_url],
          ["program", chain.shard_program_id],
          ["last slot", chain.last_processed_slot],
          ["wallet", chain.wallet ? JSON.stringify(chain.wallet) : null],
        ]),
      ),
      stats &&
        h(
          "div",
          { class: "card" },
          h("h3", {}, "Counts"),
          dl([
            ["accounts", stats.accounts],
            ["pending requests", stats.pending_account_requests],
            ["sessions (active)", `${stats.sessions} (${stats.active_sessions})`],
            ["rules", stats.rules],
            ["events (head)", `${stats.events} (${stats.head_sequence})`],
            ["event rate", rate],
          ]),
        ),
    );
    const components = table(
      ["component", "state", "restarts", "since", "last heartbeat", "message"],
      (health.components || []).map((c) =>
        h(
          "tr",
          {},
          h("td", {}, c.name),
          h("td", { class: `state-${c.state}` }, c.state),
          h("td", { class: "num" }, c.restarts),
          h("td", {}, c.since || "—"),
          h("td", {}, c.last_heartbeat || "—"),
          h("td", {}, c.message || ""),
        ),
      ),
    );
    body.replaceChildren(cards, h("h3", {}, "Components"), components);
  });
}

// ---------------------------------------------------------------- Events

const MAX_ROWS = 500;

function eventRow(event) {
  const type = short(event.eventType, "EVENT_TYPE_");
  const details = h("pre", { class: "hidden" }, JSON.stringify(event, null, 2));
  const row = h(
    "tr",
    { class: "event-row", dataset: { seq: event.sequence, type, entity: event.entityId } },
    h("td", { class: "num" }, event.sequence),
    h("td", {}, event.time),
    h("td", {}, type),
    h("td", {}, h("code", {}, event.entityId)),
    h("td", {}, event.namespace || ""),
  );
  const detailRow = h("tr", { class: "hidden" }, h("td", { colspan: 5 }, details));
  row.addEventListener("click", () => {
    detailRow.classList.toggle("hidden");
    details.classList.remove("hidden");
  });
  return [row, detailRow];
}

function events(el) {
  el.append(h("h2", {}, "Events"));
  const types = h("input", { id: "filter-types", placeholder: "event types: rule_created,…", size: 28 });
  const entities = h("input", { id: "filter-entities", placeholder: "entity ids", size: 20 });
  const namespaces = h("input", { id: "filter-namespaces", placeholder: "namespaces", size: 14 });
  const start = h(
    "select",
    { id: "start" },
    h("option", { value: "now" }, "from now"),
    h("option", { value: "oldest" }, "from the oldest"),
    h("option", { value: "sequence" }, "from sequence…"),
  );
  const from = h("input", { id: "from-sequence", type: "number", min: 1, placeholder: "sequence", size: 8 });
  const status = h("span", { id: "tail-status" }, "idle");
  const count = h("span", { id: "tail-count", class: "muted" }, "");
  const rows = h("tbody", { id: "tail" });
  let tail = null;
  let shown = 0;

  const pause = h("button", { id: "pause", type: "button" }, "Pause");
  const apply = h("button", { id: "apply", type: "button" }, "Apply");
  const clear = h("button", { id: "clear", type: "button" }, "Clear");

  function setStatus(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  function connect() {
    if (tail) tail.close();
    let startAt = start.value;
    if (startAt === "sequence") startAt = Number(from.value) || 1;
    tail = new Tail({
      filters: { event_types: types.value, entity_ids: entities.value, namespaces: namespaces.value },
      start: startAt,
      onStatus: setStatus,
      onEvent: (event) => {
        rows.prepend(...eventRow(event));
        shown += 1;
        while (rows.children.length > MAX_ROWS * 2) rows.lastElementChild.remove();
        count.textContent = `${shown} received, last ${event.sequence}`;
      },
      onError: (error) => {
        const oldest = error.oldest_sequence ? ` (oldest available: ${error.oldest_sequence})` : "";
        notice(`the tail stopped: ${error.error}${oldest}`);
      },
    });
    tail.open();
    pause.textContent = "Pause";
  }

  pause.addEventListener("click", () => {
    if (!tail) return;
    if (tail.stopped) {
      tail.open(); // right after the last event seen
      pause.textContent = "Pause";
    } else {
      tail.close();
      pause.textContent = "Resume";
    }
  });
  apply.addEventListener("click", connect);
  clear.addEventListener("click", () => {
    rows.replaceChildren();
    shown = 0;
    count.textContent = "";
  });

  el.append(
    h(
      "div",
      { class: "toolbar" },
      types,
      entities,
      namespaces,
      start,
      from,
      apply,
      pause,
      clear,
      status,
      count,
    ),
    table(["seq", "time", "type", "entity", "namespace"], []),
  );
  el.querySelector("table").replaceChild(rows, el.querySelector("tbody"));
  if (session.role) connect();
  else setStatus("sign in to follow the log", "down");
  return () => tail && tail.close();
}

// ---------------------------------------------------------------- Entities

function timeline(progression) {
  if (!progression || !progression.history || progression.history.length === 0) {
    return h("p", { class: "muted" }, "no progression recorded");
  }
  return h(
    "ol",
    { class: "timeline", id: "timeline" },
    progression.history.map((t) =>
      h(
        "li",
        {},
        h("strong", {}, `${short(t.fromState, "LINEAR_STATE_")} → ${short(t.toState, "LINEAR_STATE_")}`),
        " ",
        h("span", { class: "muted" }, t.at || ""),
        t.slot ? ` · slot ${t.slot}` : "",
        " · ",
        signatureLink(t.signature),
        t.reason ? ` · ${t.reason}` : "",
      ),
    ),
  );
}

function entities(el) {
  el.append(h("h2", {}, "Entities"));
  const input = h("input", { id: "entity-id", placeholder: "account, request or session id", size: 50 });
  const out = h("div", { id: "entity" });
  async function search() {
    const id = input.value.trim();
    if (!id) return;
    out.replaceChildren(h("p", { class: "muted" }, "looking…"));
    const path = encodeURIComponent(id);
    let found = null;
    try {
      found = await get(`/entities/${path}`);
    } catch (e) {
      if (e.status !== 404 && e.status !== 400) {
        fail(out, e);
        return;
      }
    }
    let log = { events: [] };
    try {
      log = await get(`/events?entity_id=${path}&limit=100`);
    } catch (e) {
      fail(out, e);
      return;
    }
    if (!found && log.events.length === 0) {
      out.replaceChildren(h("p", { class: "bad" }, `nothing is known about ${id}`));
      return;
    }
    out.replaceChildren(
      found
        ? h("div", { class: "card" }, h("h3", {}, found.kind), h("pre", { id: "record" }, JSON.stringify(found.record, null, 2)))
        : h("p", { class: "muted" }, "no record; its events follow"),
      h("h3", {}, "Progression"),
      timeline(found && found.progression),
      h("h3", {}, `Events (${log.events.length})`),
      table(
        ["seq", "time", "type", "signature"],
        log.events.map((e) =>
          h(
            "tr",
            {},
            h("td", { class: "num" }, e.sequence),
            h("td", {}, e.time),
            h("td", {}, short(e.eventType, "EVENT_TYPE_")),
            h("td", {}, signatureLink(e.signature)),
          ),
        ),
      ),
    );
  }
  el.append(
    h(
      "form",
      { class: "toolbar", onsubmit: (e) => (e.preventDefault(), search()) },
      input,
      h("button", { type: "submit", id: "entity-search" }, "Search"),
    ),
    out,
  );
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("id");
  if (wanted) {
    input.value = wanted;
    search();
  }
}

// ---------------------------------------------------------------- Account requests

function requests(el) {
  el.append(h("h2", {}, "Account requests"));
  const status = h(
    "select",
    { id: "request-status" },
    ["", "pending", "processing", "initialized", "failed"].map((s) => h("option", { value: s }, s || "any status")),
  );
  const out = h("div", { id: "requests" });
  async function load() {
    try {
      const page = await get(`/account-requests?status=${status.value}&page_size=100`);
      out.replaceChildren(
        table(
          ["id", "owner", "status", "attempts", "reason", "created", ""],
          (page.requests || []).map((r) => {
            const st = short(r.status, "ACCOUNT_REQUEST_STATUS_");
            const retry =
              st === "failed"
                ? guarded("operator", "Retry", { class: "retry", dataset: { id: r.id } }, async (e) => {
                    e.target.disabled = true;
                    try {
                      const done = await post(`/account-requests/${encodeURIComponent(r.id)}/retry`);
                      notice(`${r.id} is ${short(done.request.status, "ACCOUNT_REQUEST_STATUS_")} again`, "info");
                    } catch (err) {
                      notice(`retry refused: ${err.message}`);
                    }
                    load();
                  })
                : "";
            return h(
              "tr",
              { dataset: { id: r.id, status: st } },
              h("td", {}, h("a", { href: `#/entities?id=${encodeURIComponent(r.id)}` }, h("code", {}, r.id))),
              h("td", {}, h("code", {}, r.owner)),
              h("td", { class: "status" }, st),
              h("td", { class: "num" }, r.attempts || 0),
              h("td", {}, r.failureReason || ""),
              h("td", {}, r.createdAt || ""),
              h("td", {}, retry),
            );
          }),
        ),
      );
    } catch (e) {
      fail(out, e);
    }
  }
  status.addEventListener("change", load);
  el.append(h("div", { class: "toolbar" }, status, h("button", { type: "button", onclick: load }, "Refresh")), out);
  load();
}

// ---------------------------------------------------------------- Rules

function rules(el) {
  el.append(h("h2", {}, "Rules"));
  const out = h("div", { id: "rules" });
  const dry = h("div", { id: "dry-run" });
  async function load() {
    try {
      const page = await get("/rules?page_size=100");
      out.replaceChildren(
        table(
          ["id", "name", "enabled", "condition", "action", ""],
          page.rules.map((r) =>
            h(
              "tr",
              { dataset: { id: r.id } },
              h("td", {}, h("code", {}, r.id)),
              h("td", {}, r.name),
              h("td", { class: r.enabled ? "ok" : "muted" }, r.enabled ? "yes" : "no"),
              h("td", {}, h("code", {}, JSON.stringify(r.condition))),
              h("td", {}, h("code", {}, JSON.stringify(r.action))),
              h(
                "td",
                {},
                guarded("operator", r.enabled ? "Disable" : "Enable", { class: "toggle" }, async () => {
                  try {
                    await post(`/rules/${encodeURIComponent(r.id)}/${r.enabled ? "disable" : "enable"}`);
                  } catch (e) {
                    notice(e.message);
                  }
                  load();
                }),
                " ",
                guarded("reader", "Dry run", { class: "dry" }, async () => {
                  try {
                    const result = await get(`/rules/${encodeURIComponent(r.id)}/evaluate?limit=100`);
                    const matches = result.matches || [];
                    dry.replaceChildren(
                      h("h3", {}, `Dry run of ${r.id}: ${matches.length} of ${result.sessionsEvaluated || 0} sessions match`),
                      table(
                        ["session", "action", "description"],
                        matches.map((m) =>
                          h("tr", {}, h("td", {}, h("code", {}, m.sessionId)), h("td", {}, m.actionKind), h("td", {}, m.description)),
                        ),
                      ),
                    );
                  } catch (e) {
                    dry.replaceChildren(h("p", { class: "bad" }, e.message));
                  }
                }),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      fail(out, e);
    }
  }
  el.append(h("div", { class: "toolbar" }, h("button", { type: "button", onclick: load }, "Refresh")), out, dry);
  load();
}

// ---------------------------------------------------------------- Singletons

function singletons(el) {
  el.append(h("h2", {}, "Singletons"));
  const summary = h("div", { id: "singleton-summary" });
  const detail = h("div", { id: "singletons" });
  el.append(summary, detail);
  (async () => {
    try {
      const health = await get("/health").catch((e) => e.body || Promise.reject(e));
      const list = Array.isArray(health.singletons) ? health.singletons : [];
      summary.replaceChildren(
        list.length === 0
          ? h("p", { class: "muted" }, "no singletons reported")
          : table(
              ["singleton", "status", "version", "operations", "success rate", "last operation", "last error"],
              list.map((x) =>
                h(
                  "tr",
                  {},
                  h("td", {}, x.name),
                  h("td", {}, x.status),
                  h("td", { class: "num" }, x.version),
                  h("td", { class: "num" }, x.operations_total),
                  h("td", { class: "num" }, `${Math.round((x.success_rate ?? 1) * 100)} %`),
                  h("td", {}, x.last_operation_at || "—"),
                  h("td", {}, x.last_error || ""),
                ),
              ),
            ),
      );
    } catch (e) {
      fail(summary, e);
    }
    const reason = needs("admin");
    if (reason) {
      detail.replaceChildren(h("p", { class: "muted" }, `Status and history ${reason}.`));
      return;
    }
    const act = (kind, op) => async () => {
      try {
        const done = await post(`/singletons/${kind}/${op}`);
        notice(done.message || `${kind}: ${op} done`, "info");
      } catch (e) {
        notice(`${op} refused: ${e.message}`);
      }
      el.replaceChildren();
      singletons(el);
    };
    const controls = (kind) =>
      h(
        "span",
        {},
        guarded("admin", "Pause", { class: "pause", dataset: { kind } }, act(kind, "pause")),
        " ",
        guarded("admin", "Resume", { class: "resume", dataset: { kind } }, act(kind, "resume")),
      );
    try {
      const answer = await get("/singletons");
      detail.replaceChildren(
        h("div", { class: "toolbar" }, "All: ", controls("all")),
        ...(answer.singletons || []).map((s) =>
          h(
            "div",
            { class: "card" },
            h("h3", {}, `${short(s.kind, "SINGLETON_KIND_")}: ${short(s.status, "SINGLETON_STATUS_")}`),
            controls(short(s.kind, "SINGLETON_KIND_")),
            dl([
              ["program", s.programId],
              ["version", s.version],
              ["updated", s.updatedAt],
            ]),
            table(
              ["version", "at", "signature", "config"],
              (s.history || []).map((v) =>
                h(
                  "tr",
                  {},
                  h("td", { class: "num" }, v.version),
                  h("td", {}, v.at),
                  h("td", {}, signatureLink(v.signature)),
                  h("td", {}, h("code", {}, v.configJson)),
                ),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      fail(detail, e);
    }
  })();
}

export const pages = { overview, events, entities, requests, rules, singletons };
