#pragma once
// The dashboard page served at GET / (docs/node.md §4): one static HTML document with inline
// CSS and JS and no external resource (the server's Content-Security-Policy forbids them). It
// polls /api/status and /api/earnings every second and re-renders.
//
// Money arrives as integer micro-credits and is formatted with integer (BigInt) arithmetic;
// integers beyond 2^53 are read exactly from the JSON source text. For tests and scrapers the
// exact figures are also in the DOM: #settled, #unsettled, #price (credit strings, e.g. "1.5"),
// #sessions, #traffic (data-bytes), and <svg id="earnings-chart" data-settled-micro=...
// data-unsettled-micro=... data-points=N>. #conn shows "live", "disconnected" (a fetch failed)
// or "bad data" (a reply could not be read).

#include <string_view>

namespace dvpn::node {

inline constexpr std::string_view kDashboardPage = R"page(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dvpn-node</title>
<link rel="icon" href="data:,">
<style>
:root {
  --bg: #f3f5f8; --card: #ffffff; --text: #1c2430; --muted: #6b7686; --line: #e3e7ee;
  --settled: #16a34a; --unsettled: #d97706; --accent: #2563eb; --bad: #dc2626;
  --shadow: 0 1px 2px rgba(16, 24, 40, .06), 0 1px 3px rgba(16, 24, 40, .10);
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #0f141b; --card: #18202b; --text: #e6ebf2; --muted: #93a0b2; --line: #2a3442;
          --shadow: none; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { display: flex; align-items: center; gap: 14px; padding: 18px 28px;
         background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 20px; letter-spacing: .2px; }
header .meta { color: var(--muted); }
header .spacer { flex: 1; }
.badge { display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px;
         border-radius: 999px; font-size: 12px; font-weight: 600; border: 1px solid var(--line); }
.badge::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: currentColor; }
.badge.live { color: var(--settled); }
.badge.down { color: var(--bad); border-color: var(--bad); }
.badge.wait { color: var(--muted); }
.badge.retired { color: var(--bad); }
.badge.active { color: var(--settled); }
main { padding: 22px 28px 32px; max-width: 1280px; margin: 0 auto; }
.provider { margin-bottom: 18px; color: var(--muted); }
.provider code { color: var(--text); font: 13px "DejaVu Sans Mono", ui-monospace, monospace;
                 word-break: break-all; }
.grid { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 16px; }
.row { display: grid; grid-template-columns: minmax(0, 2.3fr) minmax(0, 1fr); gap: 16px;
       margin-top: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
        box-shadow: var(--shadow); padding: 16px 18px; }
.card h2 { margin: 0 0 8px; font-size: 12px; font-weight: 600; color: var(--muted);
           text-transform: uppercase; letter-spacing: .6px; display: flex; align-items: center;
           gap: 10px; }
.figure { font-size: 28px; font-weight: 650; font-variant-numeric: tabular-nums; }
.unit { color: var(--muted); font-size: 13px; margin-left: 4px; }
.sub { color: var(--muted); font-size: 12px; margin-top: 2px; font-variant-numeric: tabular-nums; }
.kpi-settled { border-top: 3px solid var(--settled); }
.kpi-unsettled { border-top: 3px solid var(--unsettled); }
.kpi-sessions, .kpi-traffic { border-top: 3px solid var(--accent); }
dl { display: grid; grid-template-columns: auto 1fr; gap: 7px 14px; margin: 4px 0 0; }
dt { color: var(--muted); }
dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
.legend { margin-left: auto; display: flex; gap: 14px; text-transform: none; letter-spacing: 0;
          font-weight: 500; }
.legend span::before { content: ""; display: inline-block; width: 14px; height: 3px;
                       border-radius: 2px; margin-right: 6px; vertical-align: middle;
                       background: var(--c); }
#earnings-chart { width: 100%; height: auto; display: block; }
#earnings-chart .grid-line { stroke: var(--line); stroke-width: 1; }
#earnings-chart .axis { stroke: var(--muted); stroke-width: 1; }
#earnings-chart text { fill: var(--muted); font-size: 11px; }
#earnings-chart .s-settled { stroke: var(--settled); }
#earnings-chart .s-unsettled { stroke: var(--unsettled); }
#earnings-chart .series { fill: none; stroke-width: 2.2; stroke-linejoin: round;
                          stroke-linecap: round; }
#earnings-chart .dot { fill: var(--card); stroke-width: 2; }
#earnings-chart .area { fill: var(--settled); opacity: .08; stroke: none; }
#earnings-chart .empty { font-size: 13px; }
.offer-none { color: var(--muted); }
.error { color: var(--bad); font-size: 12px; min-height: 1em; margin-top: 14px; }
@media (max-width: 900px) {
  .grid { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .row { grid-template-columns: minmax(0, 1fr); }
}
</style>
</head>
<body>
<header>
  <h1>dvpn-node</h1>
  <span class="meta" id="version"></span>
  <span class="spacer"></span>
  <span class="meta">up <span id="uptime">&#8212;</span></span>
  <span id="conn" class="badge wait">connecting</span>
</header>
<main>
  <div class="provider">Provider <code id="provider">&#8212;</code></div>
  <section class="grid">
    <div class="card kpi-settled">
      <h2>Settled</h2>
      <div><span class="figure" id="settled">&#8212;</span><span class="unit">credits</span></div>
      <div class="sub">on the ledger</div>
    </div>
    <div class="card kpi-unsettled">
      <h2>Unsettled</h2>
      <div><span class="figure" id="unsettled">&#8212;</span><span class="unit">credits</span></div>
      <div class="sub">accepted promises, not settled yet</div>
    </div>
    <div class="card kpi-sessions">
      <h2>Sessions open</h2>
      <div><span class="figure" id="sessions">&#8212;</span></div>
      <div class="sub" id="sessions-sub">&#160;</div>
    </div>
    <div class="card kpi-traffic">
      <h2>Traffic metered</h2>
      <div><span class="figure" id="traffic">&#8212;</span></div>
      <div class="sub" id="traffic-sub">&#160;</div>
    </div>
  </section>
  <section class="row">
    <div class="card">
      <h2>Earnings over time
        <span class="legend"><span style="--c: var(--settled)">settled</span><span
          style="--c: var(--unsettled)">unsettled</span></span></h2>
      <svg id="earnings-chart" viewBox="0 0 760 330" role="img"
           aria-label="settled and unsettled earnings over time"></svg>
    </div>
    <div class="card">
      <h2>Offer <span id="offer-state"></span></h2>
      <div><span class="figure" id="price">&#8212;</span><span class="unit">credits / MB</span></div>
      <dl>
        <dt>per minute</dt><dd id="price-minute">&#8212;</dd>
        <dt>region</dt><dd id="region">&#8212;</dd>
        <dt>capacity</dt><dd id="capacity">&#8212;</dd>
        <dt>max sessions</dt><dd id="max-sessions">&#8212;</dd>
        <dt>version (seq)</dt><dd id="seq">&#8212;</dd>
        <dt>expires</dt><dd id="expires">&#8212;</dd>
      </dl>
      <h2 style="margin-top: 18px">Gossip</h2>
      <dl>
        <dt>peers</dt><dd id="peers">&#8212;</dd>
        <dt>offers known</dt><dd id="offers">&#8212;</dd>
      </dl>
      <div class="error" id="error"></div>
    </div>
  </section>
</main>
<script>
"use strict";
(function () {
  const SVGNS = "http://www.w3.org/2000/svg";
  const MICRO = 1000000n;

  // JSON with exact integers: a number beyond 2^53 becomes a BigInt from its source text.
  function parseJson(text) {
    return JSON.parse(text, function (key, value, context) {
      if (typeof value === "number" && !Number.isSafeInteger(value) && context &&
          typeof context.source === "string" && /^-?\d+$/.test(context.source)) {
        return BigInt(context.source);
      }
      return value;
    });
  }

  function toBig(v) {
    if (typeof v === "bigint") return v;
    if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
    if (typeof v === "string" && /^-?\d+$/.test(v)) return BigInt(v);
    throw new Error("not an integer: " + String(v));
  }

  // Micro-credits -> credits, exactly: 250000 -> "0.25", 1500000 -> "1.5", 0 -> "0".
  function credits(micro) {
    let b = toBig(micro);
    const neg = b < 0n;
    if (neg) b = -b;
    const whole = (b / MICRO).toString();
    const frac = (b % MICRO).toString().padStart(6, "0").replace(/0+$/, "");
    return (neg ? "-" : "") + whole + (frac ? "." + frac : "");
  }

  function grouped(v) {
    return toBig(v).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // Decimal units, as prices are per MB = 10^6 bytes.
  function bytesHuman(v) {
    const b = toBig(v);
    const units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let unit = 0, scale = 1n;
    while (unit < units.length - 1 && b >= scale * 1000n) { scale *= 1000n; unit++; }
    if (unit === 0) return b.toString() + " B";
    const tenths = (b * 10n + scale / 2n) / scale;  // rounded to one decimal
    return (tenths / 10n).toString() + "." + (tenths % 10n).toString() + " " + units[unit];
  }

  function duration(s) {
    s = Number(s);
    if (!Number.isFinite(s) || s < 0) return "?";
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    const m = Math.floor(s % 3600 / 60), sec = Math.floor(s % 60);
    if (d > 0) return d + " d " + h + " h";
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min " + sec + " s";
    return sec + " s";
  }

  function pad2(n) { return String(n).padStart(2, "0"); }
  function clock(ms, withDate) {
    const d = new Date(Number(ms));
    const hms = pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
    return withDate ? pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
        hms.slice(0, 5) : hms;
  }

  function setText(id, text) {
    const el = document.getElementById(id);
    if (el.textContent !== text) el.textContent = text;
    return el;
  }

  function setConn(kind, text, detail) {
    const el = document.getElementById("conn");
    el.className = "badge " + kind;
    el.textContent = text;
    setText("error", detail || "");
  }

  function renderStatus(s) {
    setText("version", s.version ? "v" + s.version : "");
    setText("uptime", duration(s.uptime_s));
    setText("provider", String(s.provider || "\u2014"));
    setText("sessions", grouped(s.sessions_open));
    setText("traffic", bytesHuman(s.bytes_metered)).dataset.bytes = toBig(s.bytes_metered).toString();
    setText("traffic-sub", grouped(s.bytes_metered) + " bytes");
    const o = s.offer;
    const state = document.getElementById("offer-state");
    if (o) {
      setText("price", credits(o.price_per_mb_micro));
      setText("price-minute", credits(o.price_per_minute_micro) + " credits");
      setText("region", o.region ? String(o.region) : "any");
      setText("capacity", grouped(o.capacity_mbps) + " Mbit/s");
      setText("max-sessions", grouped(o.max_sessions));
      setText("seq", toBig(o.seq).toString());
      const left = Number(o.expires_unix) - Date.now() / 1000;
      const at = Number(o.expires_unix) * 1000;
      setText("expires", (left > 86400 ? clock(at, true) : clock(at, false).slice(0, 5)) +
          (left > 0 ? " (in " + duration(left >= 60 ? left - left % 60 : left)
              .replace(/ 0 s$/, "") + ")" : " (expired)"));
      setText("sessions-sub", "of at most " + grouped(o.max_sessions));
      state.className = "badge " + (o.retired ? "retired" : "active");
      state.textContent = o.retired ? "retired" : "published";
    } else {
      for (const id of ["price", "price-minute", "region", "capacity", "max-sessions", "seq",
                        "expires"]) setText(id, "\u2014");
      setText("sessions-sub", "\u00a0");
      state.className = "badge wait";
      state.textContent = "none published";
    }
    if (s.gossip) {
      setText("peers", grouped(s.gossip.peers));
      setText("offers", grouped(s.gossip.offers));
    }
  }

  function el(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A step of 1, 2 or 5 x 10^k micro-credits giving about `count` steps up to `max`.
  function niceStep(max, count) {
    const raw = max / BigInt(count) + 1n;
    let p = 1n;
    for (;;) {
      for (const m of [1n, 2n, 5n]) if (p * m >= raw) return p * m;
      p *= 10n;
    }
  }

  function renderChart(e) {
    const svg = document.getElementById("earnings-chart");
    const points = Array.isArray(e.points) ? e.points : [];
    svg.setAttribute("data-settled-micro", toBig(e.settled_micro).toString());
    svg.setAttribute("data-unsettled-micro", toBig(e.unsettled_micro).toString());
    svg.setAttribute("data-points", String(points.length));
    const W = 760, H = 330, L = 70, R = 18, T = 14, B = 40;
    const pw = W - L - R, ph = H - T - B;
    const frag = document.createDocumentFragment();

    const ser = points.map(p => ({ t: Number(p.t_unix_ms), s: toBig(p.settled_micro),
                                   u: toBig(p.unsettled_micro) }));
    let max = 0n;
    for (const p of ser) { if (p.s > max) max = p.s; if (p.u > max) max = p.u; }
    const step = max > 0n ? niceStep(max, 4) : 250000n;
    let top = step;
    while (top < max) top += step;
    const y = v => T + ph - Number(v * 100000n / top) * ph / 100000;

    for (let v = 0n; v <= top; v += step) {
      const yy = y(v);
      frag.append(el("line", { class: "grid-line", x1: L, x2: W - R, y1: yy, y2: yy }));
      frag.append(el("text", { x: L - 8, y: yy + 4, "text-anchor": "end" }, credits(v)));
    }
    frag.append(el("text", { x: 14, y: T + ph / 2, "text-anchor": "middle",
                             transform: "rotate(-90 14 " + (T + ph / 2) + ")" }, "credits"));
    frag.append(el("line", { class: "axis", x1: L, x2: L, y1: T, y2: T + ph }));
    frag.append(el("line", { class: "axis", x1: L, x2: W - R, y1: T + ph, y2: T + ph }));

    if (ser.length === 0) {
      frag.append(el("text", { class: "empty", x: L + pw / 2, y: T + ph / 2,
                               "text-anchor": "middle" }, "no earnings yet"));
    } else {
      let t0 = ser[0].t, t1 = ser[ser.length - 1].t;
      if (!(t1 > t0)) { t0 -= 30000; t1 += 30000; }
      const x = t => L + (t - t0) / (t1 - t0) * pw;
      const withDate = t1 - t0 > 86400000;
      const ticks = 5;
      for (let i = 0; i < ticks; i++) {
        const t = t0 + (t1 - t0) * i / (ticks - 1);
        const xx = x(t);
        frag.append(el("line", { class: "axis", x1: xx, x2: xx, y1: T + ph, y2: T + ph + 5 }));
        frag.append(el("text", { x: xx, y: T + ph + 19, "text-anchor":
            i === 0 ? "start" : i === ticks - 1 ? "end" : "middle" }, clock(t, withDate)));
      }
      frag.append(el("text", { x: L + pw / 2, y: H - 3, "text-anchor": "middle" }, "time"));
      const line = key => ser.map(p => x(p.t).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
      const first = x(ser[0].t).toFixed(1), last = x(ser[ser.length - 1].t).toFixed(1);
      frag.append(el("polygon", { class: "area", points: first + "," + (T + ph) + " " +
                                  line("s") + " " + last + "," + (T + ph) }));
      for (const [key, cls] of [["u", "s-unsettled"], ["s", "s-settled"]]) {
        frag.append(el("polyline", { class: "series " + cls, points: line(key) }));
        const p = ser[ser.length - 1];
        frag.append(el("circle", { class: "dot " + cls, cx: x(p.t), cy: y(p[key]), r: 3.5 }));
      }
    }
    svg.replaceChildren(frag);
    setText("settled", credits(e.settled_micro));
    setText("unsettled", credits(e.unsettled_micro));
  }

  async function getJson(path) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 3000);
    try {
      const r = await fetch(path, { cache: "no-store", signal: abort.signal });
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return await r.text();
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    let texts;
    try {
      texts = await Promise.all([getJson("/api/status"), getJson("/api/earnings")]);
    } catch (err) {
      setConn("down", "disconnected", "cannot reach the node: " + err.message);
      return;
    }
    try {
      renderStatus(parseJson(texts[0]));
      renderChart(parseJson(texts[1]));
      setConn("live", "live", "");
    } catch (err) {
      setConn("down", "bad data", "cannot read the node's reply: " + err.message);
    }
  }

  async function loop() {
    try { await poll(); } catch (err) { /* poll reports its own failures */ }
    setTimeout(loop, 1000);
  }
  loop();
})();
</script>
</body>
</html>
)page";

}  // namespace dvpn::node
