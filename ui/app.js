// The pingscope live page: monitors, on-demand sessions, history.
// Talks only to its own origin: the REST API under /api/v1 and its WebSockets.
// Every text from the daemon goes through textContent, never innerHTML.

import { rttChart, sparkline } from "./chart.js";
import { meshView } from "./mesh.js";
import { hopTrs, pathView, sessionPathItems } from "./path.js";

export const $ = (id) => document.getElementById(id);
const SPARK = 60; // samples per sparkline
const TARGETS_REFRESH_MS = 5000;
// The span of the monitors' outage timeline.
const OUTAGE_SPAN_MS = 24 * 3600 * 1000;
const RECONNECT_MAX_MS = 10000;

// ---------- helpers ----------

export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

export const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(v >= 100 ? 1 : 3));
const pct = (r) => (r === null || r === undefined ? "–" : `${(r * 100).toFixed(r > 0 && r < 0.1 ? 2 : 1)} %`);
const time = (ts) => {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
};
export const dateTime = (ts) => {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString([], { hour12: false });
};
// A view's status line: shown with `text` (as an error when `error`), hidden without.
export function showState(s, text, error) {
  s.textContent = text || "";
  s.hidden = !text;
  s.className = "state" + (error ? " error" : "");
}
const wsUrl = (path) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

// Hands each JSON message of `ws` to `handle`; a frame that is not JSON is skipped.
const onJson = (ws, handle) => {
  ws.onmessage = (ev) => {
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    handle(m);
  };
};

// An API failure: the HTTP status (0 when the daemon could not be reached), code and message.
class ApiFailure extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export async function api(path, opts) {
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    daemonDown(true);
    throw new ApiFailure(0, "unreachable", "The daemon cannot be reached. Is pingscope still running?");
  }
  daemonDown(false);
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  if (!resp.ok) {
    const err = body && body.error ? body.error : { code: "http_" + resp.status, message: `HTTP ${resp.status}` };
    throw new ApiFailure(resp.status, err.code, err.message, err.field);
  }
  return body;
}

function daemonDown(down) {
  const a = $("daemon-alert");
  if (down) {
    a.textContent = "Lost contact with the daemon: requests fail. Showing the last data received.";
    a.hidden = false;
  } else if (!a.hidden) {
    a.hidden = true;
  }
}

function setConn(state, text) {
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = text;
}

// ---------- routing ----------

const views = ["monitors", "mesh", "session", "result", "history", "about", "path"];
let leaveView = null; // cleanup of the current view (closes its WebSocket)

function route() {
  const hash = location.hash || "#/monitors";
  const parts = hash.replace(/^#\/?/, "").split("/");
  let view = parts[0] || "monitors";
  let arg = parts[1] ? decodeURIComponent(parts[1]) : null;
  if (view === "session" && arg) view = "result";
  if (!views.includes(view)) view = "monitors";
  if (leaveView) {
    leaveView();
    leaveView = null;
  }
  for (const v of views) $("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) {
    const current =
      a.dataset.view === view || (view === "result" && a.dataset.view === "history") || (view === "path" && a.dataset.view === "monitors");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.body.dataset.view = view;
  if (view === "monitors") monitors.show();
  if (view === "history") hist.show();
  if (view === "mesh") leaveView = mesh.show();
  if (view === "result") leaveView = result.show(arg);
  if (view === "path") leaveView = pathView.show(arg);
  if (view === "session") setTimeout(() => $("f-target").focus(), 0);
  else if (routed) $("h-" + view).focus();
  routed = true;
}
let routed = false;

// ---------- monitors ----------

const monitors = {
  cards: new Map(), // key target|ip -> {li, rtt, loss, avg, spark, values}
  ws: null,
  timer: null,
  retry: 500,
  loaded: false,

  key: (target, ip) => `${target}|${ip || ""}`,

  async show() {
    await this.load();
    this.connect();
    if (!this.timer) this.timer = setInterval(() => this.load(), TARGETS_REFRESH_MS);
  },

  async load() {
    const state = $("monitors-state");
    let data;
    try {
      data = await api("/api/v1/targets");
    } catch (e) {
      if (!this.loaded) {
        state.textContent = "Could not load the monitors: " + e.message;
        state.className = "state error";
      }
      return;
    }
    this.loaded = true;
    state.className = "state";
    state.textContent = data.targets.length ? "" : "No monitors configured: add targets to the config file.";
    state.hidden = data.targets.length > 0;
    const seen = new Set();
    for (const t of data.targets) {
      const k = this.key(t.target, t.ip);
      seen.add(k);
      const card = this.cards.get(k) || this.card(t);
      card.loss.textContent = t.window_probes ? pct(t.loss_ratio) : "–";
      card.loss.dataset.value = t.loss_ratio;
      card.avg.textContent = t.rtt_ms ? ms(t.rtt_ms.avg) : "–";
      card.window.textContent = `${t.window_probes} probes · every ${t.interval}`;
      if (card.values.length === 0 && t.last) this.push(t.last);
    }
    for (const [k, card] of this.cards) {
      if (!seen.has(k)) {
        card.li.remove();
        this.cards.delete(k);
      }
    }
    await this.loadOutages();
    const un = $("unresolved-list");
    un.replaceChildren(...data.unresolved.map((u) => h("li", {}, h("strong", {}, u.target), ` (${u.host}): ${u.error}`)));
    $("unresolved").hidden = data.unresolved.length === 0;
  },

  // Each monitor's outages of the last OUTAGE_SPAN_MS: a strip with one mark per outage, and a
  // list naming each with its lost probes and a link to its capture (the path session's hop table).
  async loadOutages() {
    const since = new Date(Date.now() - OUTAGE_SPAN_MS).toISOString();
    let page;
    try {
      page = await api(`/api/v1/outages?since=${encodeURIComponent(since)}&limit=1000`);
    } catch {
      return; // no store: no history to show, the monitors go on
    }
    const by = new Map();
    for (const o of page.items) {
      const k = this.key(o.target, o.ip);
      if (!by.has(k)) by.set(k, []);
      by.get(k).push(o);
    }
    const now = Date.now();
    for (const [k, card] of this.cards) {
      const list = by.get(k) || [];
      card.outages.hidden = list.length === 0;
      card.strip.replaceChildren(
        ...list.map((o) => {
          const start = Date.parse(o.start);
          const end = o.end ? Date.parse(o.end) : now;
          const left = Math.max(0, (start - (now - OUTAGE_SPAN_MS)) / OUTAGE_SPAN_MS);
          const width = Math.max(0.004, (end - start) / OUTAGE_SPAN_MS);
          const mark = h("span", {
            class: "outage-mark",
            dataset: { status: o.status },
            title: `${o.start} – ${o.end || "now"}: ${o.lost} lost`,
          });
          // Through the CSSOM: the page's CSP refuses style attributes.
          mark.style.left = `${(left * 100).toFixed(2)}%`;
          mark.style.width = `${(Math.min(width, 1 - left) * 100).toFixed(2)}%`;
          return mark;
        }),
      );
      card.outageList.replaceChildren(
        ...list.map((o) =>
          h(
            "li",
            { dataset: { id: String(o.id), status: o.status } },
            `${time(o.start)} · ${o.end ? ((Date.parse(o.end) - Date.parse(o.start)) / 1000).toFixed(1) + " s" : "ongoing"} · ${o.lost} lost · ${o.status}`,
            o.capture_session ? h("a", { href: `#/session/${o.capture_session}`, class: "capture" }, " path capture") : null,
          ),
        ),
      );
    }
  },

  card(t) {
    const rtt = h("span", { class: "big", dataset: { role: "rtt" } }, "–");
    const loss = h("dd", { dataset: { role: "loss" } }, "–");
    const avg = h("dd", { dataset: { role: "avg" } }, "–");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `Recent RTT of ${t.target}`);
    svg.setAttribute("preserveAspectRatio", "none");
    const win = h("p", { class: "muted small" });
    const labels = Object.entries(t.labels || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`));
    const li = h(
      "li",
      { class: "card monitor", dataset: { target: t.target, ip: t.ip } },
      h("div", { class: "card-head" }, h("h2", {}, t.target), h("span", { class: "muted small" }, [t.host === t.ip ? t.ip : `${t.host} · ${t.ip}`, kindText(t)].filter(Boolean).join(" · "))),
      h("div", { class: "card-main" }, h("div", {}, rtt, h("span", { class: "unit" }, " ms")), svg),
      h("dl", { class: "mini" }, h("div", {}, h("dt", {}, "Loss"), loss), h("div", {}, h("dt", {}, "Avg ms"), avg)),
      labels.length ? h("p", { class: "tags" }, ...labels) : null,
      win,
      t.kind === "path" ? h("p", { class: "small" }, h("a", { href: `#/path/${encodeURIComponent(t.target)}`, class: "path-link" }, "Hop table and path history")) : null,
    );
    const strip = h("div", { class: "outage-strip", role: "img", "aria-label": `Outages of ${t.target} in the last 24 hours` });
    const outageList = h("ul", { class: "plain small outage-list", dataset: { role: "outages" } });
    const outages = h("details", { class: "outages", hidden: true }, h("summary", {}, "Outages (24 h)"), strip, outageList);
    li.append(outages);
    $("monitor-list").append(li);
    const card = { li, rtt, loss, avg, svg, window: win, values: [], outages, strip, outageList };
    this.cards.set(this.key(t.target, t.ip), card);
    sparkline(svg, []);
    return card;
  },

  push(s) {
    const card = this.cards.get(this.key(s.target, s.ip));
    if (!card) return;
    if (s.type === "reply") {
      card.values.push(s.rtt_ms);
      card.rtt.textContent = ms(s.rtt_ms);
      card.li.dataset.state = "up";
    } else if (s.type === "timeout" || s.type === "error") {
      card.values.push(null);
      card.rtt.textContent = s.type === "error" ? "error" : "lost";
      card.li.dataset.state = "down";
    } else {
      return;
    }
    if (card.values.length > SPARK) card.values.splice(0, card.values.length - SPARK);
    card.li.dataset.samples = String((Number(card.li.dataset.samples) || 0) + 1);
    sparkline(card.svg, card.values);
  },

  connect() {
    if (this.ws) return;
    setConn("connecting", "connecting…");
    const ws = new WebSocket(wsUrl("/api/v1/live"));
    this.ws = ws;
    ws.onopen = () => {
      this.retry = 500;
      setConn("live", "live");
    };
    onJson(ws, (m) => {
      if (m.type === "lagged") return;
      this.push(m);
    });
    ws.onclose = () => {
      this.ws = null;
      setConn("down", "disconnected: retrying");
      // Reconnect with a capped backoff; the monitors stream never ends on its own.
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, RECONNECT_MAX_MS);
    };
  },
};

// "tcp:443", "udp:53"; nothing for ICMP (the default).
function kindText(p) {
  if (!p.kind || p.kind === "icmp") return "";
  return p.port ? `${p.kind}:${p.port}` : p.kind;
}

// ---------- session form ----------

const FIELDS = ["target", "kind", "port", "udp_mode", "count", "duration", "interval", "timeout", "size", "family"];

// Port and UDP mode only where the kind has them.
function syncKindFields() {
  const kind = $("f-kind").value;
  $("port-field").hidden = kind === "icmp";
  $("udp-mode-field").hidden = kind !== "udp";
}

function clearFormErrors() {
  for (const f of FIELDS) {
    $("e-" + f).textContent = "";
    $("f-" + f).removeAttribute("aria-invalid");
  }
  $("form-alert").hidden = true;
}

function formAlert(text, kind) {
  const a = $("form-alert");
  a.textContent = text;
  a.className = "alert " + (kind || "error");
  a.dataset.kind = kind || "error";
  a.hidden = false;
}

// Human text for a refused start; the API's own message follows.
function startFailureText(e) {
  switch (e.status) {
    case 0:
      return e.message;
    case 403:
      return "Target denied: the daemon's access lists do not allow pinging it. " + e.message;
    case 429:
      return "Limit reached: too many sessions are running. Wait for one to end or stop one. " + e.message;
    case 503:
      return "The daemon cannot start sessions right now. " + e.message;
    default:
      return e.message;
  }
}

async function submitForm(ev) {
  ev.preventDefault();
  clearFormErrors();
  const body = {};
  const kind = $("f-kind").value;
  for (const f of FIELDS) {
    const v = $("f-" + f).value.trim();
    if (v === "") continue;
    if ((f === "port" && kind === "icmp") || (f === "udp_mode" && kind !== "udp")) continue;
    if (f === "count" || f === "size" || f === "port") {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) {
        fieldError(f, "must be a whole number");
        return;
      }
      body[f] = n;
    } else {
      body[f] = v;
    }
  }
  if (!body.target) {
    fieldError("target", "enter a host name or address");
    return;
  }
  const btn = $("start");
  btn.disabled = true;
  btn.textContent = "Starting…";
  try {
    const rec = await api("/api/v1/sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    location.hash = "#/session/" + encodeURIComponent(rec.id);
  } catch (e) {
    if (e.field && FIELDS.includes(e.field)) {
      fieldError(e.field, e.message);
    } else {
      formAlert(startFailureText(e), e.code || "error");
    }
  } finally {
    btn.disabled = false;
    btn.textContent = "Start session";
  }
}

function fieldError(field, text) {
  $("e-" + field).textContent = text;
  const input = $("f-" + field);
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

// ---------- one session ----------

// Live figures from the samples, the way the daemon's summary counts them: a probe is settled
// by a reply, a timeout or an error; late and duplicate replies do not change sent/received.
function liveFigures(samples) {
  const probes = new Map();
  for (const s of samples) {
    if (s.seq === undefined) continue;
    if (s.type === "reply" || s.type === "timeout" || s.type === "error") {
      if (!probes.has(s.seq)) probes.set(s.seq, s);
    }
  }
  const ordered = [...probes.values()].sort((a, b) => a.seq - b.seq);
  const rtts = ordered.filter((s) => s.type === "reply").map((s) => s.rtt_ms);
  const lost = ordered.length - rtts.length;
  let jitter = null;
  if (rtts.length > 1) {
    let sum = 0;
    for (let i = 1; i < rtts.length; i++) sum += Math.abs(rtts[i] - rtts[i - 1]);
    jitter = sum / (rtts.length - 1);
  }
  return {
    sent: ordered.length,
    received: rtts.length,
    loss_ratio: ordered.length ? lost / ordered.length : null,
    rtt_ms: rtts.length ? { min: Math.min(...rtts), avg: rtts.reduce((a, b) => a + b, 0) / rtts.length, max: Math.max(...rtts) } : null,
    jitter_ms: jitter,
  };
}

function setFig(id, text, value) {
  const e = $(id);
  e.textContent = text;
  e.dataset.value = value === null || value === undefined ? "" : String(value);
}

function showFigures(f, final) {
  setFig("fig-sent", String(f.sent), f.sent);
  setFig("fig-received", String(f.received), f.received);
  setFig("fig-loss", pct(f.loss_ratio), f.loss_ratio);
  const r = f.rtt_ms;
  setFig("fig-rtt", r ? `${ms(r.min)} / ${ms(r.avg)} / ${ms(r.max)} ms` : "–", r ? `${r.min}/${r.avg}/${r.max}` : null);
  setFig("fig-jitter", f.jitter_ms === null || f.jitter_ms === undefined ? "–" : `${ms(f.jitter_ms)} ms`, f.jitter_ms);
  document.querySelector(".figures").dataset.final = final ? "true" : "false";
}

const KIND_TEXT = { reply: "reply", timeout: "lost", late: "late", duplicate: "duplicate", error: "error" };

function timelineRow(s) {
  const detail = s.type === "error" ? s.error || "" : s.type === "late" ? "after the timeout" : s.type === "duplicate" ? "extra reply" : "";
  return h(
    "tr",
    { class: "k-" + s.type, dataset: { seq: s.seq ?? "" } },
    h("td", { class: "num" }, s.seq ?? ""),
    h("td", {}, time(s.ts)),
    h("td", {}, h("span", { class: "pill k-" + s.type }, KIND_TEXT[s.type] || s.type)),
    h("td", { class: "num" }, s.rtt_ms === undefined ? "" : ms(s.rtt_ms)),
    h("td", { class: "num" }, s.ttl ?? ""),
    h("td", { class: "num" }, s.size ?? ""),
    h("td", { class: "muted" }, detail),
  );
}

// The mtr table of a path session: one row per (TTL, responder) from its hop samples, ECMP
// branches under their TTL; a lost probe counts for the responder its flow last saw there. Loss
// that the later TTLs do not share (a router rate-limiting its ICMP) is marked as such.
function hopRows(samples) {
  const rows = new Map();
  const lastOf = new Map();
  const ttls = new Map();
  for (const s of samples) {
    if (s.type !== "hop" || s.result === "send_error") continue;
    const fk = s.ttl + "/" + s.flow;
    const who = s.from || lastOf.get(fk) || "";
    if (s.from) lastOf.set(fk, s.from);
    const key = s.ttl + "|" + who;
    if (!rows.has(key)) rows.set(key, { ttl: s.ttl, host: who, sent: 0, lost: 0, rtts: [] });
    const r = rows.get(key);
    r.sent += 1;
    const t = ttls.get(s.ttl) || { sent: 0, lost: 0 };
    t.sent += 1;
    if (s.from && s.rtt_ms !== undefined && s.rtt_ms !== null) r.rtts.push(s.rtt_ms);
    else { r.lost += 1; t.lost += 1; }
    ttls.set(s.ttl, t);
  }
  const reached = samples.filter((s) => s.type === "hop" && s.result === "reply").map((s) => s.ttl);
  const end = reached.length ? Math.min(...reached) : Infinity;
  const out = [...rows.values()].filter((r) => r.ttl <= end).sort((a, b) => a.ttl - b.ttl || a.host.localeCompare(b.host));
  for (const r of out) {
    const loss = r.sent ? r.lost / r.sent : 0;
    let later = Infinity;
    for (const [ttl, t] of ttls) if (ttl > r.ttl && ttl <= end && t.sent) later = Math.min(later, t.lost / t.sent);
    r.loss = loss;
    r.rateLimited = loss > 0 && Math.min(loss, later) * 2 < loss;
    const n = r.rtts.length;
    if (n) {
      const avg = r.rtts.reduce((a, b) => a + b, 0) / n;
      r.last = r.rtts[n - 1];
      r.avg = avg;
      r.best = Math.min(...r.rtts);
      r.worst = Math.max(...r.rtts);
      r.stdev = Math.sqrt(r.rtts.reduce((a, b) => a + (b - avg) ** 2, 0) / n);
    }
  }
  return out;
}

// `names`: address -> reverse name, for the responders that have one.
function hopTable(samples, names) {
  const rows = hopRows(samples);
  for (const r of rows) r.name = names.get(r.host);
  $("hops-box").hidden = rows.length === 0;
  $("hops").replaceChildren(...hopTrs(rows));
  const final = !!(result.record && result.record.status !== "running");
  $("session-paths").replaceChildren(...sessionPathItems(samples, names, final));
}

function csvOf(samples) {
  const cols = ["type", "seq", "ts", "target", "host", "ip", "rtt_ms", "ttl", "size", "error", "icmp_type", "icmp_code", "from"];
  const cell = (v) => {
    if (v === undefined || v === null) return "";
    const s = String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [cols.join(","), ...samples.map((s) => cols.map((c) => cell(s[c])).join(","))].join("\r\n") + "\r\n";
}

const result = {
  id: null,
  samples: [],
  names: new Map(), // responder -> reverse name
  asked: new Set(), // responders whose name was asked for
  namesTimer: null,
  record: null,
  ws: null,
  csvUrl: null,
  drawPending: false,

  show(id) {
    this.id = id;
    this.samples = [];
    this.record = null;
    this.names = new Map();
    this.asked = new Set();
    $("h-result").textContent = "Session";
    $("result-meta").textContent = id;
    $("result-status").textContent = "";
    $("result-status").dataset.status = "";
    $("result-alert").hidden = true;
    $("result-body").hidden = true;
    $("stop").hidden = true;
    $("downloads").hidden = true;
    $("timeline").replaceChildren();
    this.state("Loading the session…");
    this.load(id);
    const onResize = () => this.draw();
    window.addEventListener("resize", onResize);
    return () => {
      window.removeEventListener("resize", onResize);
      clearTimeout(this.namesTimer);
      this.namesTimer = null;
      this.id = null;
      if (this.ws) {
        this.ws.onclose = null;
        this.ws.close();
        this.ws = null;
      }
    };
  },

  state(text, error) {
    showState($("result-state"), text, error);
  },

  alert(text, kind) {
    const a = $("result-alert");
    a.textContent = text;
    a.className = "alert " + (kind || "error");
    a.hidden = !text;
  },

  async load(id) {
    let d;
    try {
      d = await api("/api/v1/sessions/" + encodeURIComponent(id));
    } catch (e) {
      if (this.id !== id) return;
      this.state(e.status === 404 ? "No such session: it may have been deleted." : "Could not load the session: " + e.message, true);
      return;
    }
    if (this.id !== id) return;
    this.state("");
    this.setRecord(d);
    $("result-body").hidden = false;
    if (d.status === "running") {
      this.live(id);
    } else {
      this.samples = d.samples;
      this.renderAll();
      this.finish(d);
    }
  },

  setRecord(rec) {
    this.record = rec;
    const p = rec.params;
    $("h-result").textContent = p.target;
    const how = [p.count ? `${p.count} probes` : null, p.duration ? `for ${p.duration}` : null].filter(Boolean).join(", ");
    const what = kindText(p);
    $("result-meta").textContent = `${what ? what + " · " : ""}${how || "until stopped"} · every ${p.interval} · ${p.size} bytes · ${p.family} · started ${dateTime(rec.started_at || rec.created_at)}`;
    const st = $("result-status");
    st.textContent = rec.samples_lost ? `${rec.status} · ${rec.samples_lost} samples not stored` : rec.status;
    st.dataset.status = rec.status;
    $("stop").hidden = rec.status !== "running";
    if (rec.error) this.alert(rec.error, "error");
  },

  live(id) {
    this.samples = [];
    $("timeline").replaceChildren();
    this.renderAll();
    const ws = new WebSocket(wsUrl(`/api/v1/sessions/${encodeURIComponent(id)}/live`));
    this.ws = ws;
    let ended = false;
    onJson(ws, (m) => {
      if (m.type === "summary") {
        ended = true;
        // The stored session is the complete record (the stream may have skipped samples).
        this.load(id);
      } else if (m.type === "lagged") {
        this.alert(`The live view skipped ${m.missed} samples; the stored result will be complete.`, "warn");
      } else {
        this.add(m);
      }
    });
    ws.onclose = (ev) => {
      this.ws = null;
      if (ended || this.id !== id) return;
      // Closed without a summary: the daemon went away, or shut down (1001).
      const why = ev.code === 1001 ? "the daemon is shutting down" : "the connection to the daemon was lost";
      this.alert(`Live updates stopped: ${why}. The figures below are what arrived so far.`, "error");
      const st = $("result-status");
      st.textContent = "disconnected";
      st.dataset.status = "disconnected";
      $("stop").hidden = true;
    };
  },

  // Asks for the reverse names of responders not asked about yet, at most once a second.
  askNames() {
    if (this.namesTimer) return;
    const fresh = this.samples.some((s) => s.type === "hop" && s.from && !this.asked.has(s.from));
    if (!fresh) return;
    const id = this.id;
    this.namesTimer = setTimeout(async () => {
      for (const s of this.samples) if (s.type === "hop" && s.from) this.asked.add(s.from);
      let d = null;
      try {
        d = await api(`/api/v1/sessions/${encodeURIComponent(id)}/names`);
      } catch {
        // No names: the table shows addresses.
      }
      if (this.id !== id) return;
      this.namesTimer = null;
      if (d) for (const [ip, name] of Object.entries(d.names)) this.names.set(ip, name);
      hopTable(this.samples, this.names);
      this.askNames();
    }, 1000);
  },

  add(s) {
    this.samples.push(s);
    if (s.type === "hop") {
      hopTable(this.samples, this.names);
      this.askNames();
    }
    $("timeline").prepend(timelineRow(s));
    showFigures(liveFigures(this.samples), false);
    this.draw();
  },

  renderAll() {
    hopTable(this.samples, this.names);
    this.askNames();
    const rows = this.samples.map(timelineRow).reverse();
    $("timeline").replaceChildren(...rows);
    showFigures(liveFigures(this.samples), false);
    this.draw();
  },

  // Coalesces redraws to one per frame: samples can arrive faster than the screen refreshes.
  draw() {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      const pts = [];
      const seen = new Set();
      for (const s of this.samples) {
        if (s.seq === undefined || seen.has(s.seq)) continue;
        if (s.type === "reply") pts.push({ seq: s.seq, rtt: s.rtt_ms, kind: s.type });
        else if (s.type === "timeout" || s.type === "error") pts.push({ seq: s.seq, rtt: null, kind: s.type === "timeout" ? "lost" : "error" });
        else continue;
        seen.add(s.seq);
      }
      $("chart-empty").hidden = pts.length > 0;
      const svg = $("rtt-chart");
      svg.style.display = pts.length ? "" : "none";
      if (pts.length) rttChart(svg, pts);
      const f = liveFigures(this.samples);
      svg.setAttribute("aria-label", `RTT chart: ${f.received} replies, ${f.sent - f.received} lost`);
    });
  },

  finish(d) {
    if (d.summary) {
      showFigures(d.summary, true);
    } else {
      document.querySelector(".figures").dataset.final = "true";
    }
    $("stop").hidden = true;
    $("downloads").hidden = false;
    const json = $("dl-json");
    json.href = "/api/v1/sessions/" + encodeURIComponent(d.id);
    json.download = `pingscope-${d.id}.json`;
    if (this.csvUrl) URL.revokeObjectURL(this.csvUrl);
    this.csvUrl = URL.createObjectURL(new Blob([csvOf(d.samples)], { type: "text/csv" }));
    const csv = $("dl-csv");
    csv.href = this.csvUrl;
    csv.download = `pingscope-${d.id}.csv`;
    if (d.samples.length === 0) this.state("No data: this session recorded no samples.");
  },

  async stop() {
    const btn = $("stop");
    btn.disabled = true;
    try {
      await api(`/api/v1/sessions/${encodeURIComponent(this.id)}/stop`, { method: "POST" });
      $("result-status").textContent = "stopping…";
    } catch (e) {
      this.alert("Could not stop the session: " + e.message, "error");
    } finally {
      btn.disabled = false;
    }
  },
};

// ---------- history ----------

const hist = {
  cursor: null,
  gen: 0, // a refresh discards pages still loading for the previous list

  show() {
    this.gen += 1;
    this.cursor = null;
    $("history-list").replaceChildren();
    this.page();
  },

  async page() {
    const state = $("history-state");
    const more = $("history-more");
    more.disabled = true;
    if (!this.cursor) {
      state.hidden = false;
      state.className = "state";
      state.textContent = "Loading history…";
    }
    let p;
    const gen = this.gen;
    try {
      p = await api("/api/v1/sessions?limit=25" + (this.cursor ? "&before=" + encodeURIComponent(this.cursor) : ""));
      if (gen !== this.gen) return;
    } catch (e) {
      if (gen !== this.gen) return;
      state.hidden = false;
      state.className = "state error";
      state.textContent = "Could not load the history: " + e.message;
      more.disabled = false;
      return;
    }
    const rows = p.items.map((r) => {
      const s = r.summary;
      const link = h("a", { href: "#/session/" + encodeURIComponent(r.id) }, dateTime(r.started_at || r.created_at));
      return h(
        "tr",
        { dataset: { id: r.id } },
        h("td", {}, link),
        h("td", {}, r.params.target),
        h("td", {}, h("span", { class: "badge", dataset: { status: r.status } }, r.status)),
        h("td", { class: "num" }, s ? s.sent : ""),
        h("td", { class: "num" }, s ? pct(s.loss_ratio) : ""),
        h("td", { class: "num" }, s && s.rtt_ms ? ms(s.rtt_ms.avg) : ""),
      );
    });
    $("history-list").append(...rows);
    $("history-total").textContent = `${p.total} stored session${p.total === 1 ? "" : "s"}, newest first.`;
    const empty = $("history-list").children.length === 0;
    state.hidden = !empty;
    state.textContent = empty ? "No sessions yet: start one from New session." : "";
    $("history-box").hidden = empty;
    this.cursor = p.next_cursor || null;
    more.hidden = !this.cursor;
    more.disabled = false;
  },
};

const mesh = meshView({ $, h, api, pct, ms });

// ---------- wiring ----------

document.addEventListener("DOMContentLoaded", () => {
  $("start-form").addEventListener("submit", submitForm);
  $("f-kind").addEventListener("change", syncKindFields);
  syncKindFields();
  $("stop").addEventListener("click", () => result.stop());
  $("history-refresh").addEventListener("click", () => hist.show());
  $("history-more").addEventListener("click", () => hist.page());
  window.addEventListener("hashchange", route);
  route();
  // The monitors stream also drives the connection indicator on every view.
  monitors.connect();
});
