// bertkit playground: plain fetch calls to the server's JSON routes, no build step. This file: the
// similarity view, the words view (fill-mask, tokens), loading /info and starting the page. The other views
// are in attention.js, layers.js and model.js; shared helpers in core.js, drawing in charts.js.
"use strict";

function heatmap(pooling, matrix) {
  const labels = matrix.map((_, i) => "s" + (i + 1));
  const table = heatTable(labels, labels, matrix);
  table.dataset.pooling = pooling;
  return el("div", {className: "heatmap-box"}, el("h3", {}, pooling), table);
}

async function compare() {
  const texts = inputTexts("sentences");
  if (texts.length < 2) { setStatus("similarity-status", "enter at least two sentences", true); return; }
  setStatus("similarity-status", "computing…");
  if (!INFO) { askForKey("enter the key first"); return; }
  const poolings = ["cls", "pooler", "mean", "mask_prompt"].filter((p) => INFO.poolings.includes(p));
  try {
    const data = await post("/similarity", {texts, poolings});
    document.getElementById("heatmaps").replaceChildren(...poolings.map((p) => heatmap(p, data.matrices[p])));
    const legendText = texts.map((t, i) => `s${i + 1}: ${t}`).join("   ");
    setStatus("similarity-status", legendText + (data.truncated.length ? "  (some texts were truncated)" : ""));
  } catch (e) { showError("similarity-status", ["heatmaps"], e); }
}

async function fill() {
  const out = document.getElementById("fill-results");
  out.replaceChildren();
  try {
    const data = await post("/fill-mask", {text: document.getElementById("mask-text").value, top_k: 5});
    data.masks.forEach((preds, n) => {
      const table = el("table", {className: "mask-preds"});
      table.insertRow().insertCell().textContent = `[MASK] #${n + 1}`;
      preds.forEach((p) => { const tr = table.insertRow(); tr.insertCell().textContent = p.token; tr.insertCell().textContent = p.score.toFixed(4); });
      out.appendChild(table);
    });
    setStatus("fill-status", "");
  } catch (e) { showError("fill-status", ["fill-results"], e); }
}

async function tokenize() {
  const text = document.getElementById("token-text").value;
  try {
    const data = await post("/tokens", {texts: [text], vectors: false});
    const r = data.results[0];
    document.getElementById("token-results").replaceChildren(...r.tokens.map((tok, i) =>
      el("span", {className: "token"}, tok + " ", el("small", {}, `${r.offsets[i][0]}–${r.offsets[i][1]}`))));
    setStatus("tokens-status", `${r.tokens.length} tokens`);
  } catch (e) { showError("tokens-status", ["token-results"], e); }
}

// Fill-mask needs a masked-LM head: the served model's, or `serve --mask-model`'s.
function setUpFillMask() {
  const mask = INFO.inside.fill_mask;
  document.getElementById("fill").disabled = !mask.model;
  if (!mask.model) {
    setStatus("fill-status", "this model has no masked-LM head; serve one with it (e.g. --model splade-tiny) " +
      "or add one with --mask-model splade-tiny to fill in [MASK]");
  }
  document.getElementById("fill-model").textContent = mask.model ? `Predictions of ${mask.model}.` : "";
  const note = document.getElementById("fill-note");
  note.textContent = mask.note || "";
  note.hidden = !mask.note;
}

async function load() {
  const res = await fetch("/info", {headers: headers()});
  if (res.status === 401) { askForKey((await res.json()).error.message); return; }
  if (!res.ok) { setStatus("model-info", `the server answered ${res.status} to /info`, true); return; }
  INFO = await res.json();
  document.getElementById("key-form").hidden = true;
  delete document.body.dataset.needsKey;
  document.getElementById("model-info").textContent =
    `${INFO.model}: ${INFO.dimensions} dimensions, max ${INFO.max_length} tokens, heads: ` +
    Object.entries(INFO.heads).map(([k, v]) => `${k} ${v ? "yes" : "no"}`).join(", ");
  setUpFillMask();
  document.body.dataset.ready = "1";
  showView();
}

function init() {
  document.getElementById("key-form").addEventListener("submit", useKey);
  const on = (id, fn) => document.getElementById(id).addEventListener("click", fn);
  on("compare", compare);
  on("fill", fill);
  on("tokenize", tokenize);
  on("att-run", showAttention);
  on("layers-run", showLayers);
  on("tokcls-run", showTokenLayers);
  on("outputs-run", showOutputs);
  window.addEventListener("hashchange", showView);
  showView();
  load();
}

init();
