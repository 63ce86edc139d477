// bertkit playground, drawing: colour scales, heat-map tables, SVG line charts, canvas thumbnails and the
// enlarged attention map. Every drawn value is also kept in a data-value attribute (tests read them).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// Cosine in [-1, 1] on one absolute scale (so poolings and layers compare): 0 white, 1 dark red, -1 dark blue.
// Lightness, not just hue, carries the value, so it reads in grey too.
function color(v) {
  const t = Math.min(1, Math.abs(v));
  return `hsl(${v >= 0 ? 0 : 220}, 80%, ${Math.round(100 - 62 * t)}%)`;
}

// Attention probability in [0, 1]: white to dark blue-violet.
function attColor(v) {
  return `hsl(245, 70%, ${Math.round(100 - 68 * Math.min(1, Math.max(0, v)))}%)`;
}

function inkFor(v) {
  return Math.abs(v) > 0.6 ? "#fff" : "#222";
}

// A heat-map table: rows x cols of values, labelled on both sides; `opts.format` writes a cell.
function heatTable(rowLabels, colLabels, values, opts) {
  const o = {format: (v) => v.toFixed(2), color, className: "heatmap", corner: "", ...opts};
  const table = el("table", {className: o.className});
  const head = table.insertRow();
  head.appendChild(el("th", {className: "corner"}, o.corner));
  colLabels.forEach((c) => head.appendChild(el("th", {scope: "col"}, c)));
  values.forEach((row, i) => {
    const tr = table.insertRow();
    tr.appendChild(el("th", {scope: "row"}, rowLabels[i]));
    row.forEach((v) => {
      const td = tr.insertCell();
      td.textContent = o.format(v);
      td.dataset.value = v;
      td.style.background = o.color(v);
      td.style.color = inkFor(v);
    });
  });
  return table;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  node.append(...children);
  return node;
}

function svgText(x, y, text, attrs) {
  return svg("text", {x, y, ...attrs}, text);
}

// Ticks for [lo, hi]: about five round numbers.
function ticks(lo, hi) {
  const step = [0.05, 0.1, 0.2, 0.25, 0.5, 1].find((s) => (hi - lo) / s <= 6) || 1;
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v * 100) / 100);
  return out;
}

// One line chart: xs (e.g. hidden states) against values of each series, with labelled axes.
function lineChart(spec) {
  const W = 320, H = 230, m = {l: 46, r: 10, t: 26, b: 46};
  const all = spec.series.flatMap((s) => s.values);
  const lo = Math.min(0, Math.floor(Math.min(...all) * 10) / 10), hi = 1;
  const x = (i) => m.l + (i / Math.max(1, spec.xs.length - 1)) * (W - m.l - m.r);
  const y = (v) => m.t + (1 - (v - lo) / (hi - lo)) * (H - m.t - m.b);
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "line-chart", role: "img", "data-title": spec.title});
  chart.append(svgText(W / 2, 16, spec.title, {class: "chart-title", "text-anchor": "middle"}));
  ticks(lo, hi).forEach((v) => chart.append(
    svg("line", {x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid"}),
    svgText(m.l - 5, y(v) + 3.5, v.toFixed(1), {"text-anchor": "end", class: "tick"})));
  spec.xs.forEach((xv, i) => chart.append(svgText(x(i), H - m.b + 14, String(xv), {"text-anchor": "middle", class: "tick"})));
  chart.append(svgText((m.l + W - m.r) / 2, H - 8, spec.xLabel, {"text-anchor": "middle", class: "axis-label"}));
  chart.append(svgText(12, (m.t + H - m.b) / 2, spec.yLabel,
    {"text-anchor": "middle", class: "axis-label", transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`}));
  spec.series.forEach((s) => {
    const points = s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    chart.append(svg("polyline", {points, fill: "none", stroke: s.color, "stroke-width": 2}));
    s.values.forEach((v, i) => chart.append(svg("circle",
      {cx: x(i), cy: y(v), r: 2.6, fill: s.color, "data-series": s.name, "data-x": spec.xs[i], "data-value": v},
      svg("title", {}, `${s.name} at ${spec.xs[i]}: ${v.toFixed(3)}`))));
  });
  return chart;
}

const PALETTE = ["#1b6ca8", "#d1495b", "#2e8b57", "#edae49", "#6a4c93", "#00798c", "#8c564b", "#e377c2"];

function legend(names) {
  return el("div", {className: "legend"}, ...names.map((n, i) => el("span", {},
    el("i", {style: {background: PALETTE[i % PALETTE.length]}}), n)));
}

// A small attention map on a canvas: one pixel per (query, key), scaled up by CSS.
function thumbnail(matrix, size) {
  const n = matrix.length;
  const canvas = el("canvas", {width: n, height: n, className: "thumb"});
  canvas.style.width = canvas.style.height = size + "px";
  const ctx = canvas.getContext("2d");
  matrix.forEach((row, i) => row.forEach((v, j) => { ctx.fillStyle = attColor(v); ctx.fillRect(j, i, 1, 1); }));
  return canvas;
}

// The enlarged attention map: tokens on both axes, values in % in the cells, the [CLS] row outlined.
function attentionMap(tokens, matrix, width) {
  const n = tokens.length, longest = Math.max(...tokens.map((t) => t.length));
  const label = Math.min(90, 12 + 6.4 * longest);
  const top = 22 + label * 0.8, left = 20 + label;
  const cell = Math.max(14, Math.min(30, Math.floor((width - left - label * 0.6 - 4) / n)));
  const W = left + n * cell + label * 0.6, H = top + n * cell + 4;
  const map = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "att-map", role: "img"});
  map.append(svgText(left + (n * cell) / 2, 12, "key token (attended to) →", {"text-anchor": "middle", class: "axis-label"}));
  map.append(svgText(10, top + (n * cell) / 2, "query token (attending) →", {"text-anchor": "middle",
    class: "axis-label", transform: `rotate(90 10 ${top + (n * cell) / 2})`}));
  tokens.forEach((tok, i) => {
    const cx = left + i * cell + cell / 2, cy = top + i * cell + cell / 2;
    map.append(svgText(left - 4, cy + 4, tok, {"text-anchor": "end", class: i === 0 ? "tok tok-cls" : "tok"}));
    map.append(svgText(cx, top - 5, tok, {class: "tok", transform: `rotate(-55 ${cx} ${top - 5})`}));
  });
  matrix.forEach((row, i) => row.forEach((v, j) => {
    const x = left + j * cell, y = top + i * cell;
    map.append(svg("rect", {x, y, width: cell, height: cell, fill: attColor(v), class: "cell", "data-row": i,
      "data-col": j, "data-value": v}, svg("title", {}, `${tokens[i]} → ${tokens[j]}: ${(100 * v).toFixed(1)}%`)));
    if (cell >= 18) map.append(svgText(x + cell / 2, y + cell / 2 + 3.5, String(Math.round(100 * v)),
      {"text-anchor": "middle", class: "cell-text", fill: v > 0.5 ? "#fff" : "#333"}));
  }));
  map.append(svg("rect", {x: left - 1, y: top - 1, width: n * cell + 2, height: cell + 2, class: "cls-row"}));
  return map;
}
