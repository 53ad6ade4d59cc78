// The mesh view: loss and RTT from this instance and from each of its peers to theirs, as a
// source × target matrix. The daemon fetches the peers' rows itself (GET /api/v1/mesh), each
// bounded by mesh.web_timeout, so a slow or dead peer shows as a row saying so.

const REFRESH_MS = 5000;

export function meshView({ $, h, api, pct, ms }) {
  let timer = null;
  let loaded = false;

  function cell(c) {
    if (!c) return h("td", { class: "num muted" }, "–");
    return h(
      "td",
      { class: "num", dataset: { target: c.target, loss: String(c.loss_ratio), rtt: c.rtt_ms === null ? "" : String(c.rtt_ms) } },
      c.window_probes ? `${pct(c.loss_ratio)} · ${ms(c.rtt_ms)} ms` : "–",
    );
  }

  function rowState(r) {
    if (r.state === "timeout") return `slow: ${r.error}`;
    if (r.state === "error") return `unreachable: ${r.error}`;
    return r.state === "local" ? "this instance" : `answered in ${ms(r.fetch_ms)} ms`;
  }

  function render(data) {
    const state = $("mesh-state");
    if (!data.enabled) {
      state.textContent = "Mesh mode is off: add a mesh: block to the config to monitor the other instances.";
      state.hidden = false;
      $("mesh-box").hidden = true;
      return;
    }
    const targets = [...new Set(data.rows.flatMap((r) => r.cells.map((c) => c.target)))].sort();
    $("mesh-head").replaceChildren(
      h("tr", {}, h("th", { scope: "col" }, "from \\ to"), ...targets.map((t) => h("th", { scope: "col", class: "num" }, t)), h("th", { scope: "col" }, "state")),
    );
    $("mesh-body").replaceChildren(
      ...data.rows.map((r) => {
        const by = new Map(r.cells.map((c) => [c.target, c]));
        const tr = h("tr", { dataset: { source: r.source, peer: r.peer || "", state: r.state } }, h("th", { scope: "row" }, r.peer && r.peer !== r.source ? `${r.source} (${r.peer})` : r.source));
        tr.append(...targets.map((t) => cell(by.get(t))));
        tr.append(h("td", { class: r.state === "timeout" || r.state === "error" ? "muted bad" : "muted" }, rowState(r)));
        return tr;
      }),
    );
    state.hidden = true;
    $("mesh-box").hidden = false;
  }

  async function load() {
    try {
      render(await api("/api/v1/mesh"));
      loaded = true;
    } catch (e) {
      if (!loaded) {
        $("mesh-state").textContent = "Could not load the mesh: " + e.message;
        $("mesh-state").hidden = false;
      }
    }
  }

  return {
    show() {
      load();
      if (!timer) timer = setInterval(load, REFRESH_MS);
      return () => {
        clearInterval(timer);
        timer = null;
      };
    },
  };
}
