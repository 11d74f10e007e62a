// The operator console: what is live, whether every replica is on it, what changed and
// when; and, by role, the actions. Data comes from the admin JSON API and its live stream.
import { h, fill, table, cells, stateBadge, iso, ago } from "/console/dom.js";
import { lineChart, colour } from "/console/chart.js";

const ROLES = ["viewer", "operator", "admin"];
const DOMAINS = ["policy", "routing", "config"];
const $ = (id) => document.getElementById(id);
let me = null;           // {name, role, csrf}
let live = null;         // the last status snapshot
let rates = null;        // the chart's samples
let stream = null;       // the EventSource
let pendingAction = null; // {before: change id, replicas: [...]} while a flip waits at its barrier

const can = (role) => me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["x-csrf-token"] = me ? me.csrf : "";
  if (body !== undefined) headers["content-type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {  // the admin API is unreachable: a flip may or may not have been made
    return { status: 0, ok: false, data: { error: { message: `no answer from the admin API (${err}); re-read the state before retrying` } } };
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (r.status === 401 && path !== "/console/session") signedOut();
  return { status: r.status, ok: r.ok, data };
}

function errorText(reply) {
  return reply.data && reply.data.error ? reply.data.error.message : `HTTP ${reply.status}`;
}

function banner(message) {
  const el = $("banner");
  el.hidden = !message;
  fill(el, message || "");
}

// ---- sign-in ---------------------------------------------------------------------------

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  window.addEventListener("hashchange", show);
  const r = await api("GET", "/console/session");
  if (r.ok) signedIn(r.data); else signedOut();
}

async function signIn(event) {
  event.preventDefault();
  const r = await api("POST", "/console/session", { token: $("token").value });
  $("token").value = "";
  if (!r.ok) { fill($("sign-in-error"), errorText(r)); return; }
  fill($("sign-in-error"), "");
  signedIn(r.data);
}

function signedIn(session) {
  me = session;
  fill($("overview"));  // drawn afresh for this role
  $("sign-in").hidden = true;
  $("tabs").hidden = false;
  fill($("whoami"), `${me.name} (${me.role})`, h("button", { id: "sign-out", onclick: signOut }, "Sign out"));
  connect();
  show();
}

function signedOut() {
  me = null;
  if (stream) { stream.close(); stream = null; }
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("tabs").hidden = true;
  fill($("whoami"), "");
  $("sign-in").hidden = false;
}

async function signOut() {
  await api("DELETE", "/console/session");
  signedOut();
}

// ---- the live stream -------------------------------------------------------------------

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/v1/live");
  stream.addEventListener("status", (e) => { live = JSON.parse(e.data); banner(""); renderOverview(); updateBarrier(); });
  stream.addEventListener("rates", (e) => { rates = JSON.parse(e.data); renderChart(); });
  stream.addEventListener("problem", (e) => banner(JSON.parse(e.data).message));
  stream.addEventListener("error", async () => {
    if (stream.readyState === EventSource.CLOSED) {  // refused (the session ended): check, then retry
      const r = await api("GET", "/console/session");
      if (r.ok) setTimeout(connect, 2000);
    }
  });
}

setInterval(() => {  // heartbeat ages move with the clock, not with the stream
  for (const el of document.querySelectorAll("[data-heartbeat]")) fill(el, ago(Number(el.dataset.heartbeat)));
}, 1000);

// ---- views -----------------------------------------------------------------------------

function show() {
  const name = (location.hash || "#overview").slice(1);
  const view = ["overview", "history", "at", "audit"].includes(name) ? name : "overview";
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== view;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("current", a.getAttribute("href") === `#${view}`);
  if (view === "overview") renderOverview();
  if (view === "history") renderHistory();
  if (view === "at") renderAt();
  if (view === "audit") renderAudit();
}

function describeCandidate(c) {
  if (!c) return "-";
  return `v${c.version} at ${c.share / 100}%${c.shadow ? " (shadow)" : ""}`;
}

function overviewSkeleton() {
  const root = $("overview");
  if (root.querySelector("#live")) return;
  fill(root,
    h("h2", {}, "What is live"), h("div", { class: "card", id: "live" }),
    h("h2", {}, "Replicas"), h("div", { class: "card", id: "replicas" }),
    h("h2", {}, "Last change"), h("div", { class: "card", id: "last-change" }),
    h("h2", {}, "Traffic by version, last 15 minutes"),
    h("div", { class: "grid" },
      h("div", { class: "card chart", id: "chart-rps" }), h("div", { class: "card chart", id: "chart-errors" })),
    can("admin") ? pushForm() : null);
}

function renderOverview() {
  if (!me) return;
  overviewSkeleton();
  if (!live) return;
  const cols = ["domain", "scope", "previous", "current", "candidate", ""];
  const drawn = JSON.stringify(live.pointers);  // redrawn only when it changed: a button under a finger stays put
  if ($("live").dataset.drawn !== drawn) fill($("live"), table(cols, live.pointers.map((p) => h("tr", { "data-pointer": `${p.domain}/${p.scope}` },
    cells(cols, [p.domain, p.scope, p.previous ? `v${p.previous}` : "-", h("strong", {}, `v${p.current}`),
      describeCandidate(p.candidate), actionsFor(p)])))));
  $("live").dataset.drawn = drawn;
  if (live.store_problem) banner(`control store: ${live.store_problem}`);
  const rcols = ["replica", "state", "last heartbeat", "applied change", "serves"];
  fill($("replicas"), table(rcols, live.replicas.map((r) => h("tr", { "data-replica": r.name },
    cells(rcols, [h("span", { title: `${r.host} pid ${r.pid}` }, r.name), stateBadge(r.state),
      h("span", { "data-heartbeat": r.heartbeat_at }, ago(r.heartbeat_at)), String(r.applied_change),
      Object.entries(r.versions).map(([k, v]) => `${k} v${v}`).join(", ")])))));
  const c = live.last_change;
  fill($("last-change"), c ? changeSummary(c) : h("p", { class: "muted" }, "no change yet"));
}

function changeSummary(c) {
  return h("div", { class: "change", "data-change": c.id },
    h("div", {}, h("strong", {}, `#${c.id} ${c.kind}`), ` by ${c.actor} at ${iso(c.at)}`),
    h("div", {}, c.items.map((i) => `${i.domain}/${i.scope} ${i.prev === null ? "unset" : "v" + i.prev} → ${i.new === null ? "unset" : "v" + i.new}${i.candidate ? " + candidate " + describeCandidate(i.candidate) : ""}`).join("; ")),
    h("div", { class: "reason" }, "reason: ", h("q", { class: "reason-text" }, c.reason)));
}

function actionsFor(p) {
  if (!can("operator") || p.scope === "shadow") return "";
  const key = `${p.domain}/${p.scope}`;
  const btn = (action, label, extra = {}) => h("button", { "data-action": action, "data-target": key,
    onclick: () => openAction(action, p, extra) }, label);
  const out = [btn("activate", "Activate…"), p.previous ? btn("rollback", `Roll back to v${p.previous}`) : null,
    btn("canary", p.candidate ? "Canary share…" : "Canary…")];
  if (p.candidate) out.push(btn("promote", `Promote v${p.candidate.version}`), btn("abort", "Abort canary"));
  if (p.domain === "policy") out.push(btn("killswitch", "Kill switch…"));
  return out;
}

function renderChart() {
  if (!rates || !$("chart-rps")) return;
  const times = rates.t;
  const legend = h("div", { class: "legend" }, rates.series.map((s, i) => {
    const el = h("span", {}, s.label);
    el.style.setProperty("--swatch", colour(i));
    return el;
  }));
  const rps = rates.series.map((s) => ({ label: s.label, values: s.rps }));
  const err = rates.series.map((s) => ({ label: s.label, values: s.error_rate.map((v) => (v === null ? null : v * 100)) }));
  fill($("chart-rps"), h("div", { class: "muted" }, "requests per second"), lineChart(times, rps, 900, (v) => v.toFixed(v < 10 ? 1 : 0), 1), legend);
  fill($("chart-errors"), h("div", { class: "muted" }, "error rate (5xx), %"), lineChart(times, err, 900, (v) => v.toFixed(1), 1), legend.cloneNode(true));
  for (const [i, el] of [...$("chart-errors").querySelectorAll(".legend span")].entries()) el.style.setProperty("--swatch", colour(i));
}

// ---- actions ---------------------------------------------------------------------------

function liveReplicas() {
  return live ? live.replicas.filter((r) => r.state !== "gone").map((r) => r.name) : [];
}

function openAction(action, p, extra) {
  const key = `${p.domain}/${p.scope}`;
  const fields = $("action-fields");
  fill(fields);
  let what = "";
  let build = () => ({});
  if (action === "rollback") {
    what = `Roll back ${key}: v${p.current} → v${p.previous}${p.candidate ? ` (drops candidate v${p.candidate.version})` : ""}.`;
    build = () => ({ domain: p.domain, scope: p.scope, expect: p.current });
  } else if (action === "activate") {
    const input = h("input", { type: "number", min: 1, name: "version", id: "action-version", required: true });
    fields.append(h("label", {}, "Version ", input));
    what = `Activate a version of ${key} (now v${p.current}).`;
    build = () => ({ domain: p.domain, scope: p.scope, version: Number(input.value), expect: p.current });
    input.addEventListener("input", () => fill($("action-what"), `Activate ${key}: v${p.current} → v${input.value}.`));
  } else if (action === "canary") {
    const version = h("input", { type: "number", min: 1, name: "version", id: "action-version",
      placeholder: p.candidate ? `v${p.candidate.version}` : "" });
    const percent = h("input", { type: "number", min: 0, max: 100, step: "any", name: "percent", id: "action-percent", required: true });
    fields.append(h("label", {}, "Candidate version ", version), h("label", {}, "Share, % ", percent));
    what = `Canary on ${key}: candidate ${p.candidate ? describeCandidate(p.candidate) : "none"} → the version and share below.`;
    build = () => ({ domain: p.domain, scope: p.scope, percent: Number(percent.value),
      ...(version.value ? { version: Number(version.value) } : {}) });
  } else if (action === "promote") {
    what = `Promote ${key}: candidate v${p.candidate.version} becomes current (v${p.current} becomes previous).`;
    build = () => ({ domain: p.domain, scope: p.scope });
  } else if (action === "abort") {
    what = `Abort the canary on ${key}: v${p.candidate.version}'s share ${p.candidate.share / 100}% → 0%, held.`;
    build = () => ({ domain: p.domain, scope: p.scope, abort: true });
  } else if (action === "killswitch") {
    const state = h("select", { name: "state", id: "action-state" }, h("option", { value: "on" }, "on: deny every request"),
      h("option", { value: "off" }, "off: restore the previous policy"));
    fields.append(h("label", {}, "Kill switch ", state));
    what = `Kill switch for policy/${p.scope}: on denies every request of the scope; off restores what it had.`;
    build = () => ({ scope: p.scope, state: state.value });
  }
  const path = action === "abort" ? "/v1/canary" : `/v1/${action}`;
  fill($("action-title"), `${action} ${key}`);
  fill($("action-what"), what, ` Served by ${liveReplicas().length} live replica(s).`);
  $("action-reason").value = "";
  $("action-form").hidden = false;
  $("barrier").hidden = true;
  const dialog = $("action-dialog");
  dialog.onclose = null;
  $("action-form").onsubmit = (event) => {
    if (event.submitter && event.submitter.value === "cancel") return;
    event.preventDefault();
    run(path, { ...build(), reason: $("action-reason").value });
  };
  dialog.showModal();
}

async function run(path, body) {
  $("action-form").hidden = true;
  const box = $("barrier");
  box.hidden = false;
  pendingAction = { before: live && live.last_change ? live.last_change.id : 0, replicas: liveReplicas(), change: null };
  fill(box, h("h3", {}, "Waiting for every replica…"), h("ul", { id: "barrier-replicas" }), h("p", { id: "barrier-result" }));
  updateBarrier();
  const r = await api("POST", path, body);
  const result = $("barrier-result");
  if (r.data && r.data.change) {
    pendingAction = null;
    fill($("barrier-replicas"), r.data.replicas.map((a) => h("li", { "data-replica": a.replica },
      stateBadge(a.state), ` ${a.replica}`, a.after_ms !== null ? ` +${a.after_ms.toFixed(1)} ms` : "",
      a.error ? h("span", { class: "error" }, ` ${a.error}`) : "")));
    fill(box.querySelector("h3"), r.ok ? "Done" : "NOT in effect everywhere");
    fill(result, h("span", { class: r.ok ? "" : "error", id: "barrier-summary" }, `change #${r.data.change.id}: ${r.data.summary}`));
  } else {
    pendingAction = null;
    fill(box.querySelector("h3"), "Refused; nothing changed");
    fill(result, h("span", { class: "error", id: "barrier-summary" }, errorText(r)));
  }
  result.append(h("div", { class: "buttons" }, h("button", { id: "barrier-close", onclick: () => $("action-dialog").close() }, "Close")));
}

function updateBarrier() {  // acknowledgements as the live stream brings them, one by one
  if (!pendingAction || !live || !live.last_change || live.last_change.id <= pendingAction.before) return;
  const acks = new Map(live.acks.map((a) => [a.replica, a]));
  fill($("barrier-replicas"), pendingAction.replicas.map((name) => {
    const a = acks.get(name);
    const state = !a ? "waiting" : a.ok ? "in sync" : "refused";
    return h("li", { "data-replica": name }, stateBadge(state), ` ${name}`, a ? ` +${a.after_ms.toFixed(1)} ms` : "",
      a && a.error ? h("span", { class: "error" }, ` ${a.error}`) : "");
  }));
}

function pushForm() {
  const domain = h("select", { name: "domain", id: "push-domain" }, DOMAINS.map((d) => h("option", { value: d }, d)));
  const name = h("input", { name: "name", id: "push-name", placeholder: "policy-v2.yaml", required: true });
  const doc = h("textarea", { name: "document", id: "push-document", required: true, spellcheck: "false" });
  const reason = h("input", { name: "reason", id: "push-reason", required: true });
  const out = h("p", { id: "push-result" });
  const form = h("form", { class: "card", id: "push-form", onsubmit: async (event) => {
    event.preventDefault();
    const what = `Push ${name.value} as a new ${domain.value} version? It is validated and stored, not activated.`;
    if (!window.confirm(what)) return;
    const q = new URLSearchParams({ name: name.value, reason: reason.value });
    const r = await fetch(`/v1/versions/${domain.value}?${q}`, { method: "POST", credentials: "same-origin",
      headers: { "x-csrf-token": me.csrf, "content-type": "application/octet-stream" }, body: doc.value });
    const data = await r.json();
    fill(out, r.ok ? `stored as ${data.domain} v${data.id} (${data.digest})` : h("span", { class: "error" }, data.error.message));
  } }, h("label", {}, "Domain ", domain), h("label", {}, "File name ", name), h("label", {}, "Document", doc),
  h("label", {}, "Reason ", reason), h("button", { type: "submit" }, "Push"), out);
  return [h("h2", {}, "Push a version (admin)"), form];
}

// ---- history ---------------------------------------------------------------------------

async function renderHistory() {
  const root = $("history");
  const select = h("select", { id: "history-domain" }, h("option", { value: "" }, "every domain"),
    DOMAINS.map((d) => h("option", { value: d }, d)));
  const list = h("div", { class: "card", id: "changes" }, "loading…");
  const versions = h("div", { class: "card", id: "versions" });
  const docs = h("div", { id: "document" });
  fill(root, h("h2", {}, "Change records"), h("label", {}, "Domain ", select), list,
    h("h2", {}, "Versions"), versions, docs);
  const load = async () => {
    const domain = select.value;
    const r = await api("GET", `/v1/history${domain ? `?domain=${encodeURIComponent(domain)}` : ""}`);
    if (!r.ok) { fill(list, h("span", { class: "error" }, errorText(r))); return; }
    fill(list, r.data.changes.slice().reverse().map(changeSummary));
    const shown = domain ? [domain] : DOMAINS;
    const rows = [];
    for (const d of shown) {
      const v = await api("GET", `/v1/versions/${d}`);
      if (v.ok) for (const info of v.data.versions.slice().reverse()) rows.push([d, info]);
    }
    const cols = ["version", "name", "pushed", "by", "reason", ""];
    fill(versions, table(cols, rows.map(([d, info]) => h("tr", {}, cells(cols, [`${d} v${info.id}`, info.name,
      iso(info.created_at), info.actor, h("span", { class: "reason" }, info.reason),
      h("button", { "data-show": `${d}/${info.id}`, onclick: () => showVersion(d, info.id, docs) }, "Document and diff")])))));
  };
  select.addEventListener("change", load);
  await load();
}

async function showVersion(domain, id, box) {
  const [docReply, diffReply] = await Promise.all([
    fetch(`/v1/versions/${domain}/${id}`, { credentials: "same-origin" }).then(async (r) => ({ ok: r.ok, text: await r.text() })),
    api("GET", `/v1/versions/${domain}/${id}/diff`)]);
  const diff = diffReply.ok ? diffReply.data.diff.split("\n").map((line) => h("span", {
    class: line.startsWith("+") ? "diff-add" : line.startsWith("-") ? "diff-del" : line.startsWith("@@") ? "diff-hunk" : "" }, line + "\n")) : errorText(diffReply);
  fill(box, h("div", { class: "card" }, h("h3", {}, `${domain} v${id}`),
    h("div", { class: "muted" }, diffReply.ok && diffReply.data.against ? `diff against v${diffReply.data.against}` : "the first version"),
    h("pre", { id: "diff" }, diff), h("details", {}, h("summary", {}, "document as stored"), h("pre", { id: "doc" }, docReply.text))));
  box.scrollIntoView({ behavior: "smooth" });
}

// ---- at --------------------------------------------------------------------------------

function renderAt() {
  const root = $("at");
  const input = h("input", { id: "at-time", value: new Date().toISOString().replace(/\.\d+Z$/, "Z"), size: 26 });
  const out = h("div", { class: "card", id: "at-result" });
  const ask = async (event) => {
    if (event) event.preventDefault();
    const r = await api("GET", `/v1/at?t=${encodeURIComponent(input.value)}`);
    if (!r.ok) { fill(out, h("span", { class: "error" }, errorText(r))); return; }
    const cols = ["domain", "scope", "version", "candidate", "set by", "acknowledged by"];
    fill(out, h("div", { class: "muted" }, `in effect at ${iso(r.data.at)}`), table(cols, r.data.in_effect.map((e) =>
      h("tr", {}, cells(cols, [e.domain, e.scope, `v${e.version}`, describeCandidate(e.candidate),
        changeSummary(e.change), e.acknowledged_by.join(", ") || "-"])))));
  };
  fill(root, h("h2", {}, "What was in effect at an instant"),
    h("form", { onsubmit: ask }, h("label", {}, "Time (ISO 8601) ", input), h("button", { type: "submit", id: "at-ask" }, "Show")), out);
  ask();
}

// ---- audit -----------------------------------------------------------------------------

async function renderAudit() {
  const root = $("audit");
  const chains = h("div", { class: "card", id: "audit-chains" }, "loading…");
  const result = h("div", { class: "card", id: "audit-result" });
  const verify = h("button", { id: "audit-verify", onclick: async () => {
    fill(result, "verifying every chain…");
    const r = await api("POST", "/v1/audit/verify");
    if (!r.ok) { fill(result, h("span", { class: "error" }, errorText(r))); return; }
    const v = r.data;
    const cols = ["chain", "records", "head seq", "checkpoints verified", "signed by", "problems"];
    fill(result, h("strong", { id: "audit-verdict", class: v.intact ? "" : "error" }, v.intact ? "intact" : "NOT INTACT"),
      ` at ${iso(v.at)}`, table(cols, v.chains.map((c) => h("tr", {}, cells(cols, [c.chain, String(c.records),
        String(c.head_seq), String(c.checkpoints), c.signers.join(", ") || "-", c.problems.join("; ") || "-"])))),
      v.problems.map((p) => h("p", { class: "error" }, p)), v.notes.map((n) => h("p", { class: "muted" }, n)));
    loadChains();
  } }, "Verify now");
  fill(root, h("h2", {}, "Audit chains"), chains, verify, result);
  const loadChains = async () => {
    const r = await api("GET", "/v1/audit");
    if (!r.ok) { fill(chains, h("span", { class: "error" }, errorText(r))); return; }
    const last = r.data.last_verification;
    const cols = ["chain", "latest checkpoint", "signed", "signed by", "problem"];
    fill(chains, h("p", {}, last ? `last verified ${iso(last.at)} (${ago(last.at)}): ${last.intact ? "intact" : "NOT INTACT"}, ${last.records} records in ${last.chains} chain(s)` : "never verified from here"),
      table(cols, r.data.chains.map((c) => h("tr", {}, cells(cols, [c.chain, c.size ? `size ${c.size}` : "-",
        c.signed_at ? iso(c.signed_at) : "-", c.signed_by || "-", c.problem || "-"])))));
  };
  await loadChains();
}

start();
