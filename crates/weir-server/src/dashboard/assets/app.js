// The dashboard's logic: poll /admin/dashboard.json once a second and redraw. Plain JS, no
// dependencies. Every caller-supplied text (model names) goes in through textContent, never
// as HTML. The admin key, when the gateway has one, is asked for once and kept in this tab's
// sessionStorage; it is sent as a bearer token with every request.
"use strict";

const KEY_NAME = "weir.adminKey";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

class NeedKey extends Error {}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_NAME);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = null; }
  if (res.status === 401 || res.status === 403) {
    throw new NeedKey((value && value.error && value.error.message) || res.statusText);
  }
  if (!res.ok) {
    const why = (value && value.error && value.error.message) || text || res.statusText;
    throw new Error(res.status + ": " + why);
  }
  return value;
}

// ---- small DOM helpers -------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return node;
}

function fillBody(table, rows, empty) {
  const body = table.tBodies[0];
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: table.tHead.rows[0].cells.length, class: "muted" }, empty))]));
}

const num = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
const fixed = (n, d) => (n == null ? "–" : Number(n).toFixed(d));
const ms = (n) => (n == null ? "–" : Number(n) < 10 ? Number(n).toFixed(2) + " ms" : Math.round(n) + " ms");
function usd(v) {
  if (v == null) return "unpriced";
  const n = Number(v);
  return "$" + (n !== 0 && Math.abs(n) < 0.01 ? n.toPrecision(3) : n.toFixed(2));
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function duration(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? h + "h " + m + "m" : m ? m + "m " + (s % 60) + "s" : s + "s";
}

// ---- charts ------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// Draw series (arrays of numbers or nulls) as lines over a shared y scale from 0.
function chart(target, series) {
  const W = 600, H = 140, PAD = 14;
  const values = series.flatMap((s) => s.values.filter((v) => v != null));
  const max = Math.max(1, ...values);
  const n = Math.max(1, ...series.map((s) => s.values.length));
  const x = (i) => (n === 1 ? W : (i * W) / (n - 1));
  const y = (v) => H - PAD - ((H - 2 * PAD) * v) / max;
  const nodes = [
    svg("line", { x1: 0, x2: W, y1: y(0), y2: y(0), class: "grid" }),
    svg("line", { x1: 0, x2: W, y1: y(max), y2: y(max), class: "grid" }),
  ];
  const label = svg("text", { x: 2, y: y(max) - 2 });
  label.textContent = Number.isInteger(max) ? String(max) : max.toFixed(1);
  nodes.push(label);
  for (const s of series) {
    const points = [];
    s.values.forEach((v, i) => { if (v != null) points.push(x(i).toFixed(1) + "," + y(v).toFixed(1)); });
    nodes.push(svg("polyline", { points: points.join(" "), class: s.class, "data-series": s.class }));
    // Seconds without calls have no latency: a lone second shows as a dot, not an empty line.
    if (s.dots) {
      s.values.forEach((v, i) => { if (v != null) nodes.push(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: "dot " + s.class })); });
    }
  }
  target.replaceChildren(...nodes);
}

// ---- sections ----------------------------------------------------------------------------

function drawTraffic(t) {
  if (!t) return;
  $("rps").textContent = fixed(t.requests_per_second, 2);
  $("eps").textContent = fixed(t.errors_per_second, 2);
  $("p50").textContent = ms(t.p50_ms);
  $("p99").textContent = ms(t.p99_ms);
  $("requests-total").textContent = num(t.requests_total);
  $("errors-total").textContent = num(t.errors_total);
  for (const w of document.querySelectorAll(".window")) w.textContent = t.window_seconds;
  const s = t.series || [];
  chart($("chart-rate"), [
    { class: "req", values: s.map((p) => p.requests) },
    { class: "err", values: s.map((p) => p.errors) },
  ]);
  chart($("chart-latency"), [
    { class: "p50", dots: true, values: s.map((p) => p.p50_ms) },
    { class: "p99", dots: true, values: s.map((p) => p.p99_ms) },
  ]);
}

function drawDeployments(list) {
  fillBody($("deployments"), (list || []).map((d) => {
    const b = d.breaker || {};
    const rate = b.window_requests ? (100 * b.window_failures) / b.window_requests : null;
    const reset = el("button", { type: "button", class: "reset", "data-deployment": d.id }, "Reset breaker");
    reset.addEventListener("click", () => resetBreaker(d.id));
    const state = b.state || "closed";
    return el("tr", { "data-deployment": d.id },
      el("td", {}, d.id),
      el("td", { class: "muted" }, (d.groups || []).join(", ")),
      el("td", { class: "breaker state-" + state }, state.replace("_", "-") +
        (b.half_open_in_secs != null ? " (" + duration(b.half_open_in_secs) + ")" : "")),
      el("td", { class: "num" }, num(d.in_flight)),
      el("td", { class: "num" }, ms(d.latency_ms)),
      el("td", { class: "num" }, rate == null ? "–" : rate.toFixed(1) + "%"),
      el("td", {}, reset));
  }), "no deployments");
}

function left(remaining, limit) {
  if (remaining == null) return "unlimited";
  return num(remaining) + (limit != null ? " / " + num(limit) : "");
}

function drawKeys(list) {
  fillBody($("keys"), (list || []).map((k) => {
    const limits = k.limits || {};
    const tokens = k.remaining_tokens != null ? left(k.remaining_tokens, k.tokens_per_minute)
      : k.remaining_input_tokens != null || k.remaining_output_tokens != null
        ? "in " + left(k.remaining_input_tokens, limits.input_tokens_per_minute) + ", out " + left(k.remaining_output_tokens, limits.output_tokens_per_minute)
        : "unlimited";
    return el("tr", { "data-key": k.key_id },
      el("td", {}, k.key_id),
      el("td", { class: "num" }, num(k.in_flight)),
      el("td", {}, left(k.remaining_requests, limits.requests_per_minute)),
      el("td", {}, tokens),
      el("td", { class: k.limited_now ? "status-error" : "" }, k.limited_now ? "benched " + (k.limited_for_secs != null ? duration(k.limited_for_secs) : "") : "no"),
      el("td", { class: "num" }, num(k.queue_len)));
  }), "no upstream keys");
}

function drawCache(c, savings) {
  const rows = [];
  const add = (name, value) => rows.push(el("dt", {}, name), el("dd", { "data-field": name }, value));
  if (!c || c.enabled === false) {
    add("cache", "off");
  } else {
    const tiers = c.tiers || [];
    add("hit rate", fixed(100 * (c.hit_rate || 0), 1) + "%");
    add("hits / misses", num(c.hits) + " / " + num(c.misses));
    add("coalesced", num(c.coalesced));
    add("entries", num(tiers.reduce((a, t) => a + (t.entries || 0), 0)) + " (" + tiers.map((t) => t.store + " " + num(t.entries)).join(", ") + ")");
    add("bytes", bytes(tiers.reduce((a, t) => a + (t.bytes || 0), 0)));
    add("saved since start", usd(c.estimated_savings_usd) + ", " + num(c.tokens_saved) + " tokens");
  }
  if (savings && !savings.error) add("saved all time", usd(savings.saved_usd) + " over " + num(savings.calls) + " calls");
  $("cache").replaceChildren(...rows);
}

function drawBudgets(list) {
  const items = (list || []).map((b) => {
    const spec = b.spec || {};
    const limit = Number(spec.limit_usd);
    const pct = Math.min(100, Number(b.percent) || 0);
    const forecast = b.forecast_usd != null && limit > 0 ? Math.min(100, (100 * Number(b.forecast_usd)) / limit) : null;
    const bar = el("div", { class: "bar" + (Number(b.percent) >= 100 ? " over" : "") }, el("div", { class: "spent" }));
    bar.firstChild.style.width = pct + "%";
    if (forecast != null) {
      const f = el("div", { class: "forecast", title: "forecast " + usd(b.forecast_usd) });
      f.style.width = forecast + "%";
      bar.append(f);
    }
    const scope = typeof spec.scope === "string" ? spec.scope : JSON.stringify(spec.scope);
    return el("div", { class: "budget", "data-budget": spec.id },
      el("div", {}, el("strong", {}, spec.id), " ", el("span", { class: "muted" }, scope + ", " + spec.period + ", " + spec.mode)),
      bar,
      el("div", { class: "muted" }, usd(b.spent_usd) + " of " + usd(spec.limit_usd) + " (" + fixed(b.percent, 1) + "%)" +
        (b.forecast_usd != null ? ", forecast " + usd(b.forecast_usd) : "") +
        (b.runs_out_at ? ", runs out " + new Date(b.runs_out_at).toLocaleString() : "") +
        ", resets " + new Date(b.resets_at).toLocaleString()));
  });
  $("budgets").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "no budgets (see budgets: in the config, or weir budgets)")]));
}

function drawSpend(table, part) {
  if (!part) { fillBody(table, [], "no usage ledger (the gateway has no store)"); return; }
  if (part.error) { fillBody(table, [], part.error); return; }
  const rows = [...(part.data || [])].sort((a, b) => Number(b.cost_usd || 0) - Number(a.cost_usd || 0));
  fillBody(table, rows.map((r) => el("tr", { "data-model": r.model },
    el("td", {}, r.model),
    el("td", { class: "num" }, num(r.requests)),
    el("td", { class: "num" }, num(r.errors)),
    el("td", { class: "num" }, num(r.input_tokens + r.output_tokens)),
    el("td", { class: "num" }, usd(r.cost_usd)))), "no calls yet");
}

function drawRecent(list) {
  fillBody($("recent"), (list || []).map((c) => el("tr", {},
    el("td", {}, new Date(c.at_ms).toLocaleTimeString()),
    el("td", { class: "model" }, c.model),
    el("td", { class: "muted" }, c.deployment || "–"),
    el("td", { class: "status" + (c.status >= 400 ? " status-error" : "") }, c.status),
    el("td", { class: "num" }, ms(c.latency_ms)),
    el("td", { class: "num" }, num(c.input_tokens) + " / " + num(c.output_tokens)),
    el("td", { class: "num" }, usd(c.cost_usd)),
    el("td", {}, c.cache + (c.stream ? ", stream" : "")))), "no calls yet");
}

// ---- actions -----------------------------------------------------------------------------

function say(text) { $("message").textContent = text; }

async function resetBreaker(id) {
  try {
    const r = await api("POST", "/admin/circuits/reset", { deployment: id });
    say("reset " + r.reset + " breaker(s) for " + id);
    await refresh();
  } catch (e) { handle(e); }
}

async function clearCache() {
  try {
    const r = await api("DELETE", "/cache");
    say("cleared " + r.removed + " cache entries");
    await refresh();
  } catch (e) { handle(e); }
}

function handle(e) {
  if (e instanceof NeedKey) {
    $("key-reason").textContent = e.message + " Enter the admin key; it is kept in this tab only.";
    $("key-form").hidden = false;
    $("main").hidden = true;
  } else {
    say("error: " + e.message);
  }
}

// ---- the loop ----------------------------------------------------------------------------

async function refresh() {
  const d = await api("GET", "/admin/dashboard.json");
  $("key-form").hidden = true;
  $("main").hidden = false;
  $("version").textContent = "v" + d.version;
  $("uptime").textContent = "up " + duration(d.uptime_seconds);
  $("updated").textContent = "updated " + new Date(d.now_ms).toLocaleTimeString();
  drawTraffic(d.traffic);
  drawDeployments(d.deployments);
  drawKeys(d.keys);
  drawCache(d.cache, d.savings);
  drawBudgets(d.budgets);
  drawSpend($("spend-today"), d.spend && d.spend.today);
  drawSpend($("spend-month"), d.spend && d.spend.month);
  drawRecent(d.recent);
}

// One polling loop at a time: it stops while the page waits for a key, and the key form
// starts it again.
let polling = false;
async function loop() {
  polling = true;
  try {
    await refresh();
  } catch (e) {
    handle(e);
    if (e instanceof NeedKey) { polling = false; return; }
  }
  setTimeout(loop, POLL_MS);
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_NAME, $("key-input").value.trim());
  $("key-input").value = "";
  if (polling) refresh().catch(handle); else loop();
});
$("clear-cache").addEventListener("click", clearCache);
loop();
