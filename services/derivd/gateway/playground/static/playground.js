// The derivd playground: asks this service's REST API, draws on canvases; no other resource.
// The state (program, point, direction, orders, t range) lives in the URL fragment as JSON.
"use strict";

const DEFAULTS = {
  program: "# Rosenbrock\nsum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)",
  point: '{"x": [0.5, -0.3, 0.8]}', direction: "", orders: "1, 2, 4", tmin: "-1", tmax: "1",
};
const FIELDS = Object.keys(DEFAULTS);
const COLORS = ["#d32f2f", "#1976d2", "#388e3c", "#f57c00", "#7b1fa2", "#0097a7"];
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(body, status) {
    const e = (body && body.error) || {code: "http_" + status, message: "HTTP " + status, detail: {}};
    super(e.message);
    this.code = e.code;
    this.detail = e.detail || {};
  }
}

async function api(endpoint, body) {
  const headers = {"content-type": "application/json"};
  const key = $("apikey").value.trim();
  if (key) headers["x-api-key"] = key;
  const r = await fetch("/v1/" + endpoint, {method: "POST", headers, body: JSON.stringify(body)});
  let answer = null;
  try { answer = await r.json(); } catch (_) { /* not JSON: reported by status */ }
  if (!r.ok) throw new ApiError(answer, r.status);
  return answer;
}

// ---------------------------------------------------------------- state and URL

function readState() {
  const s = {};
  for (const f of FIELDS) s[f] = $(f).value;
  return s;
}

function writeState(s) {
  for (const f of FIELDS) $(f).value = s[f] !== undefined ? s[f] : DEFAULTS[f];
}

function stateFromUrl() {
  if (location.hash.length < 2) return {...DEFAULTS};
  try { return {...DEFAULTS, ...JSON.parse(decodeURIComponent(location.hash.slice(1)))}; }
  catch (_) { return {...DEFAULTS}; }
}

function shareUrl(s) {
  return location.pathname + "#" + encodeURIComponent(JSON.stringify(s));
}

// ---------------------------------------------------------------- arrays and numbers

const flat = (a) => (Array.isArray(a) ? a.flatMap(flat) : [a]);
const num = (v) => (typeof v === "number" ? v : Number(v));  // "Infinity", "NaN" from JSON

function fmt(v) {
  v = num(v);
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e-4 && a < 1e7 ? String(Number(v.toPrecision(10))) : v.toExponential(6);
}

function matrix(rows) {
  const cells = rows.map((r) => r.map(fmt));
  const width = Math.max(1, ...cells.flat().map((c) => c.length));
  return cells.map((r) => r.map((c) => c.padStart(width)).join("  ")).join("\n");
}

function shifted(x, t, v) {  // x + t v, for nested lists of one shape
  if (Array.isArray(x)) return x.map((xi, i) => shifted(xi, t, v[i]));
  return num(x) + t * num(v);
}

const ones = (x) => (Array.isArray(x) ? x.map(ones) : 1);

function dense(coo) {
  const [m, n] = coo.shape;
  const out = Array.from({length: m}, () => new Array(n).fill(0));
  coo.rows.forEach((r, k) => { out[r][coo.cols[k]] = num(coo.values[k]); });
  return out;
}

// ---------------------------------------------------------------- drawing

function drawSparsity(coo) {
  const c = $("sparsity"), g = c.getContext("2d");
  const [m, n] = coo.shape, cell = Math.max(1, Math.min(c.width / Math.max(n, 1), c.height / Math.max(m, 1)));
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = "#eceff1";
  g.fillRect(0, 0, n * cell, m * cell);
  g.fillStyle = "#263238";
  coo.rows.forEach((r, k) => g.fillRect(coo.cols[k] * cell, r * cell, Math.max(cell - 1, 1), Math.max(cell - 1, 1)));
}

function drawPlot(ts, fs, polys, several) {
  const c = $("plot"), g = c.getContext("2d"), W = c.width, H = c.height, pad = 30;
  const finite = fs.filter(Number.isFinite);
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const margin = (hi - lo) * 0.15;
  lo -= margin; hi += margin;
  const X = (t) => pad + (t - ts[0]) / (ts[ts.length - 1] - ts[0]) * (W - 2 * pad);
  const Y = (y) => H - pad - (y - lo) / (hi - lo) * (H - 2 * pad);
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#bbb"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(pad, H - pad); g.lineTo(W - pad, H - pad); g.moveTo(X(0), pad); g.lineTo(X(0), H - pad); g.stroke();
  g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.fillText(fmt(hi), 2, pad - 4); g.fillText(fmt(lo), 2, H - pad + 12);
  g.fillText("t = " + fmt(ts[0]), pad, H - 8); g.fillText(fmt(ts[ts.length - 1]), W - pad - 20, H - 8);
  const curve = (ys, color, width) => {
    g.save(); g.beginPath(); g.rect(pad, pad / 2, W - 2 * pad, H - 1.5 * pad); g.clip();
    g.strokeStyle = color; g.lineWidth = width; g.beginPath();
    let up = false;
    ys.forEach((y, i) => {
      if (!Number.isFinite(y)) { up = false; return; }
      if (up) g.lineTo(X(ts[i]), Y(y)); else g.moveTo(X(ts[i]), Y(y));
      up = true;
    });
    g.stroke(); g.restore();
  };
  polys.forEach((p, i) => curve(p.ys, COLORS[i % COLORS.length], 1.5));
  curve(fs, "#000", 2.5);
  $("legend").innerHTML = `<span style="color:#000">■ f${several ? " (its first output element)" : ""}</span>` +
    polys.map((p, i) => `<span style="color:${COLORS[i % COLORS.length]}">■ order ${p.order}</span>`).join("");
}

// ---------------------------------------------------------------- errors

function showError(err, program) {
  const box = $("error");
  let text = err.code ? `${err.code}: ${err.message}` : String(err.message || err);
  const line = err.detail && err.detail.line, column = err.detail && err.detail.column;
  if (line) {
    const src = program.split("\n")[line - 1] || "";
    text = `line ${line}, column ${column}: ${err.message}\n\n${src}\n${" ".repeat(Math.max(column - 1, 0))}^`;
    const ta = $("program"), starts = program.split("\n").slice(0, line - 1).reduce((s, l) => s + l.length + 1, 0);
    ta.setSelectionRange(starts + Math.max(column - 1, 0), starts + Math.max(column, 1));
  }
  box.textContent = text;
  box.dataset.line = line || "";
  box.dataset.column = column || "";
  box.hidden = false;
}

// ---------------------------------------------------------------- one run

function parseJson(text, what) {
  try { return JSON.parse(text); }
  catch (e) { throw {code: "invalid_input", message: `${what} is not JSON: ${e.message}`, detail: {}}; }
}

async function run() {
  const s = readState();
  history.replaceState(null, "", shareUrl(s));
  $("share").href = shareUrl(s);
  $("error").hidden = true;
  document.body.dataset.state = "running";
  for (const id of ["value", "gradient", "hessian", "jacobian", "nnz"]) $(id).textContent = "";
  try {
    const at = parseJson(s.point, "the point");
    const v = s.direction.trim() ? parseJson(s.direction, "the direction") : Object.fromEntries(
      Object.entries(at).map(([k, x]) => [k, ones(x)]));
    const fn = {dsl: s.program};
    const ev = await api("evaluate", {function: fn, at});
    $("value").textContent = Array.isArray(ev.value) ? matrix([flat(ev.value)]) : fmt(ev.value);
    const jac = await api("jacobian", {function: fn, at, sparse: true});
    const J = jac.jacobian;
    $("nnz").textContent = `(${J.shape[0]}×${J.shape[1]}, ${J.rows.length} structural nonzeros)`;
    $("jacobian").textContent = J.shape[0] * J.shape[1] <= 400 ? matrix(dense(J)) : "(large: see its pattern)";
    drawSparsity(J);
    if (flat(ev.value).length === 1) {
      const h = await api("hessian", {function: fn, at});
      $("gradient").textContent = Object.entries(h.gradient).map(([k, g]) => `${k}: ${matrix([flat(g)])}`).join("\n");
      $("hessian").textContent = matrix(h.hessian);
    } else {
      $("gradient").textContent = $("hessian").textContent = "(for a function of one output element)";
    }
    await plot(fn, at, v, s);
    document.body.dataset.state = "done";
  } catch (err) {
    showError(err, s.program);
    document.body.dataset.state = "error";
  }
}

async function plot(fn, at, v, s) {
  const orders = s.orders.split(/[\s,]+/).filter(Boolean).map(Number).filter((k) => Number.isInteger(k) && k >= 0);
  const t0 = Number(s.tmin), t1 = Number(s.tmax), N = 61;
  const ts = Array.from({length: N}, (_, i) => t0 + (t1 - t0) * i / (N - 1));
  const shift = (t) => Object.fromEntries(Object.entries(at).map(([k, x]) => [k, shifted(x, t, v[k])]));
  const values = await Promise.all(ts.map((t) => api("evaluate", {function: fn, at: shift(t)})));
  const fs = values.map((r) => num(flat(r.value)[0]));
  const several = flat(values[0].value).length > 1;
  let polys = [];
  if (orders.length) {
    const tay = await api("taylor", {function: fn, at, v, order: Math.max(...orders)});
    const c = tay.coefficients.map((ck) => num(flat(ck)[0]));
    polys = orders.map((K) => ({order: K, ys: ts.map((t) => c.slice(0, K + 1).reduce((acc, ck, k) => acc + ck * t ** k, 0))}));
  }
  drawPlot(ts, fs, polys, several);
}

// ---------------------------------------------------------------- wiring

writeState(stateFromUrl());
$("apikey").value = sessionStorage.getItem("derivd-api-key") || "";
$("apikey").addEventListener("change", () => sessionStorage.setItem("derivd-api-key", $("apikey").value));
$("run").addEventListener("click", run);
document.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
window.addEventListener("hashchange", () => { writeState(stateFromUrl()); run(); });
run();
