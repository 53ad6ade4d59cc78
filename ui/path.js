// Path views: the mtr-style hop table (shared by path sessions and path monitors), and the
// path monitor view: its live hop table from the daemon's per-hop figures and its recent paths.
// Every text from the daemon goes through textContent, never innerHTML.

import { $, api, dateTime, h, ms, showState } from "./app.js";

const PATH_REFRESH_MS = 2000;

const RATE_LIMITED_TITLE = "Loss here does not reach the later hops: a router rate-limiting or not answering ICMP, not a problem on the path";

// "name (address)" when the responder has a reverse name, the address when not, ??? for nobody.
export function hostText(ip, name) {
  if (!ip) return "???";
  return name ? `${name} (${ip})` : ip;
}

// The <tr> of each hop row: {ttl, host, name, loss, sent, last, avg, best, worst, stdev,
// rateLimited, current}. ECMP branches are rows under their TTL, which only the first one shows.
// The bar is the row's average RTT against the table's worst.
export function hopTrs(rows) {
  const max = Math.max(0, ...rows.map((r) => r.worst || 0));
  let prev = null;
  return rows.map((r) => {
    const first = r.ttl !== prev;
    prev = r.ttl;
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    const bar = h("span", { class: "hop-bar" });
    bar.style.width = `${max && r.avg !== undefined && r.avg !== null ? Math.max(2, (100 * r.avg) / max) : 0}%`;
    const host = h("td", { class: "host" }, hostText(r.host, r.name));
    if (r.rateLimited) host.append(" ", h("span", { class: "mark rate-limited", title: RATE_LIMITED_TITLE }, "(rate limited?)"));
    return h(
      "tr",
      {
        dataset: {
          ttl: r.ttl,
          host: r.host || "???",
          name: r.name || "",
          rateLimited: r.rateLimited ? "true" : "false",
          current: r.current === false ? "false" : "true",
        },
      },
      h("td", { class: "num" }, first ? String(r.ttl) : ""),
      host,
      h("td", { class: "num" }, (100 * r.loss).toFixed(1) + "%"),
      h("td", { class: "num" }, String(r.sent)),
      h("td", { class: "num" }, ms(r.last)),
      h("td", { class: "num" }, ms(r.avg)),
      h("td", { class: "num" }, ms(r.best)),
      h("td", { class: "num" }, ms(r.worst)),
      h("td", { class: "num" }, ms(r.stdev)),
      h("td", {}, bar),
    );
  });
}

function hopTable(rows, label) {
  const head = ["Hop", "Host", "Loss", "Sent", "Last", "Avg", "Best", "Worst", "StDev", "RTT"].map((t, i) =>
    h("th", { scope: "col", class: i === 1 || i === 9 ? null : "num" }, t),
  );
  return h(
    "div",
    { class: "table-box", tabindex: "0", role: "region", "aria-label": label },
    h("table", { class: "hops" }, h("thead", {}, h("tr", {}, ...head)), h("tbody", {}, ...hopTrs(rows))),
  );
}

// An API hop row as a table row.
function monitorRow(r) {
  const rtt = r.rtt_ms || {};
  return {
    ttl: r.ttl,
    host: r.responder || "",
    name: r.name,
    loss: r.loss_ratio,
    sent: r.sent,
    last: rtt.last,
    avg: rtt.avg,
    best: rtt.best,
    worst: rtt.worst,
    stdev: rtt.stdev,
    rateLimited: r.rate_limited,
    current: r.current,
  };
}

// One path taken: {at, changed, length, hops: [{ttl, responders: [{ip, name}]}]} and either the
// daemon's path_id or a session's round.
function historyItem(e) {
  const what = e.changed ? "path changed" : "path seen";
  const hops = e.hops.map((hop) =>
    h(
      "li",
      { dataset: { ttl: hop.ttl } },
      `${hop.ttl} `,
      hop.responders.length ? hop.responders.map((r) => hostText(r.ip, r.name)).join(" | ") : "???",
    ),
  );
  return h(
    "li",
    { dataset: { pathId: e.path_id || "", round: e.round ?? "", changed: e.changed ? "true" : "false" } },
    h("span", { class: "when" }, dateTime(e.at)),
    " · ",
    h("strong", {}, what),
    " · ",
    e.path_id ? h("code", {}, e.path_id) : `from round ${e.round}`,
    e.length ? ` · ${e.length} hops` : " · destination not reached",
    h("ol", { class: "plain path-hops small" }, ...hops),
  );
}

// The paths a session's rounds took, oldest first, as the daemon tells them for a monitor: per
// round, the responders of each TTL up to the destination (a lost probe keeps the responder its
// flow saw last); an entry whenever that changes, marked changed when a known responder was
// replaced or the length moved (a responder first seen is not a change). Rounds still running
// are left out unless the session is `final`.
export function sessionPaths(samples, names, final) {
  const rounds = new Map();
  for (const s of samples) {
    if (s.type !== "hop" || s.round === undefined || s.result === "send_error") continue;
    if (!rounds.has(s.round)) rounds.set(s.round, []);
    rounds.get(s.round).push(s);
  }
  const numbers = [...rounds.keys()].sort((a, b) => a - b);
  if (!final) numbers.pop();
  const last = new Map(); // "ttl/flow" -> responder
  const out = [];
  let prev = null;
  let length = null;
  for (const n of numbers) {
    const list = rounds.get(n);
    let replaced = false;
    for (const s of list) {
      if (!s.from) continue;
      const k = s.ttl + "/" + s.flow;
      if (last.has(k) && last.get(k) !== s.from) replaced = true;
      last.set(k, s.from);
    }
    const reached = list.filter((s) => s.result === "reply").map((s) => s.ttl);
    const lengthMoved = reached.length > 0 && length !== null && Math.min(...reached) !== length;
    if (reached.length) length = Math.min(...reached);
    const byTtl = new Map();
    for (const s of list) {
      if (length !== null && s.ttl > length) continue;
      if (!byTtl.has(s.ttl)) byTtl.set(s.ttl, new Set());
      const who = last.get(s.ttl + "/" + s.flow);
      if (who) byTtl.get(s.ttl).add(who);
    }
    const hops = [...byTtl.keys()]
      .sort((a, b) => a - b)
      .map((ttl) => ({ ttl, responders: [...byTtl.get(ttl)].sort().map((ip) => ({ ip, name: names.get(ip) })) }));
    const sig = JSON.stringify(hops.map((x) => [x.ttl, x.responders.map((r) => r.ip)]));
    if (sig === prev) continue;
    out.push({ round: n, at: list[0].ts, length, hops, changed: prev !== null && (replaced || lengthMoved) });
    prev = sig;
  }
  return out;
}

// The <li> of each path a session took, newest first.
export function sessionPathItems(samples, names, final) {
  return sessionPaths(samples, names, final).reverse().map(historyItem);
}

function addressPanel(a) {
  const figs = [
    ["Hops", a.length ?? "–"],
    ["Path id", a.path_id ?? "–"],
    ["Changes", a.changes],
    ["Rounds", a.rounds],
  ].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v))));
  return h(
    "div",
    { class: "panel path-address", dataset: { ip: a.ip, pathId: a.path_id || "" } },
    h("h2", {}, a.ip),
    h("dl", { class: "mini" }, ...figs),
    a.hops.length ? hopTable(a.hops.map(monitorRow), `Each hop of the path to ${a.ip}`) : h("p", { class: "state" }, "No round finished yet."),
    h("h3", {}, "Recent paths, newest first"),
    a.history.length ? h("ol", { class: "plain path-history" }, ...a.history.map(historyItem)) : h("p", { class: "muted" }, "None yet."),
  );
}

// The path monitor view (#/path/NAME): refreshed every PATH_REFRESH_MS while shown.
export const pathView = {
  name: null,
  timer: null,

  show(name) {
    this.name = name;
    $("h-path").textContent = name || "Path";
    $("path-meta").textContent = "";
    $("path-body").replaceChildren();
    this.state("Loading the path…");
    this.load(name);
    this.timer = setInterval(() => this.load(name), PATH_REFRESH_MS);
    return () => {
      clearInterval(this.timer);
      this.timer = null;
      this.name = null;
    };
  },

  state(text, error) {
    showState($("path-state"), text, error);
  },

  async load(name) {
    let d;
    try {
      d = await api(`/api/v1/targets/${encodeURIComponent(name)}/path`);
    } catch (e) {
      if (this.name !== name) return;
      this.state(e.status === 404 || e.status === 400 ? e.message : "Could not load the path: " + e.message, true);
      if (e.status === 404 || e.status === 400) {
        clearInterval(this.timer);
        $("path-body").replaceChildren();
      }
      return;
    }
    if (this.name !== name) return;
    $("path-meta").textContent = `path monitor of ${d.host} · hop table since the monitor started, refreshed every ${PATH_REFRESH_MS / 1000} s`;
    this.state(d.addresses.length ? "" : "The host does not resolve yet: no address to trace.");
    $("path-body").replaceChildren(...d.addresses.map(addressPanel));
  },
};
