// The HyperMesh dashboard page: state from the server-sent event stream (/api/events),
// usage from /api/usage, an Instance's log followed live (/api/logs?follow=true),
// actions through the JSON API. Every call names the namespace picked in the header
// ("" = all namespaces). Hand-written, no build step; every text from the cluster goes
// in with textContent, never as HTML.
"use strict";

const state = { namespaces: new Map(), nodes: new Map(), assets: new Map(), workloads: new Map(), instances: new Map(), events: new Map() };
const NAMESPACED = ["workloads", "instances", "events"];
let allowed = {};
let namespace = "default";       // the namespace shown; "" for all
let defaultNamespace = "default"; // the one hmctl dashboard was started for
let eventsFor = null;
let logsOf = null;                // { namespace, name } of the log shown
let logSource = null;             // its EventSource while following
let eventSource = null;
let logText = "";
const MAX_LOG_CHARS = 1 << 20;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

const key = (o) => { const m = o.metadata || {}; return (m.namespace || "") + "/" + (m.name || ""); };
const nameOf = (o) => (o.metadata || {}).name || "";
const nsOf = (o) => (o.metadata || {}).namespace || "";
const allNamespaces = () => namespace === "";
const nsQuery = () => `namespace=${encodeURIComponent(namespace)}`;
const cond = (obj, type) => (((obj.status || {}).conditions) || []).find((c) => c.type === type);

function notice(text, isError) {
  const p = document.getElementById("notice");
  p.textContent = text;
  p.className = isError ? "error" : "";
  p.hidden = !text;
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) { init.headers["content-type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  const type = r.headers.get("content-type") || "";
  const data = type.startsWith("application/json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((data && data.error) || data || r.statusText);
  return data;
}

async function act(method, path, body) {
  try { const r = await api(method, path, body); notice(r.message || "done", false); }
  catch (e) { notice(e.message, true); }
}

// ---- rendering -------------------------------------------------------------------

function render() { renderNamespaces(); renderNodes(); renderWorkloads(); renderInstances(); renderEvents(); }

// The header's choice: "all namespaces", then every namespace the user may list (and
// the dashboard's own, even when they may not list namespaces).
function renderNamespaces() {
  const select = document.getElementById("namespace");
  const names = new Set([...state.namespaces.values()].map(nameOf));
  names.add(defaultNamespace);
  if (namespace) names.add(namespace);
  const wanted = ["", ...[...names].sort()];
  const have = [...select.options].map((o) => o.value);
  if (have.join("\n") !== wanted.join("\n")) {
    select.replaceChildren(...wanted.map((n) => el("option", { value: n }, n === "" ? "all namespaces" : n)));
  }
  select.value = namespace;
}

function renderNodes() {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  const nodes = [...state.nodes.values()].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
  for (const n of nodes) {
    const name = nameOf(n), spec = n.spec || {}, status = n.status || {};
    const ready = cond(n, "Ready"), suspect = cond(n, "Suspect");
    const isSuspect = suspect && suspect.status === "True";
    const conditions = (status.conditions || []).map((c) => `${c.type}=${c.status}${c.reason ? " (" + c.reason + ")" : ""}`).join(", ");
    const assets = [...state.assets.values()].filter((a) => (a.spec || {}).nodeName === name)
      .sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    const assetList = el("ul", { class: "assets" }, ...assets.map((a) => {
      const s = a.spec || {}, cap = Object.entries(s.capacity || {}).map(([k, v]) => `${k}=${v}`).join(" ");
      const proof = s.proof ? "proof" : "no proof";
      return el("li", { "data-asset": nameOf(a) }, `${s.type || "?"} ${nameOf(a)} ${cap} · ${s.privacy || ""} · ${proof} · ${(a.status || {}).address || ""}`);
    }));
    const actions = el("td", {});
    if (allowed.cordon) {
      const cordon = !spec.unschedulable;
      actions.append(el("button", { type: "button", class: "action", "data-action": cordon ? "cordon" : "uncordon", "data-name": name,
        onclick: () => act("POST", "/api/cordon", { name, cordon }) }, cordon ? "Cordon" : "Uncordon"));
    }
    body.append(el("tr", { "data-name": name },
      el("td", { class: "name" }, name),
      el("td", { class: ready && ready.status === "True" ? "good" : "bad" }, ready ? ready.status : "Unknown"),
      el("td", { class: isSuspect ? "bad" : "", "data-suspect": isSuspect ? "true" : "false" }, isSuspect ? `Suspect: ${suspect.reason || ""} ${suspect.message || ""}` : "no"),
      el("td", {}, spec.unschedulable ? "cordoned" : "yes"),
      el("td", {}, conditions),
      el("td", {}, el("details", {}, el("summary", {}, `${assets.length} assets`), assetList)),
      el("td", {}, (status.allocatable || {}).cpu || ""),
      el("td", {}, (status.allocatable || {}).memory || ""),
      actions));
  }
}

// The replicas box and Scale button of each workload outlive re-renders, so what the
// user is typing is not reset by a live update.
const scaleControls = new Map();

function scaleControl(ns, name, replicas) {
  const k = `${ns}/${name}`;
  let c = scaleControls.get(k);
  if (!c) {
    const input = el("input", { type: "number", min: "0", class: "replicas", "data-name": name, "data-namespace": ns });
    c = { input, dirty: false };
    c.button = el("button", { type: "button", class: "action", "data-action": "scale", "data-name": name, "data-namespace": ns,
      onclick: async () => { await act("POST", "/api/scale", { namespace: ns, name, replicas: Number(input.value) }); c.dirty = false; scheduleRender(); } }, "Scale");
    for (const e of ["input", "change", "keydown"]) input.addEventListener(e, () => { c.dirty = true; });
    input.addEventListener("blur", scheduleRender);
    scaleControls.set(k, c);
  }
  if (!c.dirty) c.input.value = String(replicas);
  return c;
}

function renderWorkloads() {
  const active = document.activeElement;
  if (active && active.matches && active.matches("#workloads input")) return; // typing: wait for blur
  const body = document.querySelector("#workloads tbody");
  body.replaceChildren();
  const items = [...state.workloads.values()].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
  for (const k of [...scaleControls.keys()]) if (!items.some((w) => key(w) === k)) scaleControls.delete(k);
  for (const w of items) {
    const name = nameOf(w), ns = nsOf(w), spec = w.spec || {}, st = w.status || {};
    const replicas = spec.replicas || 0;
    const actions = el("td", {});
    if (allowed.scale) {
      const c = scaleControl(ns, name, replicas);
      actions.append(c.input, c.button);
    }
    if (allowed.deleteWorkloads) {
      actions.append(el("button", { type: "button", class: "action", "data-action": "delete-workload", "data-name": name,
        onclick: () => { if (confirm(`Delete workload ${ns}/${name} and its instances?`)) act("POST", "/api/delete", { namespace: ns, kind: "workloads", name }); } }, "Delete"));
    }
    actions.append(el("button", { type: "button", "data-action": "events", onclick: () => showEvents("Workload", ns, name) }, "Events"));
    body.append(el("tr", { "data-name": name, "data-namespace": ns },
      el("td", { class: "namespace ns-col" }, ns),
      el("td", { class: "name" }, name),
      el("td", {}, `${st.readyReplicas || 0}/${replicas}`),
      el("td", {}, st.updatedReplicas || 0),
      el("td", {}, st.availableReplicas || 0),
      el("td", { class: "replica-count" }, replicas),
      actions));
  }
}

function instanceStatus(i) {
  const m = i.metadata || {}, st = i.status || {};
  if (m.deletionTimestamp) return "Terminating";
  for (const c of st.containerStatuses || []) {
    const waiting = (c.state || {}).waiting;
    if (waiting && waiting.reason) return waiting.reason;
  }
  if (st.reason) return st.reason;
  const phase = st.phase || "PENDING";
  return phase.charAt(0) + phase.slice(1).toLowerCase();
}

function renderInstances() {
  const body = document.querySelector("#instances tbody");
  body.replaceChildren();
  const items = [...state.instances.values()].sort((a, b) => key(a).localeCompare(key(b)));
  for (const i of items) {
    const name = nameOf(i), ns = nsOf(i), st = i.status || {}, cs = st.containerStatuses || [];
    const ready = cs.filter((c) => c.ready).length;
    const restarts = cs.reduce((n, c) => n + (c.restartCount || 0), 0);
    const actions = el("td", {});
    if (allowed.logs) actions.append(el("button", { type: "button", "data-action": "logs", "data-name": name, "data-namespace": ns, onclick: () => followLogs(ns, name) }, "Logs"));
    actions.append(el("button", { type: "button", "data-action": "events", onclick: () => showEvents("Instance", ns, name) }, "Events"));
    if (allowed.deleteInstances) {
      actions.append(el("button", { type: "button", class: "action", "data-action": "delete-instance", "data-name": name,
        onclick: () => { if (confirm(`Delete instance ${ns}/${name}?`)) act("POST", "/api/delete", { namespace: ns, kind: "instances", name }); } }, "Delete"));
    }
    const selected = logsOf && logsOf.namespace === ns && logsOf.name === name;
    body.append(el("tr", { "data-name": name, "data-namespace": ns, class: selected ? "selected" : "" },
      el("td", { class: "namespace ns-col" }, ns),
      el("td", { class: "name" }, name),
      el("td", { class: "status" }, instanceStatus(i)),
      el("td", {}, `${ready}/${cs.length || ((i.spec || {}).containers || []).length}`),
      el("td", {}, restarts),
      el("td", { class: "node" }, (i.spec || {}).nodeName || "<none>"),
      el("td", {}, st.address || ""),
      actions));
  }
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function renderEvents() {
  const body = document.querySelector("#events tbody");
  body.replaceChildren();
  document.getElementById("events-for").textContent = eventsFor ? `for ${eventsFor.kind.toLowerCase()}/${eventsFor.name}` : "";
  let items = [...state.events.values()].map((e) => ({ ...(e.spec || {}), namespace: nsOf(e) }));
  if (eventsFor) items = items.filter((s) => (s.involvedObject || {}).kind === eventsFor.kind && (s.involvedObject || {}).name === eventsFor.name && s.namespace === eventsFor.namespace);
  items.sort((a, b) => Date.parse(b.lastTimestamp || 0) - Date.parse(a.lastTimestamp || 0));
  for (const s of items.slice(0, 100)) {
    const o = s.involvedObject || {};
    body.append(el("tr", {},
      el("td", {}, ago(s.lastTimestamp)),
      el("td", { class: "namespace ns-col" }, s.namespace),
      el("td", { class: s.type === "Warning" ? "bad" : "" }, s.type || ""),
      el("td", {}, s.reason || ""),
      el("td", {}, `${(o.kind || "").toLowerCase()}/${o.name || ""}`),
      el("td", {}, s.count || 1),
      el("td", {}, s.message || "")));
  }
}

function showEvents(kind, ns, name) {
  const same = eventsFor && eventsFor.kind === kind && eventsFor.namespace === ns && eventsFor.name === name;
  eventsFor = same ? null : { kind, namespace: ns, name };
  renderEvents();
}

// ---- logs, followed live --------------------------------------------------------------

function logState(text, live) {
  const badge = document.getElementById("logs-state");
  badge.textContent = text;
  badge.className = live ? "badge" : "badge off";
}

function appendLog(text) {
  const pre = document.getElementById("logs");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  logText += text;
  if (logText.length > MAX_LOG_CHARS) logText = logText.slice(-MAX_LOG_CHARS);
  pre.textContent = logText;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

// Stops following (the server then cancels the agent's follow too).
function stopLogs() {
  if (logSource) { logSource.close(); logSource = null; }
}

function closeLogs() {
  stopLogs();
  logsOf = null;
  document.getElementById("logs-section").hidden = true;
  renderInstances();
}

// Shows the last 500 lines of an Instance's log, then each line as it is written.
function followLogs(ns, name) {
  stopLogs();
  logsOf = { namespace: ns, name };
  document.getElementById("logs-section").hidden = false;
  document.getElementById("logs-name").textContent = `${ns}/${name}`;
  logText = "";
  document.getElementById("logs").textContent = "";
  logState("connecting", false);
  const source = new EventSource(`/api/logs?namespace=${encodeURIComponent(ns)}&name=${encodeURIComponent(name)}&tail=500&follow=true`);
  logSource = source;
  // Every (re)connection sends the tail again: start from it.
  source.onopen = () => { if (logSource !== source) return; logText = ""; appendLog(""); logState("following", true); };
  source.onerror = () => { if (logSource === source) logState("reconnecting", false); };
  source.onmessage = (e) => {
    if (logSource !== source) return;
    let m;
    try { m = JSON.parse(e.data); } catch (err) { console.error(err); return; }
    if (typeof m.text === "string") appendLog(m.text);
    if (m.error) appendLog(`\n[${m.error}]\n`);
    if (m.end) { stopLogs(); logState("ended", false); }
  };
  renderInstances();
}

// ---- usage chart ---------------------------------------------------------------------

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function human(bytes) {
  const units = ["B", "Ki", "Mi", "Gi", "Ti"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return `${bytes.toFixed(bytes < 10 && i ? 1 : 0)}${units[i]}`;
}

function drawChart(svg, series, format) {
  svg.replaceChildren();
  const W = 600, H = 200, L = 50, B = 20;
  const points = series.flatMap((s) => s.points);
  if (!points.length) { svg.append(svgEl("text", { x: 10, y: 20 }, "no samples yet")); return; }
  const t0 = Math.min(...points.map((p) => p[0])), t1 = Math.max(...points.map((p) => p[0]), t0 + 1);
  const vmax = Math.max(...points.map((p) => p[1]), 1);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - 5);
  const y = (v) => H - B - (v / vmax) * (H - B - 10);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W, y2: H - B, stroke: "#999" }));
  svg.append(svgEl("text", { x: 2, y: 14, "font-size": 11 }, format(vmax)));
  svg.append(svgEl("text", { x: 2, y: H - B, "font-size": 11 }, format(0)));
  svg.append(svgEl("text", { x: L, y: H - 4, "font-size": 11 }, new Date(t0 * 1000).toLocaleTimeString()));
  svg.append(svgEl("text", { x: W - 70, y: H - 4, "font-size": 11 }, new Date(t1 * 1000).toLocaleTimeString()));
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg.append(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.5, "data-series": s.name, "data-points": s.points.length }));
    if (s.points.length === 1) {
      const [t, v] = s.points[0];
      svg.append(svgEl("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: s.color }));
    }
  }
}

async function refreshUsage() {
  let data;
  try { data = await api("GET", `/api/usage?${nsQuery()}`); } catch (e) { return undefined; }
  const series = new Map();
  const add = (label, t, u) => {
    if (!series.has(label)) series.set(label, { name: label, cpu: [], mem: [] });
    const s = series.get(label);
    if (u.cpuMillicores !== null && u.cpuMillicores !== undefined) s.cpu.push([t, u.cpuMillicores]);
    s.mem.push([t, u.memoryBytes]);
  };
  for (const sample of data.samples) {
    for (const u of sample.nodes) add(`node/${u.name}`, sample.time, u);
    for (const u of sample.instances) add(allNamespaces() ? `instance/${u.namespace}/${u.name}` : `instance/${u.name}`, sample.time, u);
  }
  const list = [...series.values()].map((s, i) => ({ ...s, color: COLORS[i % COLORS.length] }));
  drawChart(document.getElementById("cpu-chart"), list.map((s) => ({ name: s.name, color: s.color, points: s.cpu })), (v) => `${Math.round(v)}m`);
  drawChart(document.getElementById("memory-chart"), list.map((s) => ({ name: s.name, color: s.color, points: s.mem })), human);
  const legend = document.getElementById("legend");
  legend.replaceChildren(...list.map((s) => {
    const sw = el("span", { class: "swatch" });
    sw.style.background = s.color;
    return el("li", {}, sw, s.name);
  }));
  return data.everyMs;
}

// ---- live updates ------------------------------------------------------------------

function apply(message) {
  const map = state[message.kind];
  if (!map) return;
  const err = document.getElementById(`${message.kind}-error`);
  if (message.type === "error") {
    if (err) { err.textContent = message.message; err.hidden = false; }
    return;
  }
  if (err) err.hidden = true;
  if (message.type === "restarted") {
    map.clear();
    for (const o of message.items) map.set(key(o), o);
  } else if (message.type === "applied") {
    map.set(key(message.object), message.object);
  } else if (message.type === "deleted") {
    map.delete(key(message.object));
  }
  scheduleRender();
}

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

// (Re)opens the live stream for the namespace shown.
function connect() {
  if (eventSource) eventSource.close();
  const live = document.getElementById("live");
  live.textContent = "connecting"; live.className = "badge off";
  const source = new EventSource(`/api/events?${nsQuery()}`);
  eventSource = source;
  source.onopen = () => { if (eventSource !== source) return; live.textContent = "live"; live.className = "badge"; };
  source.onerror = () => { if (eventSource !== source) return; live.textContent = "reconnecting"; live.className = "badge off"; };
  source.onmessage = (e) => { if (eventSource !== source) return; try { apply(JSON.parse(e.data)); } catch (err) { console.error(err); } };
}

// Asks what the user may do in the namespace shown (before one is picked: in the
// dashboard's own, which the answer names).
async function loadAccess() {
  try {
    const access = await api("GET", namespace === null ? "/api/access" : `/api/access?${nsQuery()}`);
    allowed = access.allowed || {};
    defaultNamespace = access.defaultNamespace || defaultNamespace;
    document.getElementById("who").textContent = `${access.identity} · ${access.namespace === "" ? "all namespaces" : "namespace " + access.namespace}`;
    notice("", false);
  } catch (e) {
    allowed = {};
    notice(`cannot ask the apiserver what you may do (${e.message}); no actions are offered`, true);
  }
}

async function pickNamespace(ns) {
  if (ns === namespace) return;
  namespace = ns;
  document.body.classList.toggle("all-namespaces", allNamespaces());
  closeLogs();
  eventsFor = null;
  for (const kind of NAMESPACED) state[kind].clear();
  scaleControls.clear();
  connect();
  await loadAccess();
  render();
  refreshUsage();
}

async function start() {
  namespace = null;
  await loadAccess();
  namespace = defaultNamespace;
  document.body.dataset.ready = "true";
  document.getElementById("namespace").addEventListener("change", (e) => pickNamespace(e.target.value));
  document.getElementById("logs-close").addEventListener("click", closeLogs);
  document.getElementById("logs-refresh").addEventListener("click", () => { if (logsOf) followLogs(logsOf.namespace, logsOf.name); });
  // Leaving the page ends the streams at once (the server then stops following).
  window.addEventListener("pagehide", () => { stopLogs(); if (eventSource) eventSource.close(); });
  connect();
  render();
  const every = await refreshUsage();
  setInterval(refreshUsage, Math.max(1000, every || 5000));
  setInterval(renderEvents, 10000);
}

document.addEventListener("DOMContentLoaded", start);
