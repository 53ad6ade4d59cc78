// Hand-written SVG charts: the session RTT chart and the monitors' sparklines.
// Plain DOM, no dependencies; sizes come from the container so text never stretches.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// A "nice" axis step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
function niceStep(span, n) {
  const raw = span / Math.max(1, n);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

// Tick labels carry as many decimals as the step needs, so one axis reads 0, 5, 10 or 0.5, 1.0.
function fmtTick(v, step) {
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
}

function fmtMs(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

// Renders the RTT of every probe of a session into `svg`.
// points: [{seq, rtt (ms) or null when lost, kind}], in any order.
export function rttChart(svg, points) {
  const width = Math.max(280, Math.floor(svg.parentElement.clientWidth || 600));
  const height = width < 500 ? 200 : 260;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.replaceChildren();

  const pad = { l: 48, r: 18, t: 24, b: 32 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const replies = points.filter((p) => p.rtt !== null);
  const lost = points.filter((p) => p.rtt === null);
  const seqs = points.map((p) => p.seq);
  const minSeq = seqs.length ? Math.min(...seqs) : 1;
  const maxSeq = seqs.length ? Math.max(...seqs) : 10;
  const xSpan = Math.max(1, maxSeq - minSeq);
  const maxRtt = replies.length ? Math.max(...replies.map((p) => p.rtt)) : 1;
  const yStep = niceStep(maxRtt * 1.1 || 1, 4);
  const yMax = Math.max(yStep, Math.ceil((maxRtt * 1.1) / yStep) * yStep);
  const x = (s) => pad.l + ((s - minSeq) / xSpan) * w;
  const y = (v) => pad.t + h - (v / yMax) * h;

  const grid = el("g", { class: "grid" });
  for (let v = 0; v <= yMax + yStep / 2; v += yStep) {
    grid.append(el("line", { x1: pad.l, x2: pad.l + w, y1: y(v), y2: y(v) }));
    grid.append(el("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmtTick(v, yStep)));
  }
  const xStep = Math.max(1, Math.round(niceStep(xSpan, width < 500 ? 4 : 8)));
  for (let s = Math.ceil(minSeq / xStep) * xStep; s <= maxSeq; s += xStep) {
    grid.append(el("text", { x: x(s), y: pad.t + h + 18, "text-anchor": "middle", class: "tick" }, String(s)));
  }
  grid.append(el("text", { x: pad.l - 6, y: pad.t - 10, "text-anchor": "end", class: "tick" }, "ms"));
  grid.append(el("text", { x: pad.l + w, y: height - 2, "text-anchor": "end", class: "tick" }, "probe #"));
  svg.append(grid);

  // Lost probes: a band from top to bottom, so a loss is visible however many replies surround it.
  const losses = el("g", { class: "lost" });
  const band = Math.max(2, Math.min(10, w / Math.max(1, xSpan) / 2));
  for (const p of lost) {
    // Clamped to the plot so the first and last probes' marks stay inside it.
    const left = Math.min(Math.max(x(p.seq) - band / 2, pad.l), pad.l + w - band);
    const r = el("rect", { x: left, y: pad.t, width: band, height: h });
    r.append(el("title", {}, `probe ${p.seq}: ${p.kind}`));
    losses.append(r);
  }
  svg.append(losses);

  const ordered = replies.slice().sort((a, b) => a.seq - b.seq);
  if (ordered.length > 1) {
    const d = ordered.map((p, i) => `${i ? "L" : "M"}${x(p.seq).toFixed(1)},${y(p.rtt).toFixed(1)}`).join("");
    svg.append(el("path", { d, class: "line" }));
  }
  const dots = el("g", { class: "dots" });
  if (ordered.length <= 400) {
    for (const p of ordered) {
      const c = el("circle", { cx: x(p.seq), cy: y(p.rtt), r: 2.5 });
      c.append(el("title", {}, `probe ${p.seq}: ${fmtMs(p.rtt)} ms`));
      dots.append(c);
    }
  }
  svg.append(dots);
  svg.append(el("line", { x1: pad.l, x2: pad.l + w, y1: pad.t + h, y2: pad.t + h, class: "axis" }));
  svg.dataset.points = String(replies.length);
  svg.dataset.lost = String(lost.length);
}

// Renders a sparkline of recent RTTs into `svg`; null values are losses, drawn as red ticks.
export function sparkline(svg, values) {
  const width = 160;
  const height = 36;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const nums = values.filter((v) => v !== null);
  const max = nums.length ? Math.max(...nums) : 1;
  const min = nums.length ? Math.min(...nums) : 0;
  const span = Math.max(max - min, max * 0.1, 0.001);
  const step = width / Math.max(1, values.length - 1);
  const y = (v) => 3 + (1 - (v - min) / span) * (height - 6);
  let d = "";
  values.forEach((v, i) => {
    if (v === null) {
      svg.append(el("line", { x1: i * step, x2: i * step, y1: 0, y2: height, class: "lost" }));
      return;
    }
    d += `${d && values[i - 1] !== null ? "L" : "M"}${(i * step).toFixed(1)},${y(v).toFixed(1)}`;
  });
  if (d) svg.append(el("path", { d, class: "line" }));
  svg.dataset.points = String(nums.length);
}
