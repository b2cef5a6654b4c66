// Sonia console. Plain JavaScript, no dependencies, no build step.
//
// Safety rule of this file: text from the API (model output, memories, file names,
// tool output, anything) only ever reaches the page through `textContent` or
// attribute values set with `setAttribute` on inert attributes. Nothing is parsed
// as HTML: the page's content security policy enforces Trusted Types, so assigning
// a string to an HTML sink would be refused by the browser anyway.
"use strict";

const state = {
  key: null,          // {key_id, role}
  csrf: null,
  page: null,
  pendingTimer: null,
  pendingCards: new Map(),
  auditBefore: null,
};

const POLL_MS = 2000;
const PAGES = ["chat", "approvals", "memory", "sessions", "system", "gates", "audit", "keys"];
const APPROVER_PAGES = new Set(["system", "gates", "audit", "keys"]);

// ------------------------------------------------------------------ small helpers

function $(id) { return document.getElementById(id); }

function el(tag, options, ...children) {
  const node = document.createElement(tag);
  const opts = options || {};
  if (opts.className) node.className = opts.className;
  if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
  for (const [name, value] of Object.entries(opts.attrs || {})) node.setAttribute(name, value);
  for (const child of children) if (child) node.append(child);
  return node;
}

function button(label, onClick, className) {
  const node = el("button", { text: label, className: className || "", attrs: { type: "button" } });
  node.addEventListener("click", onClick);
  return node;
}

function when(iso) {
  if (!iso) return "-";
  const date = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function mib(bytes) { return bytes ? `${(bytes / 1048576).toFixed(1)} MiB` : "-"; }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function jsonText(value) {
  return el("code", { className: "json", text: JSON.stringify(value) });
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [term, value] of pairs) {
    dl.append(el("dt", { text: term }));
    const dd = el("dd");
    if (value instanceof Node) dd.append(value); else dd.textContent = value === null || value === undefined ? "-" : String(value);
    dl.append(dd);
  }
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell === null || cell === undefined ? "-" : String(cell);
    tr.append(td);
  }
  return tr;
}

function say(message, failed) {
  const node = $("status");
  node.textContent = message || "";
  node.classList.toggle("failed", Boolean(failed));
}

class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.detail) || `the gateway answered ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/v1/console/login") signedOut();
    throw new ApiFailure(response.status, data);
  }
  return data;
}

function failed(what) {
  return (error) => say(`${what}: ${error.message}${error.code ? ` (${error.code})` : ""}`, true);
}

// ------------------------------------------------------------------ sign in, pages

async function start() {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", signOut);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
  });
  $("memory-search").addEventListener("submit", searchMemory);
  $("memory-add").addEventListener("submit", addMemory);
  $("history-refresh").addEventListener("click", () => loadHistory().catch(failed("Decided actions")));
  $("history-status").addEventListener("change", () => loadHistory().catch(failed("Decided actions")));
  $("system-refresh").addEventListener("click", () => loadSystem().catch(failed("System")));
  $("audit-more").addEventListener("click", () => loadAudit(true).catch(failed("Audit")));
  window.addEventListener("hashchange", route);
  try {
    const session = await api("GET", "/v1/console/session");
    signedIn(session);
  } catch (_) {
    signedOut();
  }
}

async function signIn(event) {
  event.preventDefault();
  const input = $("login-key");
  $("login-error").textContent = "";
  try {
    const session = await api("POST", "/v1/console/login", { key: input.value.trim() });
    input.value = "";
    signedIn(session);
  } catch (error) {
    $("login-error").textContent = error.status === 401 ? "That key is not valid here." : error.message;
  }
}

async function signOut() {
  try { await api("POST", "/v1/console/logout"); } catch (_) { /* signed out either way */ }
  signedOut();
}

function signedIn(session) {
  state.key = { key_id: session.key_id, role: session.role };
  state.csrf = session.csrf_token;
  $("who-text").textContent = `key ${session.key_id} (${session.role})`;
  $("who").hidden = false;
  $("nav").hidden = false;
  for (const item of document.querySelectorAll("[data-role='approver']")) {
    item.hidden = session.role !== "approver";
  }
  if (!location.hash || location.hash === "#login") location.hash = "#chat"; else route();
  startPolling();
}

function signedOut() {
  state.key = null;
  state.csrf = null;
  stopPolling();
  $("who").hidden = true;
  $("nav").hidden = true;
  show("login");
}

function show(page) {
  state.page = page;
  for (const section of document.querySelectorAll("main > .page")) {
    section.hidden = section.id !== `page-${page}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const heading = document.querySelector(`#page-${page} h1`);
  document.title = `${heading ? heading.textContent : "Sonia"} - Sonia console`;
  if (heading) heading.focus();
}

function route() {
  if (!state.key) { show("login"); return; }
  let page = location.hash.replace(/^#/, "") || "chat";
  if (!PAGES.includes(page) || (APPROVER_PAGES.has(page) && state.key.role !== "approver")) page = "chat";
  say("");
  show(page);
  const loaders = {
    approvals: () => Promise.all([loadPending(), loadHistory()]),
    sessions: loadSessions,
    system: loadSystem,
    gates: loadGates,
    audit: () => loadAudit(false),
    keys: loadKeys,
  };
  if (page === "approvals") {
    for (const [id, card] of state.pendingCards) if (card.dataset.decided) { card.remove(); state.pendingCards.delete(id); }
  }
  if (loaders[page]) loaders[page]().catch(failed(page));
  if (page === "chat") $("chat-input").focus();
}

// ------------------------------------------------------------------ chat

function chatEntry(who, text, className) {
  const item = el("li", { className: `msg ${className}` });
  item.append(el("p", { className: "who-said", text: who }));
  const body = el("p", { className: "text", text });
  item.append(body);
  $("chat-log").append(item);
  return { item, body };
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const message = input.value;
  if (!message.trim()) return;
  input.value = "";
  const send = $("chat-send");
  send.disabled = true;
  chatEntry("You", message, "user");
  const reply = chatEntry("Sonia", "", "assistant");
  reply.item.setAttribute("aria-busy", "true");
  const steps = el("ul", { className: "steps", attrs: { "aria-label": "What Sonia did" } });
  reply.item.append(steps);
  try {
    await streamChat(message, reply, steps);
  } catch (error) {
    reply.body.textContent = `The reply failed: ${error.message}`;
    reply.item.classList.add("failed");
  } finally {
    reply.item.removeAttribute("aria-busy");
    send.disabled = false;
  }
}

async function streamChat(message, reply, steps) {
  const response = await fetch("/v1/chat/stream", {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRF-Token": state.csrf || "" },
    body: JSON.stringify({ message }),
  });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.status === 401) signedOut();
    throw new ApiFailure(response.status, body);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of chunk.split("\n")) {
        if (line.startsWith("data:")) chatEvent(JSON.parse(line.slice(5)), reply, steps);
      }
    }
  }
}

function chatEvent(event, reply, steps) {
  if (event.type === "start") {
    const recalled = event.recalled || [];
    if (recalled.length) {
      const details = el("details", { className: "recalled" });
      details.append(el("summary", { text: `Recalled ${recalled.length} ${recalled.length === 1 ? "memory" : "memories"}` }));
      const list = el("ul", { className: "list" });
      for (const memory of recalled) list.append(el("li", { text: memory.content }));
      details.append(list);
      reply.item.insertBefore(details, reply.body);
    }
  } else if (event.type === "step") {
    if (event.kind === "tool_call") {
      const args = event.args ? ` ${JSON.stringify(event.args)}` : "";
      steps.append(el("li", { text: `${event.tool || event.function}${args}: ${event.status || ""}${event.action_id ? ` (${event.action_id})` : ""}` }));
    }
  } else if (event.type === "delta") {
    reply.body.textContent += event.text;
  } else if (event.type === "final") {
    reply.body.textContent = event.reply;
    reply.item.setAttribute("data-turn", event.agent_turn_id || "");
    const stored = (event.memory && event.memory.stored) || [];
    const meta = `answered by ${event.provider || "?"} (${event.model || "?"})` +
      (stored.length ? `; remembered: ${stored.map((m) => m.content).join("; ")}` : "");
    reply.item.append(el("p", { className: "meta provider", text: meta }));
    if (event.pending_approval) reply.item.append(inlineApproval(event.pending_approval, event.agent_turn_id, reply));
  } else if (event.type === "error") {
    reply.body.textContent = `The reply failed: ${event.detail} (${event.code})`;
  }
}

function inlineApproval(pending, turnId, reply) {
  const box = el("div", { className: "card pending inline-approval", attrs: { "data-action": pending.action_id } });
  box.append(el("p", { text: `Waiting for an approver: ${pending.tool} (tier ${pending.tier}), action ${pending.action_id}.` }));
  box.append(el("pre", { className: "plan", text: JSON.stringify(pending.args, null, 1) }));
  const actions = el("div", { className: "actions" });
  const link = el("a", { text: "Review in Approvals", attrs: { href: "#approvals" } });
  actions.append(link);
  if (state.key && state.key.role === "approver") {
    const done = async (verb) => {
      try {
        const answer = await api("POST", `/v1/actions/${pending.action_id}/${verb}`);
        box.replaceChildren(el("p", { text: `Action ${pending.action_id} ${answer.status}.` }));
        const turn = await api("GET", `/v1/turns/${turnId}`);
        if (turn.reply) reply.body.textContent = turn.reply;
      } catch (error) {
        failed(`Could not ${verb}`)(error);
      }
    };
    actions.append(button("Approve", () => done("approve")));
    actions.append(button("Deny", () => done("deny"), "secondary"));
  }
  box.append(actions);
  return box;
}

// ------------------------------------------------------------------ approvals

function startPolling() {
  stopPolling();
  const tick = () => loadPending().catch(() => {});
  tick();
  state.pendingTimer = setInterval(tick, POLL_MS);
}

function stopPolling() {
  if (state.pendingTimer) clearInterval(state.pendingTimer);
  state.pendingTimer = null;
  state.pendingCards.clear();
  $("pending-list").replaceChildren();
}

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function loadPending() {
  if (!state.key) return;
  const page = await api("GET", "/v1/actions?status=pending&limit=100");
  const actions = page.actions || [];
  $("pending-count").textContent = actions.length ? String(actions.length) : "";
  $("approvals-empty").hidden = actions.length > 0;
  const seen = new Set(actions.map((a) => a.id));
  for (const [id, card] of state.pendingCards) {
    if (!seen.has(id) && !card.dataset.decided && !card.contains(document.activeElement)) {
      card.remove();
      state.pendingCards.delete(id);
    }
  }
  for (const action of actions) {
    const card = state.pendingCards.get(action.id);
    if (card) { updateExpiry(card, action); continue; }
    const made = pendingCard(action);
    state.pendingCards.set(action.id, made);
    $("pending-list").append(made);
  }
}

function updateExpiry(card, action) {
  const node = card.querySelector(".expiry");
  if (node) node.textContent = expiryText(action.expires_at);
}

function expiryText(iso) {
  const left = (new Date(iso).getTime() - Date.now()) / 1000;
  return left > 0 ? `${when(iso)} (in ${duration(left)})` : `${when(iso)} (expired)`;
}

function pendingCard(action) {
  const card = el("article", { className: "card pending", attrs: { "data-action": action.id, "aria-labelledby": `h-${action.id}` } });
  card.append(el("h3", { text: `${action.tool} (tier ${action.tier})`, attrs: { id: `h-${action.id}` } }));
  const origin = action.origin === "model"
    ? `proposed by the model in turn ${action.turn_id || "?"}`
    : "proposed by a person";
  const sources = action.untrusted_sources && action.untrusted_sources.length
    ? el("ul", { className: "list" }, ...action.untrusted_sources.map((s) => el("li", { text: s })))
    : "none";
  const expiry = el("span", { className: "expiry", text: expiryText(action.expires_at) });
  const dl = el("dl", { className: "facts" });
  facts(dl, [
    ["Action", action.id],
    ["Proposed by key", action.key_id],
    ["Origin", origin],
    ["Untrusted content in context", sources],
    ["Reason", action.reason],
    ["Expires", expiry],
  ]);
  card.append(dl);
  card.append(el("h4", { text: "Canonical plan" }));
  card.append(el("pre", { className: "plan", text: action.canonical_plan }));
  const hash = el("p", { className: "hash mono", text: `plan hash ${action.plan_hash}` });
  card.append(hash);
  sha256Hex(action.canonical_plan).then((digest) => {
    const same = digest === action.plan_hash;
    hash.append(el("span", { className: same ? "ok" : "bad", text: same ? " (matches the plan)" : " (DOES NOT match the plan)" }));
  }).catch(() => {});
  const preview = el("div", { className: "preview" });
  card.append(preview);
  loadPreview(action, preview);
  const result = el("p", { className: "result", attrs: { role: "status" } });
  if (state.key.role === "approver") {
    const actions = el("div", { className: "actions" });
    const decide = async (verb, node) => {
      for (const b of actions.querySelectorAll("button")) b.disabled = true;
      try {
        const answer = await api("POST", `/v1/actions/${action.id}/${verb}`);
        card.dataset.decided = verb;
        card.classList.remove("pending");
        result.textContent = `${verb === "approve" ? "Approved" : "Denied"}: ${answer.status}` +
          (answer.result ? `; result ${JSON.stringify(answer.result)}` : "");
      } catch (error) {
        result.textContent = `Could not ${verb}: ${error.message}`;
        for (const b of actions.querySelectorAll("button")) b.disabled = false;
        node.focus();
      }
    };
    const approve = button("Approve", () => decide("approve", approve));
    approve.setAttribute("aria-describedby", `h-${action.id}`);
    const deny = button("Deny", () => decide("deny", deny), "secondary");
    deny.setAttribute("aria-describedby", `h-${action.id}`);
    actions.append(approve, deny);
    card.append(actions);
  } else {
    card.append(el("p", { className: "help", text: "An approver decides on this action." }));
  }
  card.append(result);
  return card;
}

async function loadPreview(action, node) {
  try {
    const preview = await api("GET", `/v1/actions/${action.id}/preview`);
    node.replaceChildren();
    if (preview.kind === "command") {
      node.append(el("h4", { text: "Command (argv)" }));
      const list = el("ol", { className: "argv" });
      for (const arg of preview.argv || []) list.append(el("li", {}, el("code", { text: arg })));
      node.append(list, el("p", { text: `in ${preview.cwd}` }));
    } else if (preview.kind === "diff") {
      node.append(el("h4", { text: `Change to ${preview.path}` }));
      if (preview.refused) node.append(el("p", { className: "bad", text: `The file cannot be read: ${preview.refused.detail}` }));
      else if (preview.too_large) node.append(el("p", { text: `Too large to show (${preview.size_before} bytes now, ${preview.size_after} after).` }));
      else if (preview.binary) node.append(el("p", { text: "Binary content: no text diff." }));
      else node.append(diffBlock(preview.diff || "(no change)"));
    } else if (preview.reason) {
      node.append(el("p", { className: "help", text: preview.reason }));
    }
  } catch (error) {
    node.replaceChildren(el("p", { className: "help", text: `No preview: ${error.message}` }));
  }
}

function diffBlock(diff) {
  const pre = el("pre", { className: "diff" });
  for (const line of diff.replace(/\n$/, "").split("\n")) {
    let className = "";
    if (line.startsWith("+++") || line.startsWith("---")) className = "file";
    else if (line.startsWith("+")) className = "add";
    else if (line.startsWith("-")) className = "del";
    else if (line.startsWith("@@")) className = "hunk";
    pre.append(el("span", { className, text: `${line}\n` }));
  }
  return pre;
}

async function loadHistory() {
  const status = $("history-status").value;
  const query = status ? `?status=${encodeURIComponent(status)}&limit=50` : "?limit=50";
  const page = await api("GET", `/v1/actions${query}`);
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const action of page.actions || []) {
    if (action.status === "pending_approval") continue;
    body.append(row([action.id, action.tool, action.status, action.origin, when(action.created_at), action.decided_by]));
  }
}

// ------------------------------------------------------------------ memory

async function searchMemory(event) {
  if (event) event.preventDefault();
  const q = $("memory-q").value.trim();
  if (!q) return;
  try {
    const found = await api("GET", `/v1/memory/search?q=${encodeURIComponent(q)}&limit=50`);
    const list = $("memory-results");
    list.replaceChildren();
    if (!found.results.length) list.append(el("li", { className: "empty", text: "No memory matches." }));
    for (const memory of found.results) list.append(memoryItem(memory));
    say(`${found.results.length} ${found.results.length === 1 ? "memory" : "memories"} found.`);
  } catch (error) {
    failed("Search")(error);
  }
}

function memoryItem(memory) {
  const item = el("li", { className: "memory", attrs: { "data-memory": memory.id } });
  item.append(el("span", { className: "text", text: memory.content }), " ");
  item.append(el("span", { className: "help", text: `(${memory.kind}, ${when(memory.created_at)}) ` }));
  const actions = el("span", { className: "actions" });
  const view = button("View", () => viewMemory(memory.id), "secondary");
  view.setAttribute("aria-label", `View memory: ${memory.content.slice(0, 60)}`);
  const forget = button("Forget", () => {
    const confirm = button("Confirm forget", async () => {
      try {
        await api("DELETE", `/v1/memory/${memory.id}`);
        item.remove();
        $("memory-view").hidden = true;
        say("Forgotten.");
        $("memory-q").focus();
      } catch (error) {
        failed("Forget")(error);
      }
    }, "danger");
    const cancel = button("Cancel", () => { actions.replaceChildren(view, forget); forget.focus(); }, "secondary");
    actions.replaceChildren(confirm, cancel);
    confirm.focus();
  }, "secondary");
  forget.setAttribute("aria-label", `Forget memory: ${memory.content.slice(0, 60)}`);
  actions.append(view, forget);
  item.append(actions);
  return item;
}

async function viewMemory(id) {
  try {
    const memory = await api("GET", `/v1/memory/${id}`);
    facts($("memory-detail"), [
      ["Id", memory.id], ["Kind", memory.kind], ["Content", memory.content],
      ["Stored", when(memory.created_at)], ["Archived", memory.archived_at ? when(memory.archived_at) : "no"],
    ]);
    $("memory-view").hidden = false;
    $("h-memory-view").focus();
  } catch (error) {
    failed("Memory")(error);
  }
}

async function addMemory(event) {
  event.preventDefault();
  const input = $("memory-new");
  try {
    const memory = await api("POST", "/v1/memory", { content: input.value });
    input.value = "";
    say(`Remembered (${memory.id}).`);
  } catch (error) {
    failed("Remember")(error);
  }
}

// ------------------------------------------------------------------ sessions

async function loadSessions() {
  const page = await api("GET", "/v1/sessions?state=active&limit=100");
  const counts = page.counts || {};
  $("sessions-counts").textContent = `${counts.active || 0} open, ${counts.closed || 0} closed, ${counts.expired || 0} expired.`;
  const body = $("sessions").querySelector("tbody");
  body.replaceChildren();
  $("sessions-empty").hidden = page.sessions.length > 0;
  for (const session of page.sessions) {
    const close = button("Close", async () => {
      try {
        await api("POST", `/v1/sessions/${session.id}/stop`);
        say(`Session ${session.id} closed.`);
        await loadSessions();
        $("h-sessions").focus();
      } catch (error) {
        failed("Close")(error);
      }
    }, "secondary");
    close.setAttribute("aria-label", `Close session ${session.id}`);
    body.append(row([session.id, session.mode, when(session.created_at), when(session.last_seen_at), when(session.expires_at), close]));
  }
}

// ------------------------------------------------------------------ system

async function loadSystem() {
  const system = await api("GET", "/v1/system");
  const body = $("services").querySelector("tbody");
  body.replaceChildren();
  for (const service of system.services) {
    const ready = el("span", { className: service.ready ? "ok" : "bad", text: service.ready ? "ready" : `not ready: ${service.not_ready_because || ""}` });
    body.append(row([service.name, ready, service.port, service.pid, duration(service.uptime_s), mib(service.uss_bytes), service.restarts]));
  }
  const sandbox = system.sandbox || {};
  const audit = system.audit || {};
  const chain = audit.error ? `unknown: ${audit.error.detail}` : audit.ok
    ? `intact: ${audit.records} records, head ${audit.head_hash}`
    : `BROKEN at record ${audit.first_bad_seq}: ${audit.reason}`;
  const model = system.model || {};
  const backup = system.backup || {};
  facts($("system-facts"), [
    ["Sandbox in force", `${sandbox.level || "?"} (network ${sandbox.network || "?"}, commands as uid ${sandbox.runs_as_uid || "?"})`],
    ["Sandbox reason", sandbox.reason],
    ["Default profile", model.default_profile ? `${model.default_profile}: ${(model.profiles && model.profiles[model.default_profile] || []).join(", ")}` : (model.error ? model.error.detail : "-")],
    ["Audit chain", chain],
    ["Scheduled backups", !backup.enabled ? "off" : backup.last_at
      ? `every ${backup.interval_hours} h; last ${when(backup.last_at)}: ${backup.last_ok ? "ok" : `failed: ${backup.last_error}`}`
      : `every ${backup.interval_hours} h; none yet`],
    ["Supervisor", system.supervisor.running ? `running, state of ${when(system.supervisor.updated_at)}` : "no supervisor state"],
  ]);
  const providers = $("providers");
  providers.replaceChildren();
  for (const provider of model.providers || []) {
    providers.append(el("li", { text: `${provider.name}: model ${provider.model}, ${provider.state}` +
      (provider.last_error ? `; last error: ${provider.last_error}` : "") }));
  }
}

// ------------------------------------------------------------------ gates and releases

async function loadGates() {
  const runs = await api("GET", "/v1/gates?limit=200");
  const body = $("runs").querySelector("tbody");
  body.replaceChildren();
  $("gates-empty").hidden = runs.runs.length > 0;
  for (const run of runs.runs) {
    const status = el("span", { className: run.status === "GO" ? "ok" : "bad", text: run.status });
    const source = run.source ? `${String(run.source.commit || "").slice(0, 12)}${run.source.dirty ? " (dirty)" : ""}` : "-";
    const details = button("Details", () => loadRun(run.run_id).catch(failed("Run")), "secondary");
    details.setAttribute("aria-label", `Details of ${run.run_id}`);
    body.append(row([run.run_id, run.gate, status, run.profile, `${run.checks_failed} of ${run.checks}`, source, run.seconds, details]));
  }
  const list = $("releases");
  list.replaceChildren(el("p", { className: "help", text: "Verifying release bundles (sonia verify)..." }));
  list.setAttribute("aria-busy", "true");
  try {
    const releases = await api("GET", "/v1/releases");
    list.replaceChildren();
    $("releases-empty").hidden = releases.releases.length > 0;
    for (const bundle of releases.releases) list.append(releaseCard(bundle));
  } finally {
    list.removeAttribute("aria-busy");
  }
}

async function loadRun(runId) {
  const run = await api("GET", `/v1/gates/${encodeURIComponent(runId)}`);
  $("h-run").textContent = `Run ${run.run_id}`;
  const waivers = run.waiver_list.length
    ? el("ul", { className: "list" }, ...run.waiver_list.map((w) => el("li", { text: JSON.stringify(w) })))
    : "none";
  facts($("run-facts"), [
    ["Gate", run.gate], ["Verdict", run.status], ["Profile", run.profile],
    ["Commit", run.source ? `${run.source.commit}${run.source.dirty ? " (dirty)" : ""}` : "-"],
    ["Seconds", run.seconds], ["Parameters", jsonText(run.parameters)], ["Waivers", waivers],
    ["Files", run.files.map((f) => `${f.name} (${f.bytes} bytes)`).join(", ")],
  ]);
  const body = $("run-checks").querySelector("tbody");
  body.replaceChildren();
  for (const check of run.verdict_checks) {
    body.append(row([check.name, check.kind, check.passed ? "yes" : "NO", jsonText(check.threshold), jsonText(check.observed)]));
  }
  const plots = $("run-plots");
  plots.replaceChildren();
  run.plot_titles.forEach((title, index) => {
    const img = el("img", { attrs: { src: `/v1/gates/${encodeURIComponent(run.run_id)}/plots/${index}`, alt: `Soak plot: ${title}`, loading: "lazy" } });
    plots.append(el("figure", {}, img, el("figcaption", { text: title })));
  });
  $("run-view").hidden = false;
  $("h-run").focus();
}

function releaseCard(bundle) {
  const card = el("article", { className: "card release", attrs: { "aria-label": `Release ${bundle.name}` } });
  card.append(el("h3", { text: `${bundle.name} (${bundle.tag || "no tag"})` }));
  const verify = bundle.verify || {};
  const verdict = el("span", { className: verify.ok ? "ok" : "bad", text: verify.ok ? `verified (${verify.state || ""})` : `does not verify: ${verify.first_bad_file ? `${verify.first_bad_file}: ` : ""}${verify.reason || ""}` });
  const waivers = bundle.waivers.length
    ? el("ul", { className: "list" }, ...bundle.waivers.map((w) => el("li", { text: `${w.gate}.${w.parameter} = ${w.value}: ${w.reason}` })))
    : "none";
  const signoffs = bundle.signoffs.length
    ? el("ul", { className: "list" }, ...bundle.signoffs.map((s) => el("li", { text: `${s.role}: ${s.signer || "unnamed"}, ${when(s.signed_at)}` })))
    : "none yet";
  const dl = el("dl", { className: "facts" });
  facts(dl, [
    ["Verify", verdict], ["Commit", bundle.commit], ["Created", when(bundle.created_at)],
    ["Gates", bundle.gates.map((g) => `${g.gate} ${g.status}`).join(", ")],
    ["Waivers", waivers], ["Sign-offs", signoffs],
  ]);
  card.append(dl);
  return card;
}

// ------------------------------------------------------------------ audit and keys

async function loadAudit(more) {
  const query = more && state.auditBefore ? `?limit=50&before=${state.auditBefore}` : "?limit=50";
  const page = await api("GET", `/v1/audit${query}`);
  const chain = page.chain;
  const banner = $("audit-chain");
  banner.replaceChildren(el("span", { className: chain.ok ? "ok" : "bad", text: chain.ok ? "The audit chain is intact" : `The audit chain is BROKEN at record ${chain.first_bad_seq}` }),
    document.createTextNode(`: ${chain.records} records${chain.reason ? `; ${chain.reason}` : ""}; head ${chain.head_hash}`));
  const body = $("audit").querySelector("tbody");
  if (!more) body.replaceChildren();
  for (const record of page.records) {
    body.append(row([record.seq, when(record.ts), record.kind, record.action_id, record.actor, jsonText(record.detail)]));
  }
  state.auditBefore = page.next_before;
  $("audit-more").hidden = !page.next_before;
}

async function loadKeys() {
  const page = await api("GET", "/v1/keys");
  const body = $("keys").querySelector("tbody");
  body.replaceChildren();
  for (const key of page.keys) {
    const cell = el("span", { className: "actions" });
    if (key.state === "active") {
      const revoke = button("Revoke", () => {
        const confirm = button("Confirm revoke", async () => {
          try {
            await api("POST", `/v1/keys/${key.id}/revoke`);
            say(`Key ${key.id} revoked.`);
            if (key.id === state.key.key_id) { signedOut(); return; }
            await loadKeys();
            $("h-keys").focus();
          } catch (error) {
            failed("Revoke")(error);
          }
        }, "danger");
        confirm.setAttribute("aria-label", `Confirm revoking key ${key.id}`);
        const cancel = button("Cancel", () => { cell.replaceChildren(revoke); revoke.focus(); }, "secondary");
        cell.replaceChildren(confirm, cancel);
        confirm.focus();
      }, "secondary");
      revoke.setAttribute("aria-label", `Revoke key ${key.id}`);
      cell.append(revoke);
    }
    body.append(row([key.id, key.role, when(key.created_at), key.state === "active" ? "active" : `revoked ${when(key.revoked_at)}`, cell]));
  }
}

document.addEventListener("DOMContentLoaded", start);
