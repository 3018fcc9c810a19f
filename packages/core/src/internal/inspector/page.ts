/**
 * The inspector's one page: plain HTML, CSS and a little JavaScript, no framework and no build step. It reads
 * everything through the inspector's JSON API (`api/...` under the page's own path) with the bearer token the
 * operator gives it (`#token=…` in the URL, kept in the tab's sessionStorage), and renders every stored value
 * as text (never as HTML), so no stored state can inject markup.
 *
 * @internal
 */

const css = `
:root { --fg: #1d232b; --muted: #5d6875; --line: #d9dee4; --bg: #f6f7f9; --accent: #2457c5; --bad: #b42318;
  --badbg: #fef3f2; --ok: #067647; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); font-size: 14px; }
header { display: flex; align-items: center; gap: 24px; padding: 10px 20px; background: #fff;
  border-bottom: 1px solid var(--line); }
header h1 { font-size: 16px; margin: 0; }
#rates { display: flex; gap: 18px; color: var(--muted); }
#rates b { color: var(--fg); font-variant-numeric: tabular-nums; }
main { display: grid; grid-template-columns: 220px minmax(0, 1fr) minmax(0, 1.1fr); gap: 16px; padding: 16px 20px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px; min-width: 0; }
h2 { font-size: 14px; margin: 0 0 10px; }
h3 { font-size: 13px; margin: 14px 0 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); vertical-align: top;
  overflow-wrap: break-word; }
th { color: var(--muted); font-weight: 600; font-size: 12px; white-space: nowrap; }
td.nowrap, button { white-space: nowrap; }
tr.pick { cursor: pointer; }
tr.pick:hover, tr.pick.on { background: #eef3fd; }
#types li { list-style: none; padding: 6px 8px; border-radius: 4px; cursor: pointer; display: flex;
  justify-content: space-between; gap: 8px; }
#types ul { padding: 0; margin: 0; }
#types li:hover, #types li.on { background: #eef3fd; }
.count { color: var(--muted); font-variant-numeric: tabular-nums; }
.failed-count { color: var(--bad); }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: 10px; overflow: auto;
  max-height: 360px; margin: 0; font-size: 12px; }
.error { background: var(--badbg); color: var(--bad); border: 1px solid #fecdca; border-radius: 4px; padding: 8px;
  white-space: pre-wrap; margin: 8px 0; font-size: 12px; }
.muted { color: var(--muted); }
button { font: inherit; border: 1px solid var(--line); background: #fff; border-radius: 4px; padding: 3px 10px;
  cursor: pointer; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button:disabled { opacity: .5; cursor: default; }
input { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 4px; width: 100%; }
.bar { display: flex; gap: 8px; align-items: center; margin-bottom: 8px; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin-bottom: 8px; }
.kv dt { color: var(--muted); } .kv dd { margin: 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px; background: #eef0f3; }
.badge.failed { background: var(--badbg); color: var(--bad); }
.badge.active { background: #ecfdf3; color: var(--ok); }
#notice { margin: 0 20px; }
#login { max-width: 420px; margin: 40px auto; }
`

// The browser runs this script, not Node: there is no Effect, Clock or Logger on the page, so it uses the
// browser's own fetch, async/await and Date to format the times the API sends as epoch milliseconds.
const script = `
"use strict";
const base = document.body.dataset.base;
const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};
const time = (ms) => ms == null ? "-" : new Date(ms).toISOString().replace("T", " ").replace(/\\.\\d+Z$/, "Z");

// The token: from #token=… (then dropped from the address bar), else what this tab was given before.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash !== null) { sessionStorage.setItem("durable-object-token", fromHash); history.replaceState(null, "", location.pathname + location.search); }
const token = () => sessionStorage.getItem("durable-object-token") || "";

class Unauthorized extends Error {}
const api = async (path, init) => {
  const headers = { "accept": "application/json", ...(init && init.body ? { "content-type": "application/json" } : {}) };
  if (token() !== "") headers.authorization = "Bearer " + token();
  const response = await fetch(base + "/api/" + path, { ...init, headers });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json().catch(() => ({ message: response.statusText }));
  if (!response.ok) throw new Error(body.message || body.error || ("HTTP " + response.status));
  return body;
};

const state = { type: null, prefix: "", pages: [undefined], page: 0, id: null };
const notice = (message) => { const n = $("notice"); n.replaceChildren(); if (message) n.append(el("div", { class: "error" }, message)); };
const guard = (f) => async (...args) => {
  try { notice(""); await f(...args); }
  catch (e) { if (e instanceof Unauthorized) showLogin(); else notice(String(e.message || e)); }
};

const showLogin = () => {
  $("app").hidden = true;
  $("login").hidden = false;
};
$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("durable-object-token", $("token").value);
  $("login").hidden = true;
  $("app").hidden = false;
  start();
});

const loadTypes = guard(async () => {
  const { types } = await api("types");
  const list = el("ul");
  for (const t of types) {
    const failed = t.failedAlarms > 0 ? el("span", { class: "count failed-count", title: "failed alarms" }, " ⚠ " + t.failedAlarms + (t.moreFailed ? "+" : "")) : "";
    list.append(el("li", { class: t.type === state.type ? "on" : "", "data-type": t.type, onclick: () => pickType(t.type) },
      el("span", {}, t.type), el("span", {}, el("span", { class: "count" }, t.objects + (t.moreObjects ? "+" : "")), failed)));
  }
  $("types").replaceChildren(el("h2", {}, "Object types"), types.length === 0 ? el("p", { class: "muted" }, "No objects stored yet.") : list);
  if (state.type === null && types.length > 0) pickType(types[0].type);
});

const pickType = (type) => {
  state.type = type; state.prefix = ""; state.pages = [undefined]; state.page = 0; state.id = null;
  $("search").value = "";
  for (const li of document.querySelectorAll("#types li")) li.classList.toggle("on", li.dataset.type === type);
  $("detail").replaceChildren(el("h2", {}, "Object"), el("p", { class: "muted" }, "Pick an object."));
  loadObjects(); loadFailed();
};

const loadObjects = guard(async () => {
  if (state.type === null) return;
  const query = new URLSearchParams({ type: state.type, limit: "25" });
  const after = state.pages[state.page];
  if (after !== undefined) query.set("after", after);
  if (state.prefix !== "") query.set("prefix", state.prefix);
  const page = await api("objects?" + query);
  const rows = page.objects.map((o) => el("tr", { class: "pick" + (o.id === state.id ? " on" : ""), "data-id": o.id, onclick: () => openObject(o.id) },
    el("td", {}, o.id), el("td", {}, o.version), el("td", {}, time(o.updatedAt)),
    el("td", {}, o.status ? el("span", { class: "badge " + o.status }, o.status) : "")));
  state.pages[state.page + 1] = page.next === undefined || page.next === null ? undefined : page.next;
  $("objects").replaceChildren(
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "id"), el("th", {}, "version"), el("th", {}, "updated"), el("th", {}, "status"))),
      el("tbody", {}, ...rows)),
    rows.length === 0 ? el("p", { class: "muted" }, state.prefix === "" ? "No objects." : "No object id starts with that.") : "",
    el("div", { class: "bar" },
      el("button", { id: "prev", onclick: () => { state.page--; loadObjects(); }, ...(state.page === 0 ? { disabled: "" } : {}) }, "← Previous"),
      el("span", { class: "muted" }, "page " + (state.page + 1)),
      el("button", { id: "next", onclick: () => { state.page++; loadObjects(); }, ...(page.next == null ? { disabled: "" } : {}) }, "Next →")));
  $("objects-title").textContent = state.type;
});

const retryButton = (type, id, name) => el("button", { class: "primary retry", "data-alarm": name, onclick: guard(async (event) => {
  event.stopPropagation();
  event.target.disabled = true;
  await api("retry", { method: "POST", body: JSON.stringify({ type, id, name }) });
  notice("");
  $("status").textContent = "Retried " + name + " on " + id + ": it fires now.";
  await Promise.all([loadFailed(), loadTypes(), state.id === id ? openObject(id) : null]);
}) }, "Retry");

const cancelButton = (type, id, name) => el("button", { class: "cancel", onclick: guard(async (event) => {
  event.stopPropagation();
  if (!confirm("Cancel alarm " + name + " of " + id + "?")) return;
  await api("cancel", { method: "POST", body: JSON.stringify({ type, id, name }) });
  $("status").textContent = "Cancelled " + name + " on " + id + ".";
  await Promise.all([loadFailed(), loadTypes(), state.id === id ? openObject(id) : null]);
}) }, "Cancel");

const loadFailed = guard(async () => {
  if (state.type === null) return;
  const type = state.type;
  const { alarms, next } = await api("failed?" + new URLSearchParams({ type, limit: "50" }));
  const rows = alarms.map((a) => el("tr", { class: "pick", onclick: () => openObject(a.id) },
    el("td", {}, a.id), el("td", { class: "nowrap" }, a.name), el("td", {}, time(a.failedAt)), el("td", {}, a.attempts),
    el("td", {}, el("div", { class: "error" }, a.lastError || "-")),
    el("td", { class: "nowrap" }, retryButton(type, a.id, a.name), " ", cancelButton(type, a.id, a.name))));
  $("failed").replaceChildren(el("h3", {}, "Failed alarms"), rows.length === 0 ? el("p", { class: "muted" }, "None.") :
    el("table", {}, el("thead", {}, el("tr", {}, ...["object", "alarm", "failed at", "attempts", "last error", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    next != null ? el("p", { class: "muted" }, "More failed alarms than shown.") : "");
});

const openObject = guard(async (id) => {
  state.id = id;
  for (const tr of document.querySelectorAll("#objects tr.pick")) tr.classList.toggle("on", tr.dataset.id === id);
  const type = state.type;
  const o = await api("object?" + new URLSearchParams({ type, id }));
  let pretty = o.stateJson;
  try { pretty = JSON.stringify(JSON.parse(o.stateJson), null, 2); } catch {}
  const alarms = o.alarms.map((a) => el("tr", { "data-alarm": a.name },
    el("td", { class: "nowrap" }, a.name), el("td", {}, time(a.fireAt)), el("td", {}, a.attempts),
    el("td", {}, a.failedAt != null ? el("span", { class: "badge failed" }, "failed " + time(a.failedAt)) : a.claimedUntil != null ? "claimed until " + time(a.claimedUntil) : "due"),
    el("td", {}, a.lastError ? el("div", { class: "error" }, a.lastError) : "-"),
    el("td", {}, el("code", {}, a.payload)),
    el("td", {}, a.failedAt != null ? retryButton(type, id, a.name) : "")));
  $("detail").replaceChildren(
    el("h2", {}, type + " / " + id),
    el("dl", { class: "kv" },
      el("dt", {}, "version"), el("dd", { id: "version" }, o.version),
      el("dt", {}, "created"), el("dd", {}, time(o.createdAt)),
      el("dt", {}, "updated"), el("dd", {}, time(o.updatedAt)),
      el("dt", {}, "status"), el("dd", {}, o.status || el("span", { class: "muted" }, "unknown (no runtime here)"))),
    o.decodeError ? el("div", { class: "error", id: "decode-error" }, "The stored state does not decode: " + o.decodeError) : "",
    el("h3", {}, o.decoded === false ? "State (as stored; not decoded here)" : "State"),
    el("pre", { id: "state" }, pretty === "" ? "(unreadable row)" : pretty),
    el("h3", {}, "Alarms"),
    alarms.length === 0 ? el("p", { class: "muted" }, "No alarms.") :
      el("table", { id: "alarms" }, el("thead", {}, el("tr", {}, ...["name", "due", "attempts", "state", "last error", "payload", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...alarms)));
});

// Rates: the runtime's counters, sampled every 2 s; the rate is the change over the last sample.
let last = null;
const sampleRates = guard(async () => {
  const m = await api("metrics");
  if (!m.live) { $("rates").replaceChildren(el("span", { class: "muted" }, "rates: no runtime in this process")); return; }
  const now = performance.now();
  const rate = (key) => last === null ? "–" : ((m[key] - last[key]) / ((now - last.at) / 1000)).toFixed(1);
  $("rates").replaceChildren(
    el("span", {}, "calls/s ", el("b", { id: "rate-calls" }, rate("calls"))),
    el("span", {}, "commits/s ", el("b", { id: "rate-commits" }, rate("commits"))),
    el("span", {}, "alarms/s ", el("b", { id: "rate-alarms" }, rate("alarms"))),
    el("span", { class: "muted" }, "totals " + m.calls + " / " + m.commits + " / " + m.alarms));
  last = { ...m, at: now };
});

let searchTimer;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { state.prefix = $("search").value; state.pages = [undefined]; state.page = 0; loadObjects(); }, 200);
});
$("refresh").addEventListener("click", () => { loadTypes(); loadObjects(); loadFailed(); if (state.id) openObject(state.id); });

let started = false;
const start = () => {
  loadTypes(); sampleRates();
  if (!started) { started = true; setInterval(sampleRates, 2000); }
};
start();
`

/** Escapes text for an HTML attribute or text node. */
const escape = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** The page, for an inspector mounted at `base` (no trailing slash). */
export const page = (base: string, title: string): string =>
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)}</title>
<style>${css}</style>
</head>
<body data-base="${escape(base)}">
<header>
  <h1>${escape(title)}</h1>
  <div id="rates" class="muted">rates: …</div>
  <span id="status" class="muted"></span>
  <button id="refresh" style="margin-left:auto">Refresh</button>
</header>
<div id="notice"></div>
<section id="login" hidden>
  <h2>Token required</h2>
  <p class="muted">This inspector is protected by a bearer token. Paste it here (it is kept in this tab only).</p>
  <form id="login-form" class="bar"><input id="token" type="password" autocomplete="off"><button class="primary">Open</button></form>
</section>
<main id="app">
  <section id="types"><h2>Object types</h2><p class="muted">Loading…</p></section>
  <section>
    <h2 id="objects-title">Objects</h2>
    <div class="bar"><input id="search" type="search" placeholder="Search ids by prefix"></div>
    <div id="objects"></div>
    <div id="failed"></div>
  </section>
  <section id="detail"><h2>Object</h2><p class="muted">Pick an object.</p></section>
</main>
<script>${script}</script>
</body>
</html>
`
