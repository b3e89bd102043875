// lmsupervisor's dashboard: one EventSource (/events), everything rendered from what it sends.
// No polling and no timers: the page changes when the supervisor says something changed.
"use strict";

const view = { status: null, probes: [], answers: {}, restarts: [], logs: [] };
const HOUR = 3600, DAY = 86400, LOGS = 200;
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function badge(state) { return el("span", { class: `badge s-${state}` }, state); }

function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function when(iso) {
  if (!iso) return "—";
  const t = Date.parse(iso);
  return `${new Date(t).toLocaleString()} (${ago(Date.now() / 1000 - t / 1000)} ago)`;
}

function ms(value) { return value === null || value === undefined ? "—" : `${Number(value).toFixed(1)} ms`; }

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return `${(n / 1000 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fill(id, ...nodes) { $(id).replaceChildren(...nodes); }

function facts(rows) {
  return rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined || v === "" ? "—" : String(v))]);
}

function render() {
  const s = view.status;
  if (!s) return;
  const lm = s.lmstudio || {}, server = s.server || {}, restarts = s.restarts || {};
  fill("state", s.state);
  $("state").className = `badge s-${s.state}`;
  document.title = `${s.state}: LM Studio`;
  const next = s.state === "backoff" && restarts.next_attempt_at ? `; next attempt ${when(restarts.next_attempt_at)}` : "";
  fill("since", `since ${when(s.since)}${next}`);
  fill("facts", ...facts([
    ["Version", [lm.version, lm.kind].filter(Boolean).join(", ")],
    ["lms", lm.cli_version],
    ["Server", server.api_endpoint],
    ["Daemon PID", lm.daemon_pid],
    ["Last probe", ms(server.last_probe_ms)],
    ["Restarts", restarts.count],
    ["Last restart", restarts.last_reason ? `${restarts.last_reason}, ${when(restarts.last_at)}` : null],
    ["Supervisor", s.supervisor ? `${s.supervisor.version}, PID ${s.supervisor.pid}` : null],
    ["Config", s.supervisor && s.supervisor.config_error ? `rejected: ${s.supervisor.config_error}` : "in force"],
  ]));
  const caps = Object.entries(lm.capabilities || {}).filter(([, v]) => typeof v === "boolean");
  fill("capabilities", ...caps.map(([k, v]) => el("span", { class: v ? "chip" : "chip off", title: k }, k.replace(/_/g, " "))));
  renderHardware(s.hardware);
  renderModels(s.models || []);
  renderProblems(s.problems || []);
  renderRestarts(restarts.count);
  renderCharts();
  renderLog();
}

function renderHardware(hw) {
  if (!hw || !Array.isArray(hw.gpus)) { fill("hardware"); return; }
  const gpus = hw.gpus.map((g) => el("li", {}, [g.name, g.platform, g.vram_bytes ? bytes(g.vram_bytes) : null].filter(Boolean).join(", ")));
  fill("hardware", el("h3", {}, `GPUs${hw.runtime ? ` (runtime ${hw.runtime})` : ""}`),
    gpus.length ? el("ul", { class: "list" }, ...gpus) : el("p", { class: "muted" }, "none found"));
}

function renderModels(models) {
  if (!models.length) { fill("models", el("p", { class: "muted" }, "no model declared")); return; }
  fill("models", ...models.map((m) => {
    const name = m.identifier || m.key;
    const card = el("div", { class: "card model", "data-model": name },
      el("div", {}, el("span", { class: "name" }, name), " ", badge(m.state)));
    const rows = [["Key", m.key]];
    if (m.identifier) rows.push(["Identifier", m.identifier]);
    const points = view.answers[name] || [];
    const last = points.length ? points[points.length - 1] : null;
    if (m.last_answer_ms !== null && m.last_answer_ms !== undefined) {
      rows.push(["Last answer", `${ms(m.last_answer_ms)}${last ? `, ${ago(Date.now() / 1000 - last[0])} ago` : ""}`]);
    }
    if (m.tokens_per_second) rows.push(["Tokens/s", Number(m.tokens_per_second).toFixed(1)]);
    card.append(el("dl", {}, ...facts(rows)));
    const d = m.download;
    if (d && d.total_bytes) {
      card.append(el("progress", { max: String(d.total_bytes), value: String(d.bytes) }),
        el("p", { class: "muted" }, `${bytes(d.bytes)} of ${bytes(d.total_bytes)}${d.eta_s ? `, ${ago(d.eta_s)} left` : ""}`));
    }
    if (m.error) card.append(el("p", { class: "error" }, m.error));
    return card;
  }));
}

function renderProblems(problems) {
  if (!problems.length) { fill("problems", el("p", { class: "muted" }, "none")); return; }
  fill("problems", ...problems.map((p) => el("div", { class: "card problem" },
    el("div", {}, badge(p.severity || "error"), " ", el("code", {}, p.code)),
    el("p", {}, p.message), el("p", { class: "fix" }, `Fix: ${p.fix}`))));
}

// -- charts: inline SVG, no library ------------------------------------------------------
const W = 600, H = 120, PAD = 4;

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function lineChart(points, windowSeconds, label) {
  const now = Date.now() / 1000;
  const shown = points.filter((p) => now - p[0] <= windowSeconds);
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  box.append(svg("rect", { x: 0, y: 0, width: W, height: H, fill: "#f7f9fa" }));
  const values = shown.map((p) => p[1]).filter((v) => v !== null);
  const top = Math.max(1, ...values) * 1.15;
  const x = (t) => PAD + ((t - (now - windowSeconds)) / windowSeconds) * (W - 2 * PAD);
  const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
  let path = "";
  for (const [t, v] of shown) {
    if (v === null) { box.append(svg("line", { x1: x(t), x2: x(t), y1: 0, y2: H, stroke: "#d33", "stroke-width": 1 })); path += " "; continue; }
    path += `${path.endsWith(" ") || !path ? "M" : "L"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
  }
  if (path.trim()) box.append(svg("path", { d: path.trim(), fill: "none", stroke: "#2b6cb0", "stroke-width": 1.5 }));
  const text = svg("text", { x: W - PAD, y: 14, "text-anchor": "end", "font-size": 12, fill: "#5f6b76" });
  text.textContent = values.length ? `max ${ms(Math.max(...values))}, last ${ms(values[values.length - 1])}` : "no data yet";
  box.append(text);
  return box;
}

function renderCharts() {
  fill("probe-chart", lineChart(view.probes, HOUR, "probe latency, last hour"));
  const names = Object.keys(view.answers);
  fill("answer-charts", ...names.map((n) => el("div", { class: "chart" }, el("h3", {}, `Answer of ${n}`),
    lineChart(view.answers[n], HOUR, `answer latency of ${n}, last hour`))));
}

function renderRestarts(count) {
  fill("restart-count", count === undefined ? "" : `(${count} in all)`);
  const now = Date.now() / 1000;
  const recent = view.restarts.filter((r) => now - r.t <= DAY);
  const box = svg("svg", { viewBox: `0 0 ${W} 40`, role: "img", "aria-label": "restarts, last 24 hours" });
  box.append(svg("rect", { x: 0, y: 0, width: W, height: 40, fill: "#f7f9fa" }));
  for (let h = 0; h <= 24; h += 6) {
    const x = PAD + (h / 24) * (W - 2 * PAD);
    box.append(svg("line", { x1: x, x2: x, y1: 30, y2: 40, stroke: "#c5ced6" }));
  }
  const colour = { start: "#d69e2e", restart_server: "#dd6b20", restart_daemon: "#c53030", kill_daemon: "#742a2a" };
  for (const r of recent) {
    const x = PAD + ((r.t - (now - DAY)) / DAY) * (W - 2 * PAD);
    const mark = svg("rect", { x: x - 2, y: 4, width: 4, height: 24, fill: colour[r.step] || "#c53030" });
    const tip = svg("title", {});
    tip.textContent = `${new Date(r.t * 1000).toLocaleString()}: ${r.reason} (${r.step})`;
    mark.append(tip);
    box.append(mark);
  }
  fill("timeline", box);
  fill("restarts", ...recent.slice(-10).reverse().map((r) =>
    el("li", {}, `${new Date(r.t * 1000).toLocaleTimeString()} #${r.count}: ${r.reason || "?"} (rung ${r.step})`)));
}

function renderLog() {
  fill("log", ...view.logs.slice(-50).reverse().map((e) => {
    const fields = Object.entries(e.fields || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    return el("li", { class: `lv-${e.level}` }, `${(e.time || "").slice(11, 19)} ${e.level} ${e.event} ${fields.join(" ")}`);
  }));
}

// -- the stream ------------------------------------------------------------------------
function take(message) {
  switch (message.kind) {
    case "hello":
      view.status = message.status;
      view.probes = message.rings.probes;
      view.answers = message.rings.answers;
      view.restarts = message.rings.restarts;
      view.logs = message.rings.logs;
      break;
    case "event":
      view.status = message.status;
      if (message.event.type === "restart") {
        view.restarts.push({ t: Date.parse(message.event.time) / 1000, count: message.event.count, reason: message.event.reason, step: message.event.step });
      }
      break;
    case "probe":
      view.probes.push([message.t, message.ms]);
      if (view.probes.length > 1440) view.probes.shift();
      break;
    case "answer":
      (view.answers[message.name] = view.answers[message.name] || []).push([message.t, message.ms]);
      break;
    case "log":
      view.logs.push(message.entry);
      if (view.logs.length > LOGS) view.logs.shift();
      break;
    default:
      return;
  }
  render();
}

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => fill("live", "live");
  source.onmessage = (e) => take(JSON.parse(e.data));
  source.onerror = () => fill("live", "connection lost; reconnecting…");
}

async function control(what, path) {
  if (!window.confirm(`${what}?`)) return;
  try {
    const answer = await fetch(path, { method: "POST", credentials: "same-origin" });
    fill("answer", answer.status === 202 ? `${what}: requested` : `${what}: refused (${answer.status})`);
  } catch (err) {
    fill("answer", `${what}: failed (${err})`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("restart-server").addEventListener("click", () => control("Restart LM Studio's server", "/api/restart"));
  $("restart-daemon").addEventListener("click", () => control("Restart LM Studio's daemon", "/api/restart?daemon=1"));
  $("reload-config").addEventListener("click", () => control("Reload the config", "/api/reload"));
  connect();
});
