// satool view: every head of every utterance, over the spectrogram, with the phones and the audio.
// Data comes from the local server (/api/...) or, in an exported file, from window.SATOOL_DATA.
// Nothing is fetched from outside the machine.
"use strict";

const EMBEDDED = window.SATOOL_DATA || null;
// The server's token came in the URL and now lives in an HttpOnly cookie: take it out of the address bar
// (the server redirects a plain first visit itself; a visit from a link on another site lands here).
if (!EMBEDDED && /[?&]token=/.test(location.search)) history.replaceState(null, "", location.pathname);
const state = { info: null, utt: null, head: null, scale: "shared", grid: null, detail: null, labels: null,
                spec: null, rows: [], metrics: null, relations: null, hoverQuery: null };

function get(path) {
  if (EMBEDDED) {
    return path in EMBEDDED ? Promise.resolve(EMBEDDED[path]) : Promise.reject(new Error("not exported: " + path));
  }
  return fetch("api/" + path).then(r => r.ok ? r.json()
    : (r.headers.get("Content-Type") || "").startsWith("application/json")
      ? r.json().then(e => Promise.reject(new Error(e.error)))
      : r.text().then(t => Promise.reject(new Error(t.trim()))));  // 403: the server says why
}
function audioUrl(id) {
  if (EMBEDDED) return EMBEDDED["audio/" + id] || "";
  return "api/audio/" + encodeURIComponent(id);
}
function bytes(b64) { const s = atob(b64); const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i); return out; }
function floats(b64) { return new Float32Array(bytes(b64).buffer); }
const $ = id => document.getElementById(id);
const enc = encodeURIComponent;

// -- colour scales (stated on screen with a colour bar) -------------------------------------------
const SEQ = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
             [250, 193, 39], [252, 255, 164]];
const DIV = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t)); const x = t * (stops.length - 1); const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i; const a = stops[i], b = stops[i + 1];
  return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
}
function colourBar(canvas, stops, low, high, caption) {
  const g = canvas.getContext("2d"); const w = canvas.width;
  g.clearRect(0, 0, w, canvas.height);
  for (let x = 0; x < w; x++) { const c = ramp(stops, x / (w - 1)); g.fillStyle = `rgb(${c})`; g.fillRect(x, 0, 1, 14); }
  g.fillStyle = "#222"; g.font = "11px sans-serif"; g.textBaseline = "top";
  g.fillText(fmt(low), 0, 17); const hi = fmt(high); g.fillText(hi, w - g.measureText(hi).width, 17);
  if (caption) { const m = g.measureText(caption).width; g.fillText(caption, (w - m) / 2, 17); }
}
function fmt(v) { return Math.abs(v) >= 100 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(3); }
function paint(canvas, values, n, m, scale) {           // values[n*m] -> pixels through scale(v) = [r,g,b]
  canvas.width = m; canvas.height = n;
  const g = canvas.getContext("2d"); const img = g.createImageData(m, n);
  for (let i = 0; i < n * m; i++) { const c = scale(values[i]);
    img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255; }
  g.putImageData(img, 0, 0);
}

// -- utterance picker ------------------------------------------------------------------------------
function showUtterances() {
  const body = document.querySelector("#utterances tbody"); const q = $("filter").value.toLowerCase();
  body.innerHTML = "";
  for (const u of state.rows) {
    const text = [u.id, u.speaker, u.split, u.transcript || ""].join(" ").toLowerCase();
    if (q && !text.includes(q)) continue;
    const tr = document.createElement("tr"); tr.dataset.id = u.id; tr.title = u.transcript || "";
    tr.innerHTML = `<td>${esc(u.id)}</td><td>${esc(u.speaker)}</td><td>${esc(u.split)}</td><td>${(u.duration_s || 0).toFixed(2)}</td>`;
    if (u.id === state.utt) tr.className = "selected";
    tr.onclick = () => selectUtterance(u.id);
    body.appendChild(tr);
  }
}
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

async function selectUtterance(id) {
  state.utt = id; state.detail = null; showUtterances();
  const u = state.rows.find(r => r.id === id);
  $("utt-title").textContent = `${id} (speaker ${u.speaker}, ${u.split}, ${(u.duration_s || 0).toFixed(2)} s): ${u.transcript || ""}`;
  const began = performance.now();
  state.grid = await get("grid/" + enc(id));
  drawGrid();
  document.body.dataset.gridMs = (performance.now() - began).toFixed(1);   // fetch + draw (bench_view.py)
  state.labels = await get("labels/" + enc(id)).catch(() => null);
  document.body.dataset.phoneCount = state.labels ? String(state.labels.phones.length) : "0";
  state.spec = state.info.audio ? await get("spectrogram/" + enc(id)).catch(() => null) : null;
  $("audio").src = state.info.audio ? audioUrl(id) : "";
  if (state.head) await openHead(state.head, false);
}

// -- the head grid ------------------------------------------------------------------------------------
function metricRow(label) { return state.metrics ? state.metrics.find(r => r.label === label) : null; }
function drawGrid() {
  const grid = state.grid, info = state.info; const box = $("grid");
  const L = info.layers.length, H = info.heads.length, n = grid.size; const codes = bytes(grid.maps);
  box.style.gridTemplateColumns = `repeat(${H}, 76px)`; box.innerHTML = "";
  const shared = state.scale === "shared";
  colourBar($("grid-bar"), SEQ, 0, shared ? grid.vmax : 1, shared ? "attention weight" : "share of the head's largest");
  $("grid-scale").textContent = shared
    ? `${grid.scale}; maps average-pooled to ${n} x ${n} of ${grid.n_steps} steps`
    : "per-head scale: every map from 0 to its own largest weight (structure looks stronger than it is)";
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
    const k = l * H + h; const label = `L${info.layers[l]}.H${info.heads[h]}`;
    const cell = document.createElement("div"); cell.className = "cell"; cell.dataset.head = label;
    const c = document.createElement("canvas"); c.style.width = "72px"; c.style.height = "72px";
    const top = grid.head_max[l][h] / grid.vmax;   // codes are on the shared scale
    const slice = codes.subarray(k * n * n, (k + 1) * n * n);
    paint(c, slice, n, n, v => ramp(SEQ, shared ? v / 255 : v / 255 / Math.max(top, 1e-9)));
    const row = metricRow(label);
    const extra = row ? `${row.category || "-"} ${row.locality != null ? row.locality.toFixed(1) + "x" : ""}` : "";
    cell.appendChild(c);
    cell.insertAdjacentHTML("beforeend", `<div>${label}</div><div>${esc(extra)}</div>`);
    if (row) cell.title = `G ${fmt(row.globalness)}  V ${fmt(row.verticality)}  D ${fmt(row.diagonality)}  W ${fmt(row.weight)}`;
    cell.onclick = () => openHead(label, true);
    box.appendChild(cell);
  }
}

// -- a head in detail ---------------------------------------------------------------------------------
const MARGIN = 110;   // room for the spectrogram and the phone tier beside each axis
async function openHead(label, switchTab) {
  state.head = label;
  state.detail = await get(`head/${enc(state.utt)}/${enc(label)}`);
  if (switchTab) showTab("detail");
  drawDetail(); drawProfile(); drawHistogram();
  document.body.dataset.detailHead = label;
}
function detailMatrix() {
  const d = state.detail; const T = d.n_steps; const a = floats(d.map);
  if (!$("upsample").checked) return { T, a, unit: state.info.step_s };
  const R = state.info.frames_per_step, N = T * R, b = new Float32Array(N * N);   // Kronecker, rows / R
  for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) b[i * N + j] = a[Math.floor(i / R) * T + Math.floor(j / R)] / R;
  return { T: N, a: b, unit: 0.01 };
}
function drawDetail() {
  const d = state.detail; if (!d) return;
  const m = detailMatrix(); const T = m.T; const canvas = $("detail"); const g = canvas.getContext("2d");
  const size = canvas.width - MARGIN; const cell = size / T; const vmax = Math.max(...m.a) || 1;
  $("detail-title").textContent = `${d.label} on ${d.id}: ${T} ${m.unit === 0.01 ? "frames" : "steps"} of ${(m.unit * 1000).toFixed(0)} ms`;
  colourBar($("detail-bar"), SEQ, 0, vmax, "attention weight");
  $("detail-scale").textContent = "this head's scale: 0 to its largest weight; query (rows) down, key (columns) across";
  g.clearRect(0, 0, canvas.width, canvas.height);
  const off = document.createElement("canvas"); paint(off, m.a, T, T, v => ramp(SEQ, v / vmax));
  g.imageSmoothingEnabled = false; g.drawImage(off, MARGIN, 0, size, size);
  const duration = T * m.unit; const px = t => MARGIN + t / duration * size;
  // spectrograms: beside the query axis (left, frequency across) and under the key axis
  if (state.spec) {
    const s = state.spec, codes = bytes(s.data), F = s.frames, B = s.bins;
    const below = document.createElement("canvas"); const t = new Uint8Array(F * B);
    for (let f = 0; f < F; f++) for (let b = 0; b < B; b++) t[(B - 1 - b) * F + f] = codes[f * B + b];
    paint(below, t, B, F, v => ramp(SEQ, v / 255)); g.drawImage(below, MARGIN, size + 2, size * F * 0.01 / duration, 60);
    const left = document.createElement("canvas"); paint(left, codes, F, B, v => ramp(SEQ, v / 255));
    g.drawImage(left, 0, 0, 60, size * F * 0.01 / duration);
  } else {
    g.fillStyle = "#a33"; g.font = "11px sans-serif"; g.fillText("no audio: " + (state.info.audio_note || ""), MARGIN, size + 30);
  }
  // phone tiers (and words) on both axes
  g.font = "10px sans-serif"; g.textBaseline = "middle";
  for (const p of (state.labels ? state.labels.phones : [])) {
    const a = p.start / duration * size, b = p.end / duration * size;
    g.strokeStyle = "#888"; g.strokeRect(MARGIN + a, size + 64, b - a, 18); g.strokeRect(64, a, 18, b - a);
    g.fillStyle = "#222";
    if (b - a > 8) { g.fillText(p.label, MARGIN + a + 1, size + 73); g.fillText(p.label, 65, (a + b) / 2); }
  }
  for (const w of (state.labels ? state.labels.words : [])) {
    const a = w.start / duration * size; g.fillStyle = "#555"; g.fillText(w.label, MARGIN + a + 1, size + 93);
  }
  // time axes in seconds
  g.fillStyle = "#222"; g.textBaseline = "top";
  for (let t = 0; t <= duration + 1e-9; t += niceStep(duration)) {
    g.fillText(t.toFixed(1) + " s", px(t) - 8, size + 100); g.fillText(t.toFixed(1), 86, Math.max(0, t / duration * size - 5));  // 0.0 s stays inside the canvas
  }
  if (state.hoverQuery != null) {
    const y = (state.hoverQuery + 0.5) * cell; g.strokeStyle = "#0ff"; g.beginPath(); g.moveTo(MARGIN, y); g.lineTo(MARGIN + size, y); g.stroke();
  }
  drawPlayhead();
}
function niceStep(d) { return d > 8 ? 2 : d > 4 ? 1 : d > 2 ? 0.5 : 0.2; }
function drawPlayhead() {
  const audio = $("audio"); const canvas = $("detail"); if (!state.detail || !audio.duration) return;
  const m = { T: state.detail.n_steps, unit: state.info.step_s }; const size = canvas.width - MARGIN;
  const x = MARGIN + audio.currentTime / (m.T * m.unit) * size; const g = canvas.getContext("2d");
  g.strokeStyle = "rgba(0,255,255,0.8)"; g.beginPath(); g.moveTo(x, 0); g.lineTo(x, size); g.stroke();
  const y = audio.currentTime / (m.T * m.unit) * size; g.beginPath(); g.moveTo(MARGIN, y); g.lineTo(MARGIN + size, y); g.stroke();
}
function drawRow(q) {
  const m = detailMatrix(); const canvas = $("row"); const g = canvas.getContext("2d"); const T = m.T;
  g.clearRect(0, 0, canvas.width, canvas.height);
  const size = canvas.width - MARGIN; let top = 0; for (let k = 0; k < T; k++) top = Math.max(top, m.a[q * T + k]);
  g.strokeStyle = "#c05000"; g.beginPath();
  for (let k = 0; k < T; k++) { const x = MARGIN + (k + 0.5) / T * size, y = 130 - m.a[q * T + k] / Math.max(top, 1e-9) * 120;
    k ? g.lineTo(x, y) : g.moveTo(x, y); }
  g.stroke(); g.fillStyle = "#222"; g.font = "11px sans-serif";
  const uniform = 1 / T; const yu = 130 - uniform / Math.max(top, 1e-9) * 120;
  g.strokeStyle = "#999"; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(MARGIN, yu); g.lineTo(MARGIN + size, yu); g.stroke(); g.setLineDash([]);
  g.fillText(`query ${((q + 0.5) * m.unit).toFixed(2)} s: weight over keys (max ${fmt(top)}; dashed: uniform 1/T)`, MARGIN, 145);
  g.fillText(fmt(top), 4, 10); g.fillText("0", 4, 128);
}
function drawHistogram() {
  // bars: this utterance (left of each bin) and the corpus from 'satool metric' (right), one linear scale
  const d = state.detail; const canvas = $("histogram"); const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height); if (!d || !d.histogram) return;
  const corpus = state.histograms && state.histograms.shares[d.label];
  const edges = state.histograms ? state.histograms.lower_edges : d.histogram.map((_, b) => b ? 2 ** (b - 25) : 0);
  const series = [["this utterance", d.histogram, "#c05000"]]; if (corpus) series.push(["corpus", corpus, "#333"]);
  const top = Math.max(1e-9, ...series.flatMap(s => s[1].filter(v => v != null)));
  const n = d.histogram.length, w = canvas.width - MARGIN, bw = w / n; const y = v => 165 - v / top * 150;
  series.forEach(([name, values, colour], s) => {
    g.fillStyle = colour; values.forEach((v, b) => { if (v != null) g.fillRect(MARGIN + b * bw + s * bw / 2, y(v), bw / 2 - 1, 165 - y(v)); });
    g.font = "11px sans-serif"; g.fillText(name, MARGIN + 5, 12 + 13 * s);
  });
  g.fillStyle = "#222"; g.font = "10px sans-serif"; g.fillText(fmt(top), 2, 18); g.fillText("0", 2, 165);
  g.fillText("share of weights per bin (bars: lower edge of the weights in each bin)", MARGIN + 200, 12);
  edges.forEach((e, b) => { if (b === 0 || b % 4 === 1 || b === n - 1) g.fillText(b === 0 ? "0" : "2^" + Math.round(Math.log2(e)), MARGIN + b * bw, 180); });
  document.body.dataset.histogramBins = String(n);
}
function drawProfile() {
  const d = state.detail; const canvas = $("profile"); const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height); if (!d) return;
  const corpusRow = metricRow(d.label);
  const series = [["this utterance", d.offset_profile, "#c05000"]];
  if (corpusRow && state.profiles && state.profiles[d.label]) series.push(["corpus", state.profiles[d.label], "#333"]);
  const all = series.flatMap(s => s[1].filter(v => v != null)); const top = Math.max(5.5, ...all);
  const w = canvas.width - MARGIN, n = d.offsets.length; const x = i => MARGIN + (i + 0.5) / n * w; const y = v => 170 - v / top * 160;
  g.strokeStyle = "#999"; g.setLineDash([4, 3]);
  for (const level of [1, 5]) { g.beginPath(); g.moveTo(MARGIN, y(level)); g.lineTo(MARGIN + w, y(level)); g.stroke(); }
  g.setLineDash([]); g.font = "11px sans-serif";
  series.forEach(([name, values, colour], s) => {
    g.strokeStyle = colour; g.beginPath(); values.forEach((v, i) => { if (v == null) return; i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v)); });
    g.stroke(); g.fillStyle = colour; g.fillText(name, MARGIN + 5, 12 + 13 * s);
  });
  g.fillStyle = "#222"; g.fillText("1x (uniform)", 2, y(1)); g.fillText("5x (local)", 2, y(5));
  d.offsets.forEach((o, i) => { if (o % 5 === 0) g.fillText(`${(o * state.info.step_s * 1000).toFixed(0)} ms`, x(i) - 12, 176); });
}

// -- relations and metrics ----------------------------------------------------------------------------
function drawRelations() {
  const r = state.relations; if (!r) return; const k = r.labels.indexOf($("rel-head").value); if (k < 0) return;
  const P = r.phones.length; const all = floats(r.p_norm); const values = all.subarray(k * P * P, (k + 1) * P * P);
  const canvas = $("relations"); const g = canvas.getContext("2d"); const pad = 40, size = canvas.width - pad;
  colourBar($("rel-bar"), DIV, -r.bound, r.bound, "P_h");
  $("rel-scale").textContent = r.scale;
  g.clearRect(0, 0, canvas.width, canvas.height);
  const off = document.createElement("canvas"); paint(off, values, P, P, v => ramp(DIV, (v / r.bound + 1) / 2));
  g.imageSmoothingEnabled = false; g.drawImage(off, pad, pad, size - pad, size - pad);
  g.fillStyle = "#222"; g.font = "9px sans-serif"; const step = (size - pad) / P;
  r.phones.forEach((p, i) => { g.fillText(p, 2, pad + (i + 0.7) * step); g.save(); g.translate(pad + (i + 0.3) * step, pad - 3);
    g.rotate(-Math.PI / 2); g.fillText(p, 0, 0); g.restore(); });
  const conc = floats(r.concentration).subarray(k * P, (k + 1) * P); const cg = $("concentration").getContext("2d");
  const cw = $("concentration").width; cg.clearRect(0, 0, cw, 200); const top = Math.max(...Array.from(conc).map(Math.abs), 1e-9);
  Array.from(conc).forEach((v, i) => { const x = pad + i * (cw - pad) / P, h = v / top * 80;
    cg.fillStyle = v >= 0 ? "#b2182b" : "#2166ac"; cg.fillRect(x, 90 - Math.max(h, 0), (cw - pad) / P - 1, Math.abs(h));
    cg.fillStyle = "#222"; cg.font = "9px sans-serif"; cg.fillText(r.phones[i], x, 190); });
}
function drawMetrics(sortKey, descending) {
  const rows = (state.metrics || []).slice(); if (!rows.length) return;
  const keys = ["label", "category", "globalness", "verticality", "diagonality", "weight", "locality",
                "favourite_offset", "diagonality_vs_uniform"].filter(k => k in rows[0]);
  if (sortKey) rows.sort((a, b) => { const x = a[sortKey], y = b[sortKey];
    return (x == null) - (y == null) || (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1); });
  const head = document.querySelector("#metrics thead"), body = document.querySelector("#metrics tbody");
  head.innerHTML = "<tr>" + keys.map(k => `<th data-key="${k}">${k}</th>`).join("") + "</tr>";
  head.querySelectorAll("th").forEach(th => th.onclick = () => drawMetrics(th.dataset.key, sortKey === th.dataset.key ? !descending : true));
  body.innerHTML = rows.map(r => `<tr data-head="${r.label}">` + keys.map(k => `<td>${typeof r[k] === "number" ? fmt(r[k]) : esc(r[k])}</td>`).join("") + "</tr>").join("");
  body.querySelectorAll("tr").forEach(tr => tr.onclick = () => openHead(tr.dataset.head, true));
}

// -- wiring ---------------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll("nav button").forEach(b => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll("main section").forEach(s => { s.hidden = s.id !== "tab-" + name; });
  if (name === "relations") drawRelations();
}
async function start() {
  state.info = await get("info");
  $("cache").textContent = state.info.cache + (EMBEDDED ? " (exported)" : "");
  const kind = state.info.maps || "attention";
  $("maps").textContent = "maps: " + kind;
  $("maps").title = state.info.maps_definition || "";
  const notes = [];
  if (!state.info.audio) notes.push("audio is missing: " + (state.info.audio_note || ""));
  for (const [what, other] of [["metrics", state.info.metrics_maps], ["relations", state.info.relations_maps]])
    if (other && other !== kind) notes.push(`the ${what} shown were computed on ${other} maps, the cache holds ${kind} maps`);
  $("note").textContent = notes.join("; ");
  state.rows = await get("utterances");
  state.metrics = state.info.metrics ? await get("metrics").catch(() => null) : null;
  state.profiles = state.info.profiles || null; state.histograms = state.info.histograms || null;
  if (state.info.relations) {
    state.relations = await get("relations").catch(() => null);
    if (state.relations) $("rel-head").innerHTML = state.relations.labels.map(l => `<option>${l}</option>`).join("");
  }
  document.querySelectorAll("nav button").forEach(b => b.onclick = () => showTab(b.dataset.tab));
  document.querySelectorAll("input[name=scale]").forEach(r => r.onchange = () => { state.scale = r.value; drawGrid(); });
  $("filter").oninput = showUtterances; $("rel-head").onchange = drawRelations;
  $("upsample").onchange = () => { drawDetail(); if (state.hoverQuery != null) drawRow(state.hoverQuery); };
  $("detail").onmousemove = e => {
    if (!state.detail) return; const rect = $("detail").getBoundingClientRect();
    const size = $("detail").width - MARGIN; const scale = $("detail").width / rect.width;
    const x = (e.clientX - rect.left) * scale - MARGIN, y = (e.clientY - rect.top) * scale;
    if (x < 0 || y < 0 || x > size || y > size) return;
    const T = detailMatrix().T; state.hoverQuery = Math.min(T - 1, Math.floor(y / size * T));
    drawDetail(); drawRow(state.hoverQuery);
    document.body.dataset.hoverQuery = String(state.hoverQuery);
  };
  const tick = () => { if (!$("audio").paused) drawDetail(); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  drawMetrics();
  showUtterances();
  if (state.rows.length) await selectUtterance(state.rows[0].id);
  document.body.dataset.ready = "yes";
}
start().catch(e => { $("note").textContent = String(e); document.body.dataset.ready = "error"; });
