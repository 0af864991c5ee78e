"use strict";
// Pages of the order-embedding server; every number shown comes from the JSON API under /api/.

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const SVGNS = "http://www.w3.org/2000/svg";
const state = { runs: [], selected: null, page: "runs", browseOffset: 0, timers: [] };

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

// series: [{name, color, dash, run, points: [[x, y], ...]}]; options: {title, xLabel, yLabel, logX, markers, id}
function lineChart(container, series, options) {
  const W = 420, H = 260, L = 52, R = 12, T = 10, B = 36;
  const box = document.createElement("div");
  box.className = "chart-box";
  box.innerHTML = `<h3>${esc(options.title)}</h3>`;
  const svg = el("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-chart": options.id });
  box.appendChild(svg);
  const pts = series.flatMap(s => s.points).filter(p => p[1] !== null && isFinite(p[1]) && (!options.logX || p[0] > 0));
  const tx = v => options.logX ? Math.log10(v) : v;
  let x0 = Math.min(...pts.map(p => tx(p[0]))), x1 = Math.max(...pts.map(p => tx(p[0])));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (!pts.length) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (options.yMin !== undefined) y0 = Math.min(y0, options.yMin);
  if (options.yMax !== undefined) y1 = Math.max(y1, options.yMax);
  if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = v => L + (tx(v) - x0) / (x1 - x0) * (W - L - R);
  const sy = v => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const grid = el("g", { class: "grid" }, svg), axis = el("g", { class: "axis" }, svg);
  for (const t of niceTicks(y0, y1, 5)) {
    el("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t) }, grid);
    el("text", { x: L - 4, y: sy(t) + 3, "text-anchor": "end" }, axis).textContent = +t.toPrecision(4);
  }
  const xticks = options.logX
    ? niceTicks(Math.floor(x0), Math.ceil(x1), Math.max(1, Math.ceil(x1) - Math.floor(x0))).filter(t => Number.isInteger(t) && t >= x0 - 1e-9 && t <= x1 + 1e-9).map(t => Math.pow(10, t))
    : niceTicks(x0, x1, 5);
  for (const t of xticks) {
    el("line", { x1: sx(t), x2: sx(t), y1: T, y2: H - B }, grid);
    const lbl = t >= 1e4 ? (t / 1000) + "k" : +t.toPrecision(4);
    el("text", { x: sx(t), y: H - B + 13, "text-anchor": "middle" }, axis).textContent = lbl;
  }
  el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }, axis);
  el("line", { x1: L, x2: L, y1: T, y2: H - B }, axis);
  el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, axis).textContent = options.xLabel;
  el("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, axis).textContent = options.yLabel;
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const good = s.points.filter(p => p[1] !== null && isFinite(p[1]) && (!options.logX || p[0] > 0));
    const g = el("g", { class: "series", "data-series": s.name, "data-run": s.run || "" }, svg);
    if (good.length) {
      el("path", { d: "M" + good.map(p => `${sx(p[0]).toFixed(2)},${sy(p[1]).toFixed(2)}`).join("L"), fill: "none",
        stroke: s.color, "stroke-width": 1.6, "stroke-dasharray": s.dash ? "5,3" : "none" }, g);
    }
    if (options.markers !== false) {
      for (const p of good) {
        const c = el("circle", { class: "pt", cx: sx(p[0]).toFixed(2), cy: sy(p[1]).toFixed(2), r: 2.4, fill: s.color,
          "data-x": p[0], "data-y": p[1] }, g);
        el("title", {}, c).textContent = `${s.name}: ${p[0]}, ${+Number(p[1]).toPrecision(5)}`;
      }
    }
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${s.color};${s.dash ? "opacity:0.6" : ""}"></i>${esc(s.name)}`;
    legend.appendChild(item);
  }
  box.appendChild(legend);
  container.appendChild(box);
  return svg;
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

function bestCells(run) {
  const cells = [];
  const best = run.best ? Object.entries(run.best) : [];
  if (run.kind === "caption-image" || run.kind === null) {
    const b = best.length ? best[0][1] : null;
    for (const d of ["t2i", "i2t"]) {
      for (const k of ["R@1", "R@5", "R@10", "medr", "meanr"]) {
        const v = b && b[d] ? b[d][k] : null;
        cells.push(`<td class="num">${fmt(v)}</td>`);
      }
    }
    return cells.join("") + `<td></td>`;
  }
  const acc = best.map(([m, b]) => `${esc(m || run.kind)}: ${fmt(b.dev_accuracy, 2)}%`).join("<br>");
  return `<td colspan="10" class="hp">no retrieval metrics (${esc(run.kind)} run)</td><td>${acc || "–"}</td>`;
}

function renderRuns() {
  const table = document.getElementById("runs-table");
  const head = `<tr><th rowspan="2">compare</th><th rowspan="2">run</th><th rowspan="2">kind</th><th rowspan="2">hyperparameters</th>
    <th rowspan="2">updates</th><th rowspan="2">examples</th>
    <th colspan="5">best dev: text &rarr; image</th><th colspan="5">best dev: image &rarr; text</th><th rowspan="2">dev accuracy</th></tr>
    <tr>${"<th>R@1</th><th>R@5</th><th>R@10</th><th>med r</th><th>mean r</th>".repeat(2)}</tr>`;
  const rows = state.runs.map(r => {
    const checked = state.selected.has(r.id) ? "checked" : "";
    const box = `<input type="checkbox" class="run-check" data-run="${esc(r.id)}" ${checked}>`;
    if (!r.ok) {
      return `<tr class="error" data-run="${esc(r.id)}"><td>${box}</td><td>${esc(r.id)}</td><td>${esc(r.kind || "?")}</td>
        <td colspan="14">error: ${esc(r.error)}</td></tr>`;
    }
    const hp = Object.entries(r.hyperparameters).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(", ");
    return `<tr data-run="${esc(r.id)}"><td>${box}</td><td>${esc(r.id)}${r.has_model ? "" : " <em>(no model yet)</em>"}${r.prepared && r.prepared.state === "preparing" ? " <em>(preparing search…)</em>" : ""}</td>
      <td>${esc(r.kind)}</td><td class="hp">${hp}</td><td class="num">${r.updates ?? "–"}</td><td class="num">${r.examples ?? "–"}</td>${bestCells(r)}</tr>`;
  });
  table.innerHTML = head + rows.join("");
  for (const cb of table.querySelectorAll(".run-check")) {
    cb.addEventListener("change", () => {
      if (cb.checked) state.selected.add(cb.dataset.run); else state.selected.delete(cb.dataset.run);
      saveSelection();
      fillRunSelects();
    });
  }
}

// ------------------------------------------------------------------ training

const TRAINING_CHARTS = [
  { id: "loss", title: "training loss", y: "loss", train: true },
  { id: "R@1", title: "dev R@1 (%)", y: "R@1" },
  { id: "R@5", title: "dev R@5 (%)", y: "R@5" },
  { id: "R@10", title: "dev R@10 (%)", y: "R@10" },
  { id: "medr", title: "dev median rank", y: "medr" },
  { id: "meanr", title: "dev mean rank", y: "meanr" },
  { id: "dev_accuracy", title: "dev accuracy (%)", y: "dev_accuracy", accuracy: true },
];

async function renderTraining() {
  const box = document.getElementById("training-charts");
  const ids = selectedRuns().map(r => r.id);
  if (!ids.length) { box.innerHTML = "<p class='hint'>Tick runs on the Runs page.</p>"; return; }
  const data = await api("/api/metrics", { run: ids });
  const frag = document.createElement("div");
  frag.className = "charts";
  const errors = data.runs.filter(r => r.error).map(r => `<p class="error-text">${esc(r.id)}: ${esc(r.error)}</p>`);
  for (const chart of TRAINING_CHARTS) {
    const series = [];
    for (const run of data.runs) {
      for (const [model, g] of Object.entries(run.series)) {
        const name = model ? `${run.id}/${model}` : run.id;
        const color = colorOf(name);
        if (chart.train) {
          series.push({ name, run: run.id, color, points: g.train.filter(p => p.loss !== null).map(p => [p.examples, p.loss]) });
        } else if (chart.accuracy) {
          const pts = g.valid.filter(p => p.dev_accuracy !== null).map(p => [p.examples, p.dev_accuracy]);
          if (pts.length) series.push({ name, run: run.id, color, points: pts });
        } else {
          for (const d of ["t2i", "i2t"]) {
            const pts = g.valid.filter(p => p[d] && p[d][chart.y] !== null).map(p => [p.examples, p[d][chart.y]]);
            if (pts.length) series.push({ name: `${name} ${d}`, run: run.id, color, dash: d === "i2t", points: pts });
          }
        }
      }
    }
    if (chart.accuracy && !series.length) continue;
    lineChart(frag, series, { id: chart.id, title: chart.title, xLabel: "examples seen", yLabel: chart.y });
  }
  box.innerHTML = errors.join("");
  box.appendChild(frag);
}

// ------------------------------------------------------------------ recall curves

async function renderCurves() {
  const split = document.getElementById("curves-split").value;
  const charts = document.getElementById("curves-charts"), table = document.getElementById("curves-table");
  const runsToShow = selectedRuns().filter(r => r.searchable);
  if (!runsToShow.length) {
    charts.innerHTML = "<p class='hint'>Tick caption-image runs with a saved model on the Runs page.</p>";
    table.innerHTML = "";
    return;
  }
  charts.innerHTML = `<p class='hint'>${esc(waitNote(runsToShow.map(r => r.id), split) || "computing ranks…")}</p>`;
  const results = await Promise.all(runsToShow.map(r => api("/api/curves", { run: r.id, split }).catch(e => ({ run: r.id, error: e.message }))));
  charts.innerHTML = "";
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
}

// ------------------------------------------------------------------ browser

function thumb(url, label, correct, extra) {
  return `<div class="thumb${correct ? " correct" : ""}"><img loading="lazy" src="${esc(url)}" alt="${esc(label)}"><div>${esc(label)}${extra || ""}</div></div>`;
}

async function renderBrowse() {
  const run = document.getElementById("browse-run").value;
  const box = document.getElementById("browse-items"), info = document.getElementById("browse-info");
  if (!run) { box.innerHTML = "<p class='hint'>No run with a saved caption-image model.</p>"; return; }
  const direction = document.getElementById("browse-direction").value;
  const params = { run, split: document.getElementById("browse-split").value, direction, offset: state.browseOffset,
                   limit: 10, failures: document.getElementById("browse-failures").checked };
  box.innerHTML = `<p class='hint'>${esc(waitNote([run], params.split) || "loading…")}</p>`;
  const data = await api("/api/browse", params);
  state.browseTotal = data.total;
  const end = Math.min(data.offset + data.items.length, data.total);
  info.textContent = `${data.total ? data.offset + 1 : 0}–${end} of ${data.total} ${data.failures ? "failures" : "queries"} (R@1 ${fmt(data.metrics["R@1"])}%)`;
  box.innerHTML = data.items.map(it => {
    const cls = it.rank === 1 ? "hit" : "fail";
    if (direction === "t2i") {
      const tops = it.top.map((t, i) => thumb(t.image_url, `#${i + 1} img ${t.image}`, t.correct, `<br>err ${fmt(t.error, 3)}`)).join("");
      return `<div class="item ${cls}"><div class="query">caption ${it.query}: “${esc(it.caption)}” — right image ranks ${it.rank}</div>
        <div class="thumbs">${thumb(it.image_url, `truth: img ${it.image}`, true)}<span style="width:1em"></span>${tops}</div></div>`;
    }
    const caps = it.top.map(t => `<li class="${t.correct ? "correct" : ""}">${esc(t.text)} <span class="hint">(err ${fmt(t.error, 3)})</span></li>`).join("");
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

async function runSearch() {
  const run = document.getElementById("search-run").value;
  const index = document.getElementById("search-source").value;
  const q = document.getElementById("search-q").value;
  const note = document.getElementById("search-note"), box = document.getElementById("search-results");
  if ((!run && !index) || !q.trim()) return;
  note.textContent = (!index && waitNote([run], document.getElementById("search-split").value)) || "searching…";
  try {
    const k = document.getElementById("search-k").value;
    const data = index ? await api("/api/index-search", { index, q, k })
                       : await api("/api/search", { run, split: document.getElementById("search-split").value, q, k });
    note.textContent = `words used: ${data.tokens.join(" ")}` + (data.unknown.length ? ` — not in the vocabulary: ${data.unknown.join(", ")}` : "");
    box.innerHTML = data.results.map((r, i) => `<div class="thumb search-result" data-image="${r.image}">
      <img src="${esc(r.image_url)}" alt="image ${r.image}" title="${index ? `image ${r.image} of index ${esc(index)}` : "click for its top captions"}"><div>#${i + 1} image ${r.image}<br>error ${fmt(r.error, 4)}</div></div>`).join("");
    if (!index) {
      for (const t of box.querySelectorAll(".search-result")) {
        t.addEventListener("click", () => { document.getElementById("search-image").value = t.dataset.image; imageSearch(); });
      }
    }
  } catch (e) { note.innerHTML = `<span class="error-text">${esc(e.message)}</span>`; box.innerHTML = ""; }
}

async function imageSearch() {
  const run = document.getElementById("search-run").value;
  const box = document.getElementById("image-results");
  if (!run) return;
  try {
    const data = await api("/api/search", { run, split: document.getElementById("search-split").value,
                                            image: document.getElementById("search-image").value,
                                            k: document.getElementById("search-k").value });
    box.innerHTML = `<div class="side-by-side">${thumb(data.image_url, `image ${data.image}`, true)}<ol class="captions">` +
      data.results.map(r => `<li class="${r.correct ? "correct" : ""}">${esc(r.text)} <span class="hint">(caption ${r.caption}, error ${fmt(r.error, 4)})</span></li>`).join("") +
      "</ol></div>";
  } catch (e) { box.innerHTML = `<span class="error-text">${esc(e.message)}</span>`; }
}

// ------------------------------------------------------------------ page switching and polling

async function refreshPage() {
  try {
    if (state.page === "runs") { await refreshRuns(); renderRuns(); }
    else if (state.page === "training") { await renderTraining(); }
    setStatus("");
  } catch (e) { setStatus(`update failed: ${e.message}`); }
}

async function show(page) {
  state.page = ["runs", "training", "curves", "browse", "search"].includes(page) ? page : "runs";
  for (const s of document.querySelectorAll(".page")) s.classList.toggle("active", s.id === `page-${state.page}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === state.page);
  try {
    await refreshRuns();
    if (state.page === "runs") renderRuns();
    else if (state.page === "training") await renderTraining();
    else if (state.page === "curves") await renderCurves();
    else if (state.page === "browse") { state.browseOffset = 0; await renderBrowse(); }
    else if (state.page === "search") await fillIndexSelect();
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
  document.getElementById("search-source").addEventListener("change", sourceChanged);
  document.getElementById("image-form").addEventListener("submit", ev => { ev.preventDefault(); imageSearch(); });
  setInterval(() => { if (state.page === "runs" || state.page === "training") refreshPage(); }, 2000);
  show(location.hash.slice(1));
}

init();
