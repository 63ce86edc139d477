// bertkit playground, the attention view (POST /attention): every layer's and head's attention map as a
// thumbnail, one enlarged on click with the tokens on both axes, and what [CLS] attends to, layer by layer.
"use strict";

let ATT = null;  // the last /attention answer
let FOCUS = [0, 0];  // [layer, head] shown enlarged

async function showAttention() {
  const text = document.getElementById("att-text").value.trim();
  const pair = document.getElementById("att-pair").value.trim();
  if (!text) { setStatus("att-status", "enter a sentence", true); return; }
  setStatus("att-status", "computing…");
  try {
    ATT = await post("/attention", pair ? {text, pair} : {text});
    if (FOCUS[0] >= ATT.layers || FOCUS[1] >= ATT.heads) FOCUS = [0, 0];
    drawAttentionGrid();
    focusHead(...FOCUS);
    drawClsRows();
    setStatus("att-status", `${ATT.tokens.length} tokens · ${ATT.layers} layers × ${ATT.heads} heads · ` +
      `at most ${INFO.inside.attention.max_tokens} tokens per request`);
  } catch (e) {
    ATT = null;
    showError("att-status", ["att-grid", "att-focus", "att-cls"], e);
  }
  rendered("att-grid");
}

function headTitle(l, h) {
  const cls = Math.round(100 * ATT.cls_share[l][h]), sep = Math.round(100 * ATT.sep_share[l][h]);
  return `layer ${l + 1}, head ${h + 1}: ${cls}% of its attention on [CLS], ${sep}% on [SEP]`;
}

function headButton(l, h, size) {
  const heavy = (list) => list.some(([a, b]) => a === l && b === h);
  const classes = ["head"];
  if (heavy(ATT.sep_heavy)) classes.push("sep-heavy");
  if (heavy(ATT.cls_heavy)) classes.push("cls-heavy");
  const button = el("button", {type: "button", className: classes.join(" "), title: headTitle(l, h),
    dataset: {layer: l, head: h}}, thumbnail(ATT.attentions[l][h], size));
  button.addEventListener("click", () => focusHead(l, h));
  return button;
}

// The grid and the enlarged map side by side on a wide screen, one above the other on a narrow one.
function panelWidths() {
  const total = document.querySelector("#attention .side-by-side").clientWidth;
  if (total < 900) return {grid: total, focus: total};
  const grid = Math.min(560, Math.floor(total * 0.45));
  return {grid, focus: Math.min(640, total - grid - 40)};
}

function drawAttentionGrid() {
  const box = document.getElementById("att-grid");
  const width = panelWidths().grid;
  box.style.maxWidth = width + "px";
  const size = Math.max(18, Math.min(44, Math.floor((width - 44) / ATT.heads) - 6));
  const grid = el("div", {className: "att-grid"});
  grid.style.gridTemplateColumns = `2.4em repeat(${ATT.heads}, ${size + 4}px)`;
  grid.append(el("span", {className: "corner"}, "layer ↓"));
  for (let h = 0; h < ATT.heads; h++) grid.append(el("span", {className: "col-label"}, "H" + (h + 1)));
  ATT.attentions.forEach((heads, l) => {
    grid.append(el("span", {className: "row-label"}, "L" + (l + 1)));
    heads.forEach((_, h) => grid.append(headButton(l, h, size)));
  });
  const nSep = ATT.sep_heavy.length, nCls = ATT.cls_heavy.length, pct = Math.round(100 * ATT.heavy_share);
  const note = el("p", {className: "legend-note"},
    el("span", {className: "swatch sep-heavy"}), ` [SEP]-heavy head (≥${pct}% of its attention on [SEP]): ${nSep}   `,
    el("span", {className: "swatch cls-heavy"}), ` [CLS]-heavy head (≥${pct}% on [CLS]): ${nCls}. ` +
    "Columns are heads, rows layers; click a map to enlarge it.");
  box.replaceChildren(el("h3", {}, "Every layer and head"), grid, note);
}

function focusHead(l, h) {
  FOCUS = [l, h];
  document.querySelectorAll("#att-grid button.head").forEach((b) => {
    b.classList.toggle("selected", Number(b.dataset.layer) === l && Number(b.dataset.head) === h);
  });
  const box = document.getElementById("att-focus");
  const width = Math.max(300, panelWidths().focus);
  box.style.maxWidth = width + "px";
  box.dataset.layer = l;
  box.dataset.head = h;
  box.replaceChildren(
    el("h3", {}, `Layer ${l + 1}, head ${h + 1}`),
    el("p", {className: "caption"}, headTitle(l, h) + ". Each row is a query token and sums to 100%; " +
      "the cells are % of its attention. Outlined: the [CLS] row."),
    el("div", {className: "scroll"}, attentionMap(ATT.tokens, ATT.attentions[l][h], width)));
}

// What [CLS] attends to in each layer, averaged over that layer's heads: tokens down, layers across.
function drawClsRows() {
  const layers = ATT.attentions.map((heads) => ATT.tokens.map((_, j) =>
    heads.reduce((sum, m) => sum + m[0][j], 0) / heads.length));
  const byToken = ATT.tokens.map((_, j) => layers.map((row) => row[j]));
  const table = heatTable(ATT.tokens, layers.map((_, l) => "L" + (l + 1)), byToken,
    {format: (v) => String(Math.round(100 * v)), color: attColor, className: "heat cls-table", corner: "token \\ layer"});
  document.getElementById("att-cls").replaceChildren(
    el("h3", {}, "What [CLS] attends to, layer by layer"),
    el("p", {className: "caption"}, "The [CLS] row of each layer, averaged over its heads, in %. " +
      "Rows: the tokens attended to; columns: layers."),
    table);
}

VIEW_OPENERS.attention = showAttention;
