// twinplume live view: maps drawn pixel by pixel from the server's snapshot + deltas, spectra with uPlot.
"use strict";

// Paul Tol's "muted" qualitative scheme: distinguishable with the common colour-vision deficiencies.
const LABEL_COLOURS = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"];
// viridis, 9 anchors (perceptually uniform, colour-blind safe), interpolated into a 256-entry table
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
const EMPTY = [230, 230, 230];
const MAPS = ["label", "emission", "novelty", "trust", "error"];
const THRESHOLDED = ["novelty", "trust"];

function hexRgb(h) { return [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)); }
function table(anchors) {
  const rgb = anchors.map(hexRgb), out = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const f = i / 255 * (rgb.length - 1), j = Math.min(Math.floor(f), rgb.length - 2), w = f - j;
    for (let c = 0; c < 3; c++) out[3 * i + c] = Math.round(rgb[j][c] * (1 - w) + rgb[j + 1][c] * w);
  }
  return out;
}
const LUT = table(VIRIDIS);
// novelty and expected error: greys up to their threshold, then orange to dark red above it
const NOVELTY_LOW = table(["#f0f0f0", "#9e9e9e", "#4d4d4d"]);
const NOVELTY_HIGH = table(["#F4A582", "#D6604D", "#67001F"]);
const LABEL_RGB = LABEL_COLOURS.map(hexRgb);

const stats = window.viewStats = {
  shown: 0, messages: 0, snapshots: 0, bytes: 0, lags: [], frames: [], applyMs: [], spotCurves: [],
  spot: null, banner: "",
};
// what the page shows, readable by tests and the benchmark
stats.labelMap = () => Array.from(label || []);
stats.emissionMap = () => Array.from(emission || [], v => Number.isFinite(v) ? v : null);
function keep(list, value, max = 20000) { list.push(value); if (list.length > max) list.splice(0, list.length - max); }

let ny = 0, nx = 0, label, emission, novelty, trust, error;
let limits = {emission: null, novelty: null, trust: null, error: null}, painted = {};
let thresholds = {novelty: null, trust: null};
let labelCounts = new Map();
const canvases = {}, contexts = {}, images = {};
for (const name of MAPS) {
  canvases[name] = document.getElementById("map-" + name);
  contexts[name] = canvases[name].getContext("2d");
}

function reset(shape) {
  [ny, nx] = shape;
  const n = ny * nx;
  label = new Int16Array(n).fill(-1);
  emission = new Float32Array(n).fill(NaN);
  novelty = new Float32Array(n).fill(NaN);
  trust = new Float32Array(n).fill(NaN);
  error = new Float32Array(n).fill(NaN);
  labelCounts = new Map();
  stats.shown = 0;
  for (const name of MAPS) {
    const c = canvases[name];
    c.width = nx; c.height = ny;
    // keep the map's aspect ratio on screen
    const w = 280 * Math.min(1, nx / ny), h = 280 * Math.min(1, ny / nx);
    c.style.width = w + "px"; c.style.height = h + "px";
    images[name] = contexts[name].createImageData(nx, ny);
    const d = images[name].data;
    for (let i = 0; i < n; i++) { d[4 * i] = EMPTY[0]; d[4 * i + 1] = EMPTY[1]; d[4 * i + 2] = EMPTY[2]; d[4 * i + 3] = 255; }
  }
}

function colour(name, i, out) {
  if (name === "label") {
    const v = label[i];
    return v < 0 ? EMPTY : LABEL_RGB[v % LABEL_RGB.length];
  }
  const v = name === "emission" ? emission[i] : name === "novelty" ? novelty[i] : name === "trust" ? trust[i] : error[i];
  if (!Number.isFinite(v)) return EMPTY;
  const th = thresholds[name] ? thresholds[name].value : null;
  if (th !== null && th !== undefined) {
    const hi = Math.max(painted[name] ? painted[name][1] : 0, 2 * th);
    if (v <= th) { const k = Math.round(255 * Math.max(0, v) / th); return rgbAt(NOVELTY_LOW, k, out); }
    const k = Math.round(255 * Math.min(1, (v - th) / Math.max(hi - th, 1e-9)));
    return rgbAt(NOVELTY_HIGH, k, out);
  }
  const lim = painted[name];
  if (!lim) return rgbAt(LUT, 128, out);
  const k = Math.round(255 * Math.min(1, Math.max(0, (v - lim[0]) / (lim[1] - lim[0]))));
  return rgbAt(LUT, k, out);
}
function rgbAt(lut, k, out) { out[0] = lut[3 * k]; out[1] = lut[3 * k + 1]; out[2] = lut[3 * k + 2]; return out; }

function paintSpots(name, idx) {
  const d = images[name].data, rgb = [0, 0, 0];
  let y0 = ny, y1 = -1, x0 = nx, x1 = -1;
  for (let j = 0; j < idx.length; j++) {
    const i = idx[j], c = colour(name, i, rgb), p = 4 * i;
    d[p] = c[0]; d[p + 1] = c[1]; d[p + 2] = c[2];
    const y = (i / nx) | 0, x = i - y * nx;
    if (y < y0) y0 = y; if (y > y1) y1 = y; if (x < x0) x0 = x; if (x > x1) x1 = x;
  }
  if (y1 >= 0) contexts[name].putImageData(images[name], 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
}

function paintAll(name) {
  const d = images[name].data, rgb = [0, 0, 0];
  for (let i = 0; i < ny * nx; i++) {
    const c = colour(name, i, rgb), p = 4 * i;
    d[p] = c[0]; d[p + 1] = c[1]; d[p + 2] = c[2];
  }
  contexts[name].putImageData(images[name], 0, 0);
}

// colour limits move as the map fills; repaint a whole map only when they moved noticeably
function limitsMoved(name) {
  const a = painted[name], b = limits[name];
  if (!b) return false;
  if (!a) return true;
  const span = Math.max(a[1] - a[0], 1e-12);
  return Math.abs(a[0] - b[0]) / span > 0.05 || Math.abs(a[1] - b[1]) / span > 0.05;
}

function applyFrame(buffer) {
  const t0 = performance.now();
  const view = new DataView(buffer);
  const hlen = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, hlen)));
  const k = header.count, base = 4 + hlen;
  const idx = new Uint32Array(buffer, base, k);
  const lab = new Int16Array(buffer, base + 4 * k, k);
  const f0 = base + 6 * k + (k % 2 ? 2 : 0);
  const em = new Float32Array(buffer, f0, k), nov = new Float32Array(buffer, f0 + 4 * k, k),
        tru = new Float32Array(buffer, f0 + 8 * k, k), err = new Float32Array(buffer, f0 + 12 * k, k);
  stats.messages++; stats.bytes += buffer.byteLength;
  if (header.type === "snapshot") {
    stats.snapshots++;
    reset(header.shape);
    painted = {};
    document.getElementById("figure-error").hidden = !header.has_primary;
    driftReset(header.history || []);
    stats.store = header.store;
  }
  let thresholdsMoved = false;
  if (header.thresholds) {
    for (const name of THRESHOLDED) {
      const a = thresholds[name], b = header.thresholds[name];
      if ((a && a.value) !== (b && b.value)) thresholdsMoved = true;
    }
    thresholds = header.thresholds;
  }
  if (header.limits) limits = header.limits;
  for (let j = 0; j < k; j++) {
    const i = idx[j], old = label[i];
    if (old < 0) stats.shown++; else labelCounts.set(old, labelCounts.get(old) - 1);
    label[i] = lab[j]; emission[i] = em[j]; novelty[i] = nov[j]; trust[i] = tru[j]; error[i] = err[j];
    if (Number.isFinite(tru[j]) && !stats.hasTrust) { stats.hasTrust = true; document.getElementById("figure-trust").hidden = false; }
    labelCounts.set(lab[j], (labelCounts.get(lab[j]) || 0) + 1);
  }
  for (const name of MAPS) {
    if (name !== "label" && (header.type === "snapshot" || limitsMoved(name) || (thresholdsMoved && THRESHOLDED.includes(name)))) {
      if (limits[name]) painted[name] = limits[name].slice();
      paintAll(name);
    } else if (header.type === "snapshot") paintAll(name);
    else paintSpots(name, idx);
  }
  if (header.health) showHealth(header);
  if (header.history && header.type !== "snapshot") driftAppend(header.history);
  if (header.health || header.type === "snapshot") legends(header);
  document.getElementById("progress").textContent = `${stats.shown.toLocaleString()} of ${(ny * nx).toLocaleString()} spots shown`;
  keep(stats.applyMs, performance.now() - t0);
  if (header.oldest_t !== undefined) {
    const oldest = header.oldest_t;
    requestAnimationFrame(() => keep(stats.lags, Date.now() / 1000 - oldest));
  }
}

function legends(header) {
  const labels = [...labelCounts.entries()].filter(([v, c]) => v >= 0 && c > 0).sort((a, b) => a[0] - b[0]);
  document.getElementById("legend-label").innerHTML = labels.map(([v, c]) =>
    `<span><span class="swatch" style="background:${LABEL_COLOURS[v % LABEL_COLOURS.length]}"></span>${v} (${c})</span>`).join("") +
    (labels.some(([v]) => v >= LABEL_COLOURS.length) ? "<span>(colours repeat after 9 labels)</span>" : "");
  const ramp = (lut) => `linear-gradient(to right, ${[0, 64, 128, 192, 255].map(k => `rgb(${lut[3 * k]},${lut[3 * k + 1]},${lut[3 * k + 2]})`).join(",")})`;
  const fmt = (v) => v === undefined || v === null ? "–" : Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toPrecision(3);
  for (const name of ["emission", "novelty", "trust", "error"]) {
    const lim = painted[name] || limits[name], th = thresholds[name];
    const el = document.getElementById("legend-" + name);
    if (th && th.value) {
      const hi = Math.max(lim ? lim[1] : 0, 2 * th.value), pos = 100 * th.value / hi;
      document.getElementById("threshold-note-" + name).textContent =
        `(threshold ${fmt(th.value)}: ${th.calibrated ? "calibrated" : "guide value"})`;
      el.innerHTML = `0 <span class="ramp" style="background:linear-gradient(to right, #f0f0f0, #4d4d4d ${pos}%, #F4A582 ${pos}%, #67001F)">` +
        `<span class="mark" style="left:${pos}%"></span></span> ${fmt(hi)}<br><span>above ${fmt(th.value)}: distrust — ${escapeHtml(th.source)}</span>`;
    } else {
      if (THRESHOLDED.includes(name)) document.getElementById("threshold-note-" + name).textContent = "(no threshold in the model's metadata)";
      el.innerHTML = lim ? `${fmt(lim[0])} <span class="ramp" style="background:${ramp(LUT)}"></span> ${fmt(lim[1])}` : "no values yet";
    }
  }
}

// -- health --------------------------------------------------------------------------------------

function showBanner(level, text) {
  const b = document.getElementById("banner");
  if (!text) { b.hidden = true; stats.banner = ""; return; }
  b.hidden = false; b.className = "banner " + level; b.textContent = text; stats.banner = text;
}

let lastServerMessage = Date.now();
function showHealth(header) {
  const h = header.health;
  showBanner(h.banner ? h.banner.level : "", h.banner ? h.banner.text : "");
  const ms = (p) => p && p.p50 !== null ? `p50 ${p.p50} ms, p99 ${p.p99} ms` : "–";
  const w = h.worker || {};
  const rows = [
    ["spectra/s", `${h.rate}`],
    ["results", `${h.spectra.toLocaleString()} spectra, ${h.shown.toLocaleString()} spots shown`],
    ["latency, worker", ms(h.worker_latency_ms)],
    ["latency, end to end", ms(h.end_to_end_ms)],
    ["lost (seq gaps)", `${h.lost}`],
    ["rejected (error topic)", `${h.rejected}` + (h.last_errors.length ? ` — last: ${h.last_errors[h.last_errors.length - 1].code}: ${h.last_errors[h.last_errors.length - 1].reason}` : "")],
    ["outside the map / no position / unusable", `${h.outside} / ${h.without_position} / ${h.unusable}`],
    ["model", `${h.model || "–"} (${h.precision || (h.model_problem ? "precision unknown: " + h.model_problem : "precision unknown: give --control")})`],
    ["worker", w.worker ? `${w.worker}: received ${w.received}, rejected ${w.rejected}, ${w.throughput_spectra_s} spectra/s, batch ${w.batch_mean ?? "–"}, up ${w.uptime_s} s` : "no status yet"],
    ["trust threshold (expected relative error)", header.thresholds && header.thresholds.trust ? `${Number(header.thresholds.trust.value).toPrecision(3)} — ${header.thresholds.trust.source}` : "none: the model's metadata has no trust_threshold"],
    ["novelty mark", header.thresholds ? `${header.thresholds.novelty.value} — ${header.thresholds.novelty.source}` : "–"],
  ];
  if (h.measured) rows.push(["measured map", h.measured.problem ? `not readable yet: ${h.measured.problem}` :
    `${h.measured.map}: ${h.measured.errors} errors computed, ${h.measured.given_up} spots never appeared in it`]);
  if (h.measured && h.measured.secondary_shift_px !== null && h.measured.secondary_shift_px !== undefined) {
    const shift = h.measured.secondary_shift_px;
    rows.push(["secondary lines against the model's", `${shift >= 0 ? "+" : ""}${shift.toFixed(2)} px` +
      (h.measured.secondary_shift_note ? " — " + h.measured.secondary_shift_note : "")]);
  }
  rows.push(["pages watching", `${h.clients}`]);
  document.querySelector("#health-table tbody").innerHTML = rows.map(([a, b]) => `<tr><td>${a}</td><td>${escapeHtml(b)}</td></tr>`).join("");
}
function escapeHtml(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

let drift = null, driftData = [[], [], [], []];
function driftReset(history) {
  driftData = [[], [], [], []];
  driftAppend(history);
}
function driftAppend(points) {
  for (const p of points) {
    driftData[0].push(p[0]); driftData[1].push(p[2]); driftData[2].push(p[3]); driftData[3].push(p[4]);
  }
  for (const s of driftData) if (s.length > 900) s.splice(0, s.length - 900);
  if (!drift) {
    drift = new uPlot({width: 640, height: 160, series: [{},
      {label: "median novelty", stroke: "#882255", spanGaps: true, scale: "n"},
      {label: "median expected relative error", stroke: "#E69F00", spanGaps: true, scale: "e"},
      {label: "median measured transfer error", stroke: "#0072B2", spanGaps: true, scale: "e"}],
      axes: [{}, {scale: "n"}, {scale: "e", side: 1, grid: {show: false}}]}, driftData, document.getElementById("drift-plot"));
  } else drift.setData(driftData);
}

// -- spectra under the cursor --------------------------------------------------------------------

const CURVES = {
  "transferred": {stroke: "#0072B2", scale: "y"},
  "measured primary": {stroke: "#D55E00", scale: "y"},
  "secondary": {stroke: "#009E73", scale: "s"},
};
let spectrum = null, pinned = null, wanted = null, inFlight = false;

function spotAt(canvas, event) {
  const r = canvas.getBoundingClientRect();
  const ix = Math.floor((event.clientX - r.left) / r.width * nx), iy = Math.floor((event.clientY - r.top) / r.height * ny);
  return (ix >= 0 && iy >= 0 && ix < nx && iy < ny) ? [iy, ix] : null;
}
for (const name of MAPS) {
  canvases[name].addEventListener("mousemove", (e) => { if (!pinned) request(spotAt(canvases[name], e)); });
  canvases[name].addEventListener("click", (e) => {
    const s = spotAt(canvases[name], e);
    pinned = pinned && s && pinned[0] === s[0] && pinned[1] === s[1] ? null : s;
    request(s);
  });
}

function request(s) {
  if (!s) return;
  wanted = s;
  if (!inFlight) fetchSpot();
}
async function fetchSpot() {
  const [iy, ix] = wanted; wanted = null; inFlight = true;
  try {
    const r = await fetch(`api/spot?iy=${iy}&ix=${ix}`);
    showSpot(await r.json());
  } catch (e) {
    document.getElementById("spot-notes").textContent = "spot request failed: " + e;
  } finally {
    inFlight = false;
    if (wanted) fetchSpot();
  }
}

function showSpot(spot) {
  if (spot.error && !spot.curves) { document.getElementById("spot-notes").textContent = spot.error; return; }
  const fmt = (v) => v === null || v === undefined ? "–" : v.toPrecision(3);
  document.getElementById("spot-title").textContent =
    `— spot (iy ${spot.iy}, ix ${spot.ix})${pinned ? " pinned" : ""}: label ${spot.label < 0 ? "–" : spot.label}, novelty ${fmt(spot.novelty)}${thresholds.novelty && spot.novelty > thresholds.novelty.value ? " (above its mark)" : ""}` +
    (spot.trust !== null ? `, expected error ${fmt(spot.trust)}${thresholds.trust && spot.trust > thresholds.trust.value ? " (above the trust threshold: distrust)" : ""}` : "") +
    `, measured error ${fmt(spot.error)}`;
  document.getElementById("spot-notes").textContent = spot.notes.join("; ");
  const names = Object.keys(CURVES).filter(n => spot.curves[n]);
  stats.spotCurves = names; stats.spot = [spot.iy, spot.ix]; stats.spotData = spot;
  const data = names.length ? uPlot.join(names.map(n => [spot.curves[n].x, spot.curves[n].y])) : [[]];
  const series = [{label: "nm"}, ...names.map(n => ({label: n, stroke: CURVES[n].stroke, width: 1, spanGaps: true,
                                                     scale: CURVES[n].scale, points: {show: false}}))];
  if (spectrum) spectrum.destroy();
  const el = document.getElementById("spectrum-plot");
  spectrum = new uPlot({width: Math.max(600, el.clientWidth - 10), height: 300, series, cursor: {drag: {x: true, y: true}},
    scales: {x: {time: false}},
    axes: [{label: "wavelength (nm)"}, {scale: "y", label: "primary counts (baseline-corrected)"},
           ...(names.includes("secondary") ? [{scale: "s", side: 1, label: "secondary counts (raw)", grid: {show: false}}] : [])]},
    data, el);
}

// -- connection ------------------------------------------------------------------------------------

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + "ws");
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => { lastServerMessage = Date.now(); applyFrame(e.data); };
  ws.onclose = () => {
    showBanner("error", "view server unreachable: reconnecting…");
    setTimeout(connect, 1000);
  };
}
setInterval(() => {
  if (Date.now() - lastServerMessage > 3000 && stats.messages > 0)
    showBanner("error", `no updates from the view server for ${Math.round((Date.now() - lastServerMessage) / 1000)} s`);
}, 1000);

let lastFrame = null;
function frameLoop(t) {
  if (lastFrame !== null) keep(stats.frames, t - lastFrame);
  lastFrame = t;
  requestAnimationFrame(frameLoop);
}
requestAnimationFrame(frameLoop);
connect();
