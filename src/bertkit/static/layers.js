// bertkit playground, the layers view: how each pair's similarity under cls / mean / max changes from the
// embedding layer to the last (POST /layers), heat maps at a chosen hidden state, and each token's similarity
// to [CLS] per layer (POST /layers/tokens).
"use strict";

let LAYERS = null;  // the last /layers answer, with the texts sent

function stateName(k, states) {
  if (k === 0) return "0 (embeddings)";
  return k === states - 1 ? `${k} (last)` : String(k);
}

async function showLayers() {
  const texts = inputTexts("layers-texts");
  if (texts.length < 2) { setStatus("layers-status", "enter at least two sentences", true); return; }
  setStatus("layers-status", "computing…");
  try {
    LAYERS = {...await post("/layers", {texts}), texts};
    drawLayerLines();
    drawStatePicker();
    pickState(LAYERS.states - 1);
    const cut = LAYERS.truncated.length ? "  (some texts were truncated)" : "";
    setStatus("layers-status", texts.map((t, i) => `s${i + 1}: ${t}`).join("   ") + cut);
  } catch (e) {
    LAYERS = null;
    showError("layers-status", ["layers-lines", "layers-maps"], e);
    document.getElementById("layers-pick").replaceChildren();
  }
  rendered("layers-lines");
}

function pairsOf(n) {
  const pairs = [];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) pairs.push([i, j]);
  return pairs;
}

function drawLayerLines() {
  const pairs = pairsOf(LAYERS.texts.length);
  const names = pairs.map(([i, j]) => `s${i + 1}–s${j + 1}`);
  const xs = [...Array(LAYERS.states).keys()];
  const charts = LAYERS.poolings.map((p) => lineChart({
    title: `${p} pooling`, xs, xLabel: "hidden state (0 = embeddings)", yLabel: "cosine similarity",
    series: pairs.map(([i, j], k) => ({name: names[k], color: PALETTE[k % PALETTE.length],
      values: LAYERS.matrices[p].map((m) => m[i][j])})),
  }));
  charts.forEach((c, k) => c.setAttribute("data-pooling", LAYERS.poolings[k]));
  document.getElementById("layers-lines").replaceChildren(
    el("div", {className: "charts"}, ...charts), legend(names));
}

function drawStatePicker() {
  const buttons = [...Array(LAYERS.states).keys()].map((k) => {
    const b = el("button", {type: "button", className: "state", dataset: {state: k}}, stateName(k, LAYERS.states));
    b.addEventListener("click", () => pickState(k));
    return b;
  });
  document.getElementById("layers-pick").replaceChildren(el("span", {}, "Heat maps at hidden state: "), ...buttons);
}

function pickState(k) {
  document.querySelectorAll("#layers-pick button.state").forEach((b) => {
    b.classList.toggle("selected", Number(b.dataset.state) === k);
  });
  const labels = LAYERS.texts.map((_, i) => "s" + (i + 1));
  const maps = LAYERS.poolings.map((p) => {
    const table = heatTable(labels, labels, LAYERS.matrices[p][k], {className: "heat layer-map"});
    table.dataset.pooling = p;
    table.dataset.state = k;
    return el("div", {className: "heatmap-box"}, el("h4", {}, `${p} at hidden state ${stateName(k, LAYERS.states)}`), table);
  });
  const box = document.getElementById("layers-maps");
  box.dataset.state = k;
  box.replaceChildren(...maps);
}

async function showTokenLayers() {
  const text = document.getElementById("tokcls-text").value.trim();
  if (!text) { setStatus("tokcls-status", "enter a sentence", true); return; }
  setStatus("tokcls-status", "computing…");
  try {
    const data = await post("/layers/tokens", {text});
    const states = [...Array(data.states).keys()];
    const byToken = data.tokens.map((_, t) => states.map((s) => data.similarity[s][t]));
    const table = heatTable(data.tokens, states.map(String), byToken,
      {className: "heat tokcls", corner: "token \\ state"});
    document.getElementById("tokcls-table").replaceChildren(el("div", {className: "scroll"}, table));
    setStatus("tokcls-status", `${data.tokens.length} tokens; [CLS] against itself is 1`);
  } catch (e) {
    showError("tokcls-status", ["tokcls-table"], e);
  }
  rendered("tokcls-table");
}

VIEW_OPENERS.layers = () => { showLayers(); showTokenLayers(); };
