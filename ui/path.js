// Path views: the mtr-style hop table (shared by path sessions and path monitors), and the
// path monitor view: its live hop table from the daemon's per-hop figures and its recent paths.
// Every text from the daemon goes through textContent, never innerHTML.

import { $, api, dateTime, h, ms } from "./app.js";

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
    { dataset: { pathId: e.path_id, changed: e.changed ? "true" : "false" } },
    h("span", { class: "when" }, dateTime(e.at)),
    " · ",
    h("strong", {}, what),
    " · ",
    h("code", {}, e.path_id),
    e.length ? ` · ${e.length} hops` : " · destination not reached",
    h("ol", { class: "plain path-hops small" }, ...hops),
  );
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
    const s = $("path-state");
    s.textContent = text || "";
    s.hidden = !text;
    s.className = "state" + (error ? " error" : "");
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
