"use strict";
// Pages of the order-embedding server; every number shown comes from the JSON API under /api/.

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const SVGNS = "http://www.w3.org/2000/svg";
const state = { runs: [], selected: null, page: "runs", browseOffset: 0, browseSeq: 0, curvesSeq: 0, imageShown: false };

// ------------------------------------------------------------------ helpers

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach(x => qs.append(k, x));
    else if (v !== undefined && v !== null) qs.append(k, v);
  }
  const resp = await fetch(path + (qs.toString() ? "?" + qs : ""), { cache: "no-store" });
  let body;
  try { body = await resp.json(); } catch (e) { body = { detail: resp.statusText }; }
  if (!resp.ok) {
    const d = body.detail;
    throw new Error(typeof d === "string" ? d : JSON.stringify(d));
  }
  return body;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  return Number(v).toFixed(digits === undefined ? 1 : digits);
}

function setStatus(msg) { document.getElementById("status").textContent = msg || ""; }

// Colours stay with a run (or a run's model) for the whole session.
const colorMap = new Map();
function colorOf(key) {
  if (!colorMap.has(key)) colorMap.set(key, COLORS[colorMap.size % COLORS.length]);
  return colorMap.get(key);
}

// ------------------------------------------------------------------ SVG line chart

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// series: [{name, color, dash, run, points: [[x, y], ...], line: [[x, y], ...] (the drawn path when it is not
// the points, e.g. smoothed), best: [[x, y], ...] (ringed)}];
// options: {title, xLabel, yLabel, logX, logY, markers, id, vlines: [{x, color, label}], csv: true}
function lineChart(container, series, options) {
  const W = 420, H = 260, L = 52, R = 12, T = 10, B = 36;
  const box = document.createElement("div");
  box.className = "chart-box";
  box.innerHTML = `<h3>${esc(options.title)}</h3>`;
  const svg = el("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-chart": options.id });
  box.appendChild(svg);
  const okX = p => p[0] !== null && isFinite(p[0]) && (!options.logX || p[0] > 0);
  const okY = p => p[1] !== null && isFinite(p[1]) && (!options.logY || p[1] > 0);
  const good = ps => (ps || []).filter(p => okX(p) && okY(p));
  const pts = series.flatMap(s => good(s.points).concat(good(s.line)));
  const tx = v => options.logX ? Math.log10(v) : v;
  const ty = v => options.logY ? Math.log10(v) : v;
  let x0 = Math.min(...pts.map(p => tx(p[0]))), x1 = Math.max(...pts.map(p => tx(p[0])));
  let y0 = Math.min(...pts.map(p => ty(p[1]))), y1 = Math.max(...pts.map(p => ty(p[1])));
  if (!pts.length) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (options.yMin !== undefined && !options.logY) y0 = Math.min(y0, options.yMin);
  if (options.yMax !== undefined && !options.logY) y1 = Math.max(y1, options.yMax);
  if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = v => L + (tx(v) - x0) / (x1 - x0) * (W - L - R);
  const sy = v => T + (1 - (ty(v) - y0) / (y1 - y0)) * (H - T - B);
  const grid = el("g", { class: "grid" }, svg), axis = el("g", { class: "axis" }, svg);
  const logTicks = (a, b) => niceTicks(Math.floor(a), Math.ceil(b), Math.max(1, Math.ceil(b) - Math.floor(a)))
    .filter(t => Number.isInteger(t) && t >= a - 1e-9 && t <= b + 1e-9).map(t => Math.pow(10, t));
  const yticks = options.logY ? logTicks(y0, y1) : niceTicks(y0, y1, 5);
  for (const t of yticks) {
    el("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t) }, grid);
    el("text", { x: L - 4, y: sy(t) + 3, "text-anchor": "end" }, axis).textContent = +t.toPrecision(4);
  }
  const xticks = options.logX ? logTicks(x0, x1) : niceTicks(x0, x1, 5);
  for (const t of xticks) {
    el("line", { x1: sx(t), x2: sx(t), y1: T, y2: H - B }, grid);
    const lbl = t >= 1e4 ? +(t / 1000).toPrecision(6) + "k" : +t.toPrecision(6);
    el("text", { x: sx(t), y: H - B + 13, "text-anchor": "middle" }, axis).textContent = lbl;
  }
  el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }, axis);
  el("line", { x1: L, x2: L, y1: T, y2: H - B }, axis);
  el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, axis).textContent = options.xLabel;
  el("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, axis).textContent = options.yLabel;
  for (const v of options.vlines || []) {
    if (!okX([v.x, 1]) || tx(v.x) < x0 || tx(v.x) > x1) continue;
    const line = el("line", { class: "lr", x1: sx(v.x), x2: sx(v.x), y1: T, y2: H - B, stroke: v.color, "data-x": v.x }, svg);
    el("title", {}, line).textContent = v.label;
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const raw = good(s.points), drawn = s.line ? good(s.line) : raw;
    const g = el("g", { class: "series", "data-series": s.name, "data-run": s.run || "" }, svg);
    const path = ps => "M" + ps.map(p => `${sx(p[0]).toFixed(2)},${sy(p[1]).toFixed(2)}`).join("L");
    if (s.line && raw.length) {
      el("path", { d: path(raw), fill: "none", stroke: s.color, "stroke-width": 1, opacity: 0.25,
        "stroke-dasharray": s.dash ? "5,3" : "none" }, g);
    }
    if (drawn.length) {
      el("path", { class: "main", d: path(drawn), fill: "none", stroke: s.color, "stroke-width": 1.6,
        "stroke-dasharray": s.dash ? "5,3" : "none" }, g);
    }
    if (options.markers !== false) {
      for (const p of raw) {
        const c = el("circle", { class: "pt", cx: sx(p[0]).toFixed(2), cy: sy(p[1]).toFixed(2), r: 2.4, fill: s.color,
          "data-x": p[0], "data-y": p[1], opacity: s.line ? 0.4 : 1 }, g);
        el("title", {}, c).textContent = `${s.name}: ${p[0]}, ${+Number(p[1]).toPrecision(5)}`;
      }
    }
    for (const p of good(s.best)) {
      const c = el("circle", { class: "best", cx: sx(p[0]).toFixed(2), cy: sy(p[1]).toFixed(2), r: 5.5, stroke: s.color,
        "data-x": p[0], "data-y": p[1] }, g);
      el("title", {}, c).textContent = `${s.name}: best checkpoint at ${p[0]}`;
    }
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${s.color};${s.dash ? "opacity:0.6" : ""}"></i>${esc(s.name)}`;
    legend.appendChild(item);
  }
  box.appendChild(legend);
  if (options.csv !== false) {
    chartData.set(options.id, { xLabel: options.xLabel, series });
    const btn = document.createElement("button");
    btn.className = "csv";
    btn.textContent = "CSV";
    btn.dataset.chart = options.id;
    btn.title = "download this chart's data";
    btn.addEventListener("click", () => download(`${options.id}.csv`, chartCSV(options.id)));
    box.querySelector("h3").appendChild(btn);
  }
  container.appendChild(box);
  return svg;
}

// The data of the charts on screen, by chart id, for CSV export.
const chartData = new Map();

function csvField(v) {
  const t = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
}

// One row per plotted point: series, x, y, and the drawn (smoothed) y when it differs.
function chartCSV(id) {
  const c = chartData.get(id);
  if (!c) return "";
  const rows = [["series", c.xLabel, "value", "drawn"].map(csvField).join(",")];
  for (const s of c.series) {
    s.points.forEach((p, i) => {
      const drawn = s.line && s.line[i] ? s.line[i][1] : p[1];
      rows.push([s.name, p[0], p[1], drawn].map(csvField).join(","));
    });
  }
  return rows.join("\n") + "\n";
}

function download(name, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// Exponential moving average with the start debiased (as TensorBoard draws it); weight 0 draws the points.
function smooth(points, weight) {
  if (!(weight > 0)) return null;
  let acc = 0, n = 0;
  return points.map(p => {
    if (p[1] === null || !isFinite(p[1])) return [p[0], null];
    acc = weight * acc + (1 - weight) * p[1];
    n += 1;
    return [p[0], acc / (1 - Math.pow(weight, n))];
  });
}

// ------------------------------------------------------------------ runs and selection

function loadSelection() {
  try {
    const saved = JSON.parse(localStorage.getItem("oe.selected") || "null");
    if (Array.isArray(saved)) return new Set(saved);
  } catch (e) { /* an unreadable saved selection counts as none */ }
  return null;
}

function saveSelection() { localStorage.setItem("oe.selected", JSON.stringify([...state.selected])); }

async function refreshRuns() {
  const data = await api("/api/runs");
  state.runs = data.runs;
  data.runs.forEach(r => colorOf(r.id));
  state.limits = data.limits;
  document.getElementById("runs-dir").textContent = `Runs folder: ${data.runs_dir}`;
  document.title = `order-embedding: ${data.runs_dir}`;
  if (state.selected === null) {
    state.selected = loadSelection() || new Set(data.runs.filter(r => r.ok).map(r => r.id));
  }
  for (const id of [...state.selected]) if (!data.runs.some(r => r.id === id)) state.selected.delete(id);
  fillRunSelects();
  return data;
}

// What to say while a run's split is still being prepared for search (encoded on first use).
function waitNote(runIds, split) {
  const waiting = runIds.filter(id => {
    const r = state.runs.find(x => x.id === id);
    return r && !(r.prepared && r.prepared.split === split && r.prepared.state === "ready");
  });
  return waiting.length ? `preparing ${waiting.join(", ")} (${split} split): encoding its captions and images on first use…` : "";
}

function selectedRuns() { return state.runs.filter(r => state.selected.has(r.id)); }

function fillRunSelects() {
  const searchable = state.runs.filter(r => r.searchable);
  for (const sel of document.querySelectorAll(".run-select")) {
    const current = sel.value;
    sel.innerHTML = searchable.map(r => `<option value="${esc(r.id)}">${esc(r.id)}</option>`).join("");
    if (searchable.some(r => r.id === current)) sel.value = current;
    else {
      const first = searchable.find(r => state.selected.has(r.id));
      if (first) sel.value = first.id;
    }
  }
  for (const sel of document.querySelectorAll(".split-select")) {
    if (!sel.options.length) {
      sel.innerHTML = ["test", "dev", "train"].map(s => `<option value="${s}">${s}</option>`).join("");
    }
  }
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function when(t) { return t === null || t === undefined ? "–" : new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC"; }

function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(6));
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function bestCells(run) {
  const cells = [];
  const best = run.best ? Object.entries(run.best) : [];
  if (run.task === "caption-image" || run.task === null) {
    const b = best.length ? best[0][1] : null;
    for (const d of ["t2i", "i2t"]) {
      for (const k of ["R@1", "R@5", "R@10", "medr", "meanr"]) {
        const v = b && b[d] ? b[d][k] : null;
        cells.push(`<td class="num metric">${fmt(v)}</td>`);
      }
    }
    return cells.join("") + `<td></td>`;
  }
  const acc = best.map(([m, b]) => `${esc(m || run.kind)}: ${fmt(b.dev_accuracy, 2)}%`).join("<br>");
  return `<td colspan="10" class="hp">no retrieval metrics (${esc(run.kind)} run)</td><td class="accuracy">${acc || "–"}</td>`;
}

function scoreCell(run) {
  if (!run.best_score) return "–";
  return Object.entries(run.best_score).map(([m, v]) => (m ? `${esc(m)}: ` : "") + fmt(v, 1)).join("<br>");
}

function optionsCell(run) {
  const entries = Object.entries(run.options || {});
  const hp = Object.entries(run.hyperparameters).map(([k, v]) => `${esc(k)}=${esc(fmtValue(v))}`).join(", ");
  return `<span class="hp-short">${hp}</span><details><summary>all ${entries.length} options</summary>` +
    `<table class="options">${entries.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(fmtValue(v))}</td></tr>`).join("")}</table></details>`;
}

function renderRuns() {
  const table = document.getElementById("runs-table");
  const open = new Set([...table.querySelectorAll("details[open]")].map(d => d.closest("tr").dataset.run));
  const head = `<tr><th rowspan="2">compare</th><th rowspan="2">run</th><th rowspan="2">kind</th><th rowspan="2">status</th>
    <th rowspan="2">started</th><th rowspan="2">duration</th><th rowspan="2">options</th>
    <th rowspan="2">updates</th><th rowspan="2">examples</th><th rowspan="2">best dev score</th>
    <th colspan="5">best dev: text &rarr; image</th><th colspan="5">best dev: image &rarr; text</th><th rowspan="2">dev accuracy</th></tr>
    <tr>${"<th>R@1</th><th>R@5</th><th>R@10</th><th>med r</th><th>mean r</th>".repeat(2)}</tr>`;
  const rows = state.runs.map(r => {
    const checked = state.selected.has(r.id) ? "checked" : "";
    const box = `<input type="checkbox" class="run-check" data-run="${esc(r.id)}" ${checked}>`;
    if (!r.ok) {
      return `<tr class="error" data-run="${esc(r.id)}"><td>${box}</td><td>${esc(r.id)}</td><td>${esc(r.kind || "?")}</td>
        <td colspan="18">error: ${esc(r.error)}</td></tr>`;
    }
    const kind = r.kind === r.task ? esc(r.kind) : `${esc(r.kind)} <span class="hint">(${esc(r.task)})</span>`;
    return `<tr data-run="${esc(r.id)}"><td>${box}</td><td>${esc(r.id)}${r.has_model ? "" : " <em>(no model yet)</em>"}${r.prepared && r.prepared.state === "preparing" ? " <em>(preparing search…)</em>" : ""}</td>
      <td class="kind">${kind}</td><td class="status status-${esc(r.status)}">${esc(r.status)}</td>
      <td class="start">${when(r.start)}</td><td class="duration">${duration(r.duration)}</td>
      <td class="hp">${optionsCell(r)}</td><td class="num updates">${r.updates ?? "–"}</td><td class="num">${r.examples ?? "–"}</td>
      <td class="num score">${scoreCell(r)}</td>${bestCells(r)}</tr>`;
  });
  table.innerHTML = head + rows.join("");
  for (const d of table.querySelectorAll("details")) if (open.has(d.closest("tr").dataset.run)) d.open = true;
  for (const cb of table.querySelectorAll(".run-check")) {
    cb.addEventListener("change", () => {
      if (cb.checked) state.selected.add(cb.dataset.run); else state.selected.delete(cb.dataset.run);
      saveSelection();
      fillRunSelects();
    });
  }
}

// ------------------------------------------------------------------ training charts (Training and Compare pages)

const TRAINING_CHARTS = [
  { id: "loss", title: "training loss", y: "loss", train: true },
  { id: "R@1", title: "dev R@1 (%)", y: "R@1" },
  { id: "R@5", title: "dev R@5 (%)", y: "R@5" },
  { id: "R@10", title: "dev R@10 (%)", y: "R@10" },
  { id: "medr", title: "dev median rank", y: "medr" },
  { id: "meanr", title: "dev mean rank", y: "meanr" },
  { id: "dev_accuracy", title: "dev accuracy (%)", y: "dev_accuracy", accuracy: true },
];
const X_AXES = { examples: "examples seen", uidx: "update", epoch: "epoch", time: "wall time (s)" };

// The controls above a set of charts: smoothing, log scale, x axis; redraw() is called on change.
function chartControls(boxId, prefix, redraw) {
  const box = document.getElementById(boxId);
  if (box.dataset.filled) return;
  box.innerHTML = `<label>smoothing <input type="range" id="${prefix}-smooth" min="0" max="0.99" step="0.01" value="0">
      <span id="${prefix}-smooth-value">0</span></label>
    <label><input type="checkbox" id="${prefix}-logy"> log scale</label>
    <label>x axis <select id="${prefix}-x">${Object.entries(X_AXES).map(([k, v]) => `<option value="${k}">${v}</option>`).join("")}</select></label>`;
  box.dataset.filled = "1";
  document.getElementById(`${prefix}-smooth`).addEventListener("input", () => {
    document.getElementById(`${prefix}-smooth-value`).textContent = document.getElementById(`${prefix}-smooth`).value;
    redraw();
  });
  for (const id of ["logy", "x"]) document.getElementById(`${prefix}-${id}`).addEventListener("change", redraw);
}

function chartSettings(prefix) {
  return { smooth: +document.getElementById(`${prefix}-smooth`).value, logY: document.getElementById(`${prefix}-logy`).checked,
           x: document.getElementById(`${prefix}-x`).value };
}

// x of a logged point on the chosen axis (wall time counted from the run's first record).
function xOf(p, axis, t0) { return axis === "time" ? (p.time === null ? null : p.time - t0) : p[axis]; }

function drawTrainingCharts(container, data, settings, chartIds) {
  container.innerHTML = "";
  const frag = document.createElement("div");
  frag.className = "charts";
  for (const r of data.runs.filter(r => r.error)) frag.insertAdjacentHTML("beforeend", `<p class="error-text">${esc(r.id)}: ${esc(r.error)}</p>`);
  for (const chart of TRAINING_CHARTS.filter(c => !chartIds || chartIds.includes(c.id))) {
    const series = [], vlines = [];
    for (const run of data.runs) {
      const all = Object.values(run.series).flatMap(g => g.train.concat(g.valid));
      const t0 = Math.min(...all.map(p => p.time).filter(t => t !== null));
      for (const [model, g] of Object.entries(run.series)) {
        const name = model ? `${run.id}/${model}` : run.id;
        const color = colorOf(name);
        const add = (label, pts, best, dash) => {
          if (!pts.length && !chart.train) return;
          series.push({ name: label, run: run.id, color, dash, points: pts, line: smooth(pts, settings.smooth), best });
        };
        if (chart.train) {
          add(name, g.train.filter(p => p.loss !== null).map(p => [xOf(p, settings.x, t0), p.loss]), [], false);
          // learning-rate changes: where the logged rate changes, or where the schedule says it does
          let last = null;
          for (const p of g.train) {
            if (p.lr !== null && last !== null && p.lr !== last) vlines.push({ x: xOf(p, settings.x, t0), color, label: `${name}: learning rate ${last} → ${p.lr}` });
            if (p.lr !== null) last = p.lr;
          }
          if (last === null) {
            for (const c of run.lr_changes || []) {
              const p = g.train.find(q => q.epoch !== null && q.epoch >= c.epoch);
              if (p) vlines.push({ x: xOf(p, settings.x, t0), color, label: `${name}: learning rate ${c.lr} from epoch ${c.epoch}` });
            }
          }
        } else if (chart.accuracy) {
          const v = g.valid.filter(p => p.dev_accuracy !== null);
          add(name, v.map(p => [xOf(p, settings.x, t0), p.dev_accuracy]), v.filter(p => p.best).map(p => [xOf(p, settings.x, t0), p.dev_accuracy]), false);
        } else {
          for (const d of ["t2i", "i2t"]) {
            const v = g.valid.filter(p => p[d] && p[d][chart.y] !== null);
            add(`${name} ${d}`, v.map(p => [xOf(p, settings.x, t0), p[d][chart.y]]),
                v.filter(p => p.best).map(p => [xOf(p, settings.x, t0), p[d][chart.y]]), d === "i2t");
          }
        }
      }
    }
    if (!chart.train && !series.length) continue;
    lineChart(frag, series, { id: chart.id, title: chart.title, xLabel: X_AXES[settings.x], yLabel: chart.y,
                              logY: settings.logY, vlines });
  }
  container.appendChild(frag);
}

async function renderTraining() {
  const box = document.getElementById("training-charts");
  chartControls("training-controls", "training", guarded(renderTraining));
  const ids = selectedRuns().map(r => r.id);
  if (!ids.length) { box.innerHTML = "<p class='hint'>Tick runs on the Runs page.</p>"; return; }
  const data = await api("/api/metrics", { run: ids });
  drawTrainingCharts(box, data, chartSettings("training"));
}

// ------------------------------------------------------------------ results

// Every figure of a results.json: scalars as key/value rows, nested objects as headed sections, sibling
// objects of figures (models, baselines) as one table with a column each, ROC curves drawn, lists of
// objects (folds) as tables.
function isRoc(v) { return v && typeof v === "object" && Array.isArray(v.fpr) && Array.isArray(v.tpr); }
// One recorded ROC curve as a chart series, named with its AUC when it has one.
function rocSeries(name, roc, color) {
  return { name: `${name}${roc.auc !== undefined ? ` (AUC ${fmtValue(roc.auc)})` : ""}`, color,
           points: roc.fpr.map((f, i) => [f, roc.tpr[i]]) };
}
const ROC_AXES = { xLabel: "false positive rate", yLabel: "true positive rate", markers: false, yMin: 0, yMax: 1 };
function isPlain(v) { return v === null || typeof v !== "object"; }
function flatFigures(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isRoc(v)) { if (v.auc !== undefined) out[`${key}.auc`] = v.auc; }
    else if (Array.isArray(v)) { if (v.every(isPlain)) out[key] = v.join(", "); }
    else if (v && typeof v === "object") flatFigures(v, key, out);
    else out[key] = v;
  }
  return out;
}
function findRocs(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isRoc(v)) out.push([key, v]);
    else if (v && typeof v === "object" && !Array.isArray(v)) findRocs(v, key, out);
  }
  return out;
}
function figuresTable(columns) {
  const flat = columns.map(([, v]) => flatFigures(v, "", {}));
  const keys = [...new Set(flat.flatMap(f => Object.keys(f)))];
  return `<table class="table figures by-column"><tr><th></th>${columns.map(([n]) => `<th>${esc(n)}</th>`).join("")}</tr>` +
    keys.map(k => `<tr><td>${esc(k)}</td>${flat.map(f => `<td class="num">${k in f ? esc(fmtValue(f[k])) : "–"}</td>`).join("")}</tr>`).join("") + "</table>";
}
function renderFigures(obj, title, depth) {
  const h = depth <= 1 ? "h3" : "h4";
  let html = `<div class="results-section" data-section="${esc(title)}">${title ? `<${h}>${esc(title)}</${h}>` : ""}`;
  const scalars = Object.entries(obj).filter(([k, v]) => isPlain(v) && k !== "protocol");
  const lists = Object.entries(obj).filter(([, v]) => Array.isArray(v));
  const objects = Object.entries(obj).filter(([k, v]) => v && typeof v === "object" && !Array.isArray(v) && !isRoc(v) && k !== "baselines");
  const baselines = obj.baselines && typeof obj.baselines === "object" && !Array.isArray(obj.baselines) ? obj.baselines : null;
  if (typeof obj.protocol === "string") html += `<p class="protocol">protocol: ${esc(obj.protocol)}</p>`;
  if (scalars.length) {
    html += `<table class="table figures">${scalars.map(([k, v]) => `<tr><td>${esc(k)}</td><td class="num">${esc(fmtValue(v))}</td></tr>`).join("")}</table>`;
  }
  const baselineCols = baselines ? Object.entries(baselines).map(([n, v]) => [`baseline: ${n}`, isPlain(v) ? { value: v } : v]) : [];
  // Sibling objects that report the same figures (mostly the same keys) share one table, a column each;
  // the baselines join the group whose figures they share most.
  const keysOf = v => Object.keys(flatFigures(v, "", {}));
  const overlap = (a, b) => a.filter(k => b.includes(k)).length / Math.max(1, Math.min(a.length, b.length));
  const groups = [];
  for (const entry of objects) {
    const keys = keysOf(entry[1]);
    const g = groups.find(g => overlap(g.keys, keys) >= 0.5);
    if (g) { g.cols.push(entry); g.keys = [...new Set(g.keys.concat(keys))]; } else groups.push({ keys, cols: [entry] });
  }
  if (baselineCols.length) {
    const bkeys = [...new Set(baselineCols.flatMap(([, v]) => keysOf(v)))];
    const scalarKeys = scalars.map(([k]) => k);
    const best = groups.map(g => overlap(g.keys, bkeys)).reduce((bi, o, i, all) => (o > all[bi] ? i : bi), 0);
    if (groups.length && overlap(groups[best].keys, bkeys) > 0) groups[best].baselines = baselineCols;
    else if (overlap(scalarKeys, bkeys) > 0) groups.push({ keys: scalarKeys, cols: [["this model", Object.fromEntries(scalars)]], baselines: baselineCols });
    else groups.push({ keys: bkeys, cols: [], baselines: baselineCols });
  }
  for (const g of groups) {
    if (g.cols.length >= 2 || g.baselines) {
      html += figuresTable(g.cols.concat(g.baselines || []));
      for (const [k, v] of g.cols) {
        for (const [lk, lv] of Object.entries(v).filter(([, x]) => Array.isArray(x) && x.some(y => y && typeof y === "object"))) {
          html += listTable(`${k}: ${lk}`, lv);
        }
        if (typeof v.protocol === "string") html += `<p class="protocol">${esc(k)} protocol: ${esc(v.protocol)}</p>`;
      }
    } else {
      for (const [k, v] of g.cols) html += renderFigures(v, k, depth + 1);
    }
  }
  for (const [k, v] of lists) {
    if (v.some(y => y && typeof y === "object")) html += listTable(k, v);
    else html += `<p><b>${esc(k)}</b>: ${esc(v.map(fmtValue).join(", "))}</p>`;
  }
  return html + "</div>";
}
function listTable(title, list) {
  const flat = list.map(x => x && typeof x === "object" ? flatFigures(x, "", {}) : { value: x });
  const keys = [...new Set(flat.flatMap(f => Object.keys(f)))];
  return `<details class="results-section"><summary>${esc(title)} (${list.length})</summary><table class="table figures"><tr><th>#</th>${keys.map(k => `<th>${esc(k)}</th>`).join("")}</tr>` +
    flat.map((f, i) => `<tr><td>${i}</td>${keys.map(k => `<td class="num">${k in f ? esc(fmtValue(f[k])) : "–"}</td>`).join("")}</tr>`).join("") + "</table></details>";
}

async function renderResults() {
  const sel = document.getElementById("results-run"), box = document.getElementById("results-body");
  const withResults = state.runs.filter(r => r.has_results);
  const current = sel.value;
  sel.innerHTML = withResults.map(r => `<option value="${esc(r.id)}">${esc(r.id)} (${esc(r.kind)})</option>`).join("");
  if (withResults.some(r => r.id === current)) sel.value = current;
  if (!sel.value) { box.innerHTML = "<p class='hint'>No run folder here records a results.json.</p>"; return; }
  const run = sel.value;
  box.innerHTML = "<p class='hint'>loading…</p>";
  const data = await api("/api/results", { run });
  if (sel.value !== run) return;  // another run was picked meanwhile
  const res = data.results;
  box.innerHTML = `<p>run <b>${esc(run)}</b>, kind ${esc(data.kind)}</p>` +
    (typeof res.protocol === "string" ? "" : `<p class="protocol">protocol: not recorded in results.json</p>`) +
    renderFigures(res, "", 0) + `<div id="results-roc" class="charts"></div>`;
  const rocs = findRocs(res, "", []);
  if (rocs.length) {
    lineChart(document.getElementById("results-roc"), rocs.map(([k, v]) => rocSeries(k, v, colorOf(`roc ${k}`))),
      { id: "roc", title: "ROC", ...ROC_AXES });
  }
}

// ------------------------------------------------------------------ compare

function compareRuns() { return selectedRuns().filter(r => r.ok); }

function renderComparePicks() {
  const box = document.getElementById("compare-picks");
  box.innerHTML = "runs: " + state.runs.filter(r => r.ok).map(r =>
    `<label><input type="checkbox" class="compare-check" data-run="${esc(r.id)}" ${state.selected.has(r.id) ? "checked" : ""}> ${esc(r.id)}</label>`).join(" ");
  for (const cb of box.querySelectorAll(".compare-check")) {
    cb.addEventListener("change", () => {
      if (cb.checked) state.selected.add(cb.dataset.run); else state.selected.delete(cb.dataset.run);
      saveSelection();
      fillRunSelects();
      document.getElementById("compare-results").innerHTML = "";
      document.getElementById("compare-note").textContent = "";
      guarded(renderCompare)();
    });
  }
}

async function renderCompare() {
  renderComparePicks();
  chartControls("compare-controls", "compare", guarded(renderCompareCharts));
  const chosen = compareRuns();
  const table = document.getElementById("compare-options");
  if (chosen.length < 2) {
    table.innerHTML = "<tr><td class='hint'>Pick two or more runs.</td></tr>";
    document.getElementById("compare-charts").innerHTML = "";
    return;
  }
  const keys = [...new Set(chosen.flatMap(r => Object.keys(r.options)))].sort();
  const only = document.getElementById("compare-diff-only").checked;
  const facts = [["kind", r => r.kind], ["status", r => r.status], ["duration", r => duration(r.duration)],
                 ["updates", r => r.updates], ["best dev score", r => r.best_score ? Object.values(r.best_score).map(v => fmt(v)).join(", ") : "–"]];
  const row = (k, vals, cls) => `<tr class="${cls}" data-option="${esc(k)}"><td>${esc(k)}</td>${vals.map(v => `<td>${esc(v)}</td>`).join("")}</tr>`;
  const rows = facts.map(([k, f]) => row(k, chosen.map(r => fmtValue(f(r))), "fact"));
  for (const k of keys) {
    const vals = chosen.map(r => (k in r.options ? fmtValue(r.options[k]) : "(absent)"));
    const differ = new Set(vals).size > 1;
    if (only && !differ) continue;
    rows.push(row(k, vals, differ ? "diff" : "same"));
  }
  table.innerHTML = `<tr><th>option</th>${chosen.map(r => `<th>${esc(r.id)}</th>`).join("")}</tr>` + rows.join("");
  await renderCompareCharts();
}

async function renderCompareCharts() {
  const chosen = compareRuns();
  if (chosen.length < 2) return;
  const data = await api("/api/metrics", { run: chosen.map(r => r.id) });
  drawTrainingCharts(document.getElementById("compare-charts"), data, chartSettings("compare"), ["loss", "R@1", "medr", "dev_accuracy"]);
}

let compareSeq = 0;
async function compareSearch() {
  const q = document.getElementById("compare-q").value, split = document.getElementById("compare-split").value;
  const chosen = compareRuns().filter(r => r.searchable);
  const box = document.getElementById("compare-results"), note = document.getElementById("compare-note");
  if (!q.trim()) return;
  if (!chosen.length) { note.textContent = "none of the compared runs has a caption-image model to search"; return; }
  const seq = ++compareSeq;
  box.innerHTML = "";
  note.textContent = waitNote(chosen.map(r => r.id), split) || "searching…";
  const answers = await Promise.all(chosen.map(r => api("/api/search", { run: r.id, split, q, k: 10 }).catch(e => ({ run: r.id, error: e.message }))));
  if (seq !== compareSeq) return;  // a newer search replaced this one
  note.textContent = answers.find(a => !a.error) ? answers.find(a => !a.error).protocol : "";
  box.innerHTML = answers.map(a => a.error
    ? `<div class="compare-col" data-run="${esc(a.run)}"><h4>${esc(a.run)}</h4><p class="error-text">${esc(a.error)}</p></div>`
    : `<div class="compare-col" data-run="${esc(a.run)}"><h4>${esc(a.run)} (${esc(a.split)} split)</h4>
       <p class="hint">words used: ${esc(a.tokens.join(" "))}${a.unknown.length ? ` — not in the vocabulary: ${esc(a.unknown.join(", "))}` : ""}</p>
       <div class="thumbs">${a.results.map((r, i) => thumb(r.image_url, `#${i + 1} img ${r.image}`, false, `<br>err ${fmt(r.error, 3)}`, r.true)).join("")}</div></div>`).join("");
}

// ------------------------------------------------------------------ recall curves

async function renderCurves() {
  const split = document.getElementById("curves-split").value;
  const charts = document.getElementById("curves-charts"), table = document.getElementById("curves-table");
  const runsToShow = selectedRuns().filter(r => r.searchable);
  if (!runsToShow.length) {
    charts.innerHTML = "<p class='hint'>Tick caption-image runs with a saved model on the Runs page.</p>";
    table.innerHTML = "";
    document.getElementById("curves-roc").innerHTML = "";
    return;
  }
  charts.innerHTML = `<p class='hint'>${esc(waitNote(runsToShow.map(r => r.id), split) || "computing ranks…")}</p>`;
  const seq = ++state.curvesSeq;
  const results = await Promise.all(runsToShow.map(r => api("/api/curves", { run: r.id, split }).catch(e => ({ run: r.id, error: e.message }))));
  if (seq !== state.curvesSeq) return;  // the split changed meanwhile: a newer request draws
  charts.innerHTML = "";
  const ok = results.find(r => !r.error);
  document.getElementById("curves-protocol").innerHTML = ok ? `<span class="protocol">${esc(ok.protocol)}</span> (the demo's and the paper's 1K figures are means over folds of 1,000 images: see Results)` : "";
  for (const [d, title, yLabel] of [["t2i", "text → image: fraction of captions whose image ranks ≤ K", "fraction of captions"],
                                    ["i2t", "image → text: fraction of images with a caption ranked ≤ K", "fraction of images"]]) {
    const series = results.filter(r => !r.error).map(r => ({
      name: `${r.run} (${r.method})`, run: r.run, color: colorOf(r.run),
      points: r[d].recall.map((f, i) => [i + 1, f]),
    }));
    lineChart(charts, series, { id: `curve-${d}`, title, xLabel: "K (log scale)", yLabel, logX: true, markers: false, yMin: 0, yMax: 1 });
  }
  const keys = ["R@1", "R@5", "R@10", "medr", "meanr"];
  const rows = results.map(r => {
    if (r.error) return `<tr class="error"><td>${esc(r.run)}</td><td colspan="10">${esc(r.error)}</td></tr>`;
    const cells = ["i2t", "t2i"].map(d => keys.map(k => `<td class="num">${fmt(r[d].metrics[k])}</td>`).join("")).join("");
    return `<tr><td>${esc(r.run)}</td>${cells}</tr>`;
  });
  table.innerHTML = `<table class="table" id="curves-metrics"><tr><th rowspan="2">model (${esc(split)})</th>
    <th colspan="5">caption retrieval (image &rarr; text)</th><th colspan="5">image retrieval (text &rarr; image)</th></tr>
    <tr>${"<th>R@1</th><th>R@5</th><th>R@10</th><th>med r</th><th>mean r</th>".repeat(2)}</tr>${rows.join("")}</table>`;
  await drawRecordedRocs(runsToShow, seq);
}

// The ROC curves the ticked runs recorded in results.json (the demo's "does this caption describe this
// image" over its test folds): recorded, not recomputed here, so they keep the run's own protocol.
async function drawRecordedRocs(runsToShow, seq) {
  const box = document.getElementById("curves-roc");
  const recorded = await Promise.all(runsToShow.filter(r => r.has_results)
    .map(r => api("/api/results", { run: r.id }).then(d => [r.id, d.results]).catch(() => [r.id, null])));
  if (seq !== state.curvesSeq) return;
  box.innerHTML = "";
  const series = recorded.filter(([, res]) => res && isRoc(res.roc))
    .map(([run, res]) => ({ ...rocSeries(run, res.roc, colorOf(run)), run, protocol: res.protocol }));
  if (!series.length) return;
  const protocols = [...new Set(series.map(s => s.protocol).filter(p => typeof p === "string"))];
  const note = document.createElement("p");
  note.className = "hint";
  note.id = "curves-roc-protocol";
  note.textContent = `ROC from each run's results.json, not from the split above: ${protocols.join("; ") || "protocol not recorded"}`;
  const charts = document.createElement("div");
  charts.className = "charts";
  box.append(note, charts);
  lineChart(charts, series, { id: "curves-roc", title: "ROC: does a caption describe an image", ...ROC_AXES });
}

// ------------------------------------------------------------------ browser

// truth: true when the caption truly describes the image (shapes world), false when not, null when unknown.
function thumb(url, label, correct, extra, truth) {
  const cls = (correct ? " correct" : "") + (truth === true ? " true" : truth === false ? " untrue" : "");
  const mark = truth === true ? `<br><span class="mark">true match</span>` : "";
  return `<div class="thumb${cls}"><img loading="lazy" src="${esc(url)}" alt="${esc(label)}"><div>${esc(label)}${extra || ""}${mark}</div></div>`;
}

async function renderBrowse() {
  const run = document.getElementById("browse-run").value;
  const box = document.getElementById("browse-items"), info = document.getElementById("browse-info");
  if (!run) { box.innerHTML = "<p class='hint'>No run with a saved caption-image model.</p>"; return; }
  const direction = document.getElementById("browse-direction").value;
  const params = { run, split: document.getElementById("browse-split").value, direction, offset: state.browseOffset,
                   limit: 10, failures: document.getElementById("browse-failures").checked };
  box.innerHTML = `<p class='hint'>${esc(waitNote([run], params.split) || "loading…")}</p>`;
  const seq = ++state.browseSeq;
  const data = await api("/api/browse", params);
  if (seq !== state.browseSeq) return;  // a newer request replaced this one
  document.getElementById("browse-protocol").innerHTML = `run ${esc(data.run)}, <span class="protocol">${esc(data.protocol)}</span>` +
    (data.judged ? "; green: the image a caption was written for, blue dashed with “true match”: any image the caption truly describes (checked against the scene)" : "; green: the image a caption was written for (no scene descriptions to judge other matches by)");
  state.browseTotal = data.total;
  const end = Math.min(data.offset + data.items.length, data.total);
  info.textContent = `${data.total ? data.offset + 1 : 0}–${end} of ${data.total} ${data.failures ? "failures" : "queries"} (R@1 ${fmt(data.metrics["R@1"])}%)`;
  box.innerHTML = data.items.map(it => {
    const cls = it.rank === 1 ? "hit" : "fail";
    if (direction === "t2i") {
      const tops = it.top.map((t, i) => thumb(t.image_url, `#${i + 1} img ${t.image}`, t.correct, `<br>err ${fmt(t.error, 3)}`, t.true)).join("");
      const trueCount = it.top.filter(t => t.true).length;
      return `<div class="item ${cls}"><div class="query">caption ${it.query}: “${esc(it.caption)}” — its own image ranks ${it.rank}${data.judged ? `; ${trueCount} of the top 10 truly match` : ""}</div>
        <div class="thumbs">${thumb(it.image_url, `truth: img ${it.image}`, true)}<span style="width:1em"></span>${tops}</div></div>`;
    }
    const caps = it.top.map(t => `<li class="${t.correct ? "correct" : ""}${t.true ? " true" : ""}">${esc(t.text)} <span class="hint">(err ${fmt(t.error, 3)}${t.true && !t.correct ? ", true of this image" : ""})</span></li>`).join("");
    return `<div class="item ${cls}"><div class="query">image ${it.query} — best own caption ranks ${it.rank}</div>
      <div class="side-by-side">${thumb(it.image_url, `img ${it.image}`, true)}
      <div><div class="hint">its captions: ${it.captions.map(esc).join(" | ")}</div><ol class="captions">${caps}</ol></div></div></div>`;
  }).join("") || "<p class='hint'>nothing to show</p>";
}

// ------------------------------------------------------------------ search

async function fillIndexSelect() {
  const sel = document.getElementById("search-source");
  if (sel.dataset.filled) return;
  const data = await api("/api/indexes", {});
  sel.innerHTML = `<option value="">a run's split</option>` + data.indexes.map(ix =>
    `<option value="${esc(ix.name)}">index ${esc(ix.name)} (${ix.images} images)</option>`).join("");
  sel.dataset.filled = "1";
}

function sourceChanged() {
  const fromIndex = document.getElementById("search-source").value !== "";
  for (const id of ["search-run", "search-split"]) document.getElementById(id).disabled = fromIndex;
  for (const id of ["image-form", "image-results"]) document.getElementById(id).style.display = fromIndex ? "none" : "";
}

// Every search answer is numbered: one that arrives after a newer request was made (another run,
// split or query) is dropped, so one model's results never show under another's name.
const searchSeq = { text: 0, image: 0 };

// The run, split or source changed: what is on screen belongs to the old one, so clear it and ask again.
function searchChanged() {
  searchSeq.text++; searchSeq.image++;
  for (const id of ["search-results", "image-results"]) document.getElementById(id).innerHTML = "";
  document.getElementById("search-note").textContent = "";
  if (document.getElementById("search-q").value.trim()) runSearch();
  if (state.imageShown) imageSearch();
}

async function runSearch() {
  const run = document.getElementById("search-run").value;
  const index = document.getElementById("search-source").value;
  const q = document.getElementById("search-q").value;
  const split = document.getElementById("search-split").value;
  const note = document.getElementById("search-note"), box = document.getElementById("search-results");
  if ((!run && !index) || !q.trim()) return;
  const seq = ++searchSeq.text;
  box.innerHTML = "";
  note.textContent = (!index && waitNote([run], split)) || "searching…";
  try {
    const k = document.getElementById("search-k").value;
    const data = index ? await api("/api/index-search", { index, q, k })
                       : await api("/api/search", { run, split, q, k });
    if (seq !== searchSeq.text) return;
    const where = index ? `index ${index}` : `run ${data.run}, ${data.protocol}`;
    note.textContent = `${where} — words used: ${data.tokens.join(" ")}` + (data.unknown.length ? ` — not in the vocabulary: ${data.unknown.join(", ")}` : "") +
      (data.judged ? ` — ${data.results.filter(r => r.true).length} of ${data.results.length} truly match the sentence` : "");
    box.dataset.run = index ? "" : data.run;
    box.dataset.split = index ? "" : data.split;
    box.innerHTML = data.results.map((r, i) => `<div class="thumb search-result${r.true ? " true" : ""}" data-image="${r.image}">
      <img src="${esc(r.image_url)}" alt="image ${r.image}" title="${index ? `image ${r.image} of index ${esc(index)}` : "click for its top captions"}"><div>#${i + 1} image ${r.image}<br>error ${fmt(r.error, 4)}${r.true ? `<br><span class="mark">true match</span>` : ""}</div></div>`).join("");
    if (!index) {
      for (const t of box.querySelectorAll(".search-result")) {
        t.addEventListener("click", () => { document.getElementById("search-image").value = t.dataset.image; imageSearch(); });
      }
    }
  } catch (e) {
    if (seq !== searchSeq.text) return;
    note.innerHTML = `<span class="error-text">${esc(e.message)}</span>`; box.innerHTML = "";
  }
}

async function imageSearch() {
  const run = document.getElementById("search-run").value;
  const box = document.getElementById("image-results");
  if (!run) return;
  state.imageShown = true;
  const seq = ++searchSeq.image;
  box.innerHTML = "";
  try {
    const data = await api("/api/search", { run, split: document.getElementById("search-split").value,
                                            image: document.getElementById("search-image").value,
                                            k: document.getElementById("search-k").value });
    if (seq !== searchSeq.image) return;
    box.dataset.run = data.run;
    box.innerHTML = `<p class="hint">run ${esc(data.run)}, ${esc(data.protocol)}</p><div class="side-by-side">${thumb(data.image_url, `image ${data.image}`, true)}<ol class="captions">` +
      data.results.map(r => `<li class="${r.correct ? "correct" : ""}${r.true ? " true" : ""}">${esc(r.text)} <span class="hint">(caption ${r.caption}, error ${fmt(r.error, 4)}${r.true && !r.correct ? ", true of this image" : ""})</span></li>`).join("") +
      "</ol></div>";
  } catch (e) { if (seq === searchSeq.image) box.innerHTML = `<span class="error-text">${esc(e.message)}</span>`; }
}

// ------------------------------------------------------------------ probe

function wordsNote(side, w) {
  return `${side}: ${esc(w.tokens.join(" "))}` + (w.unknown.length ? ` — <span class="unknown">not in the vocabulary: ${esc(w.unknown.join(", "))}</span>` : "");
}

let probeSeq = 0;
async function probePair() {
  const run = document.getElementById("probe-run").value, a = document.getElementById("probe-a").value, b = document.getElementById("probe-b").value;
  const box = document.getElementById("probe-pair");
  if (!run || !a.trim() || !b.trim()) return;
  const seq = ++probeSeq;
  box.innerHTML = "<p class='hint'>encoding…</p>";
  try {
    const d = await api("/api/probe", { run, a, b });
    if (seq !== probeSeq) return;
    const verdict = d.E_ab < d.E_ba ? "a is placed above b (a reads as the more general)" : d.E_ab > d.E_ba ? "b is placed above a (b reads as the more general)" : "the same both ways";
    box.innerHTML = `<table class="table probe-figures" data-run="${esc(d.run)}"><tr><th>run ${esc(d.run)} (${esc(d.method)} measure)</th><th>error</th></tr>
      <tr><td>E(a, b)</td><td class="num" id="probe-eab">${fmt(d.E_ab, 5)}</td></tr>
      <tr><td>E(b, a)</td><td class="num" id="probe-eba">${fmt(d.E_ba, 5)}</td></tr></table>
      <p>${esc(verdict)}</p><p class="hint">${wordsNote("a", d.a)}<br>${wordsNote("b", d.b)}</p>`;
  } catch (e) { if (seq === probeSeq) box.innerHTML = `<span class="error-text">${esc(e.message)}</span>`; }
}

async function probeImage() {
  const run = document.getElementById("probe-run").value, a = document.getElementById("probe-caption").value;
  const box = document.getElementById("probe-image-result");
  if (!run || !a.trim()) return;
  const split = document.getElementById("probe-split").value, image = document.getElementById("probe-image").value;
  const seq = ++probeSeq;
  box.innerHTML = `<p class='hint'>${esc(waitNote([run], split) || "encoding…")}</p>`;
  try {
    const d = await api("/api/probe", { run, a, split, image });
    if (seq !== probeSeq) return;
    const truth = d.true === true ? "the caption is true of this image" : d.true === false ? "the caption is not true of this image" : "";
    box.innerHTML = `<div class="side-by-side">${thumb(d.image_url, `${d.split} image ${d.image}`, false, "", d.true)}<div>
      <table class="table probe-figures" data-run="${esc(d.run)}"><tr><td>E(caption, image) under ${esc(d.run)} (${esc(d.method)})</td><td class="num" id="probe-eai">${fmt(d.E_a_image, 5)}</td></tr>
      <tr><td>rank among the ${d.captions} captions of the ${esc(d.split)} split for this image</td><td class="num" id="probe-rank">${d.rank}</td></tr></table>
      <p>${esc(truth)}</p><p class="hint">${wordsNote("caption", d.a)}</p>
      <p class="hint">its own captions: ${d.own_captions.map(c => `${esc(c.text)} (${fmt(c.error, 4)})`).join(" | ")}</p></div></div>`;
  } catch (e) { if (seq === probeSeq) box.innerHTML = `<span class="error-text">${esc(e.message)}</span>`; }
}

// ------------------------------------------------------------------ page switching and polling

async function refreshPage() {
  try {
    if (state.page === "runs") { await refreshRuns(); renderRuns(); }
    else if (state.page === "training") { await renderTraining(); }
    setStatus("");
  } catch (e) { setStatus(`update failed: ${e.message}`); }
}

const PAGES = ["runs", "training", "results", "compare", "curves", "browse", "search", "probe"];

async function show(page) {
  state.page = PAGES.includes(page) ? page : "runs";
  for (const s of document.querySelectorAll(".page")) s.classList.toggle("active", s.id === `page-${state.page}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === state.page);
  try {
    await refreshRuns();
    if (state.page === "runs") renderRuns();
    else if (state.page === "training") await renderTraining();
    else if (state.page === "curves") await renderCurves();
    else if (state.page === "browse") { state.browseOffset = 0; await renderBrowse(); }
    else if (state.page === "search") await fillIndexSelect();
    else if (state.page === "results") await renderResults();
    else if (state.page === "compare") await renderCompare();
    setStatus("");
  } catch (e) { setStatus(`error: ${e.message}`); }
}

function guarded(fn) { return () => fn().catch(e => setStatus(`error: ${e.message}`)); }

function init() {
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  document.getElementById("curves-split").addEventListener("change", guarded(renderCurves));
  for (const id of ["browse-run", "browse-split", "browse-direction", "browse-failures"]) {
    document.getElementById(id).addEventListener("change", () => { state.browseOffset = 0; guarded(renderBrowse)(); });
  }
  document.getElementById("browse-prev").addEventListener("click", () => { state.browseOffset = Math.max(0, state.browseOffset - 10); guarded(renderBrowse)(); });
  document.getElementById("browse-next").addEventListener("click", () => {
    if (state.browseOffset + 10 < (state.browseTotal || 0)) { state.browseOffset += 10; guarded(renderBrowse)(); }
  });
  document.getElementById("search-form").addEventListener("submit", ev => { ev.preventDefault(); runSearch(); });
  document.getElementById("search-source").addEventListener("change", () => { sourceChanged(); searchChanged(); });
  for (const id of ["search-run", "search-split", "search-k"]) document.getElementById(id).addEventListener("change", searchChanged);
  document.getElementById("results-run").addEventListener("change", guarded(renderResults));
  document.getElementById("compare-diff-only").addEventListener("change", guarded(renderCompare));
  document.getElementById("compare-form").addEventListener("submit", ev => { ev.preventDefault(); guarded(compareSearch)(); });
  document.getElementById("compare-split").addEventListener("change", () => { document.getElementById("compare-results").innerHTML = ""; guarded(compareSearch)(); });
  document.getElementById("probe-form").addEventListener("submit", ev => { ev.preventDefault(); probePair(); });
  document.getElementById("probe-image-form").addEventListener("submit", ev => { ev.preventDefault(); probeImage(); });
  document.getElementById("probe-run").addEventListener("change", () => {
    for (const id of ["probe-pair", "probe-image-result"]) document.getElementById(id).innerHTML = "";
    probeSeq++;
    probePair(); probeImage();
  });
  document.getElementById("image-form").addEventListener("submit", ev => { ev.preventDefault(); imageSearch(); });
  setInterval(() => { if (state.page === "runs" || state.page === "training") refreshPage(); }, 2000);
  show(location.hash.slice(1));
}

init();
