// bertkit playground: plain fetch calls to the server's JSON routes, no build step.
"use strict";

let INFO = null;
// The API key, when the server asks for one (`bertkit serve --api-key`): kept for this tab only.
let KEY = sessionStorage.getItem("bertkit-api-key") || "";

function headers(extra) {
  return KEY ? {...extra, Authorization: "Bearer " + KEY} : {...extra};
}

async function post(path, body) {
  const res = await fetch(path, {method: "POST", headers: headers({"Content-Type": "application/json"}), body: JSON.stringify(body)});
  const data = await res.json();
  if (res.status === 401) askForKey(data.error.message);
  if (!res.ok) throw new Error(data.error ? data.error.message : res.statusText);
  return data;
}

function askForKey(message) {
  document.getElementById("key-form").hidden = false;
  setStatus("key-status", KEY ? `that key was refused: ${message}` : "this server needs an API key", Boolean(KEY));
  document.body.dataset.needsKey = "1";
}

function useKey(event) {
  event.preventDefault();
  KEY = document.getElementById("api-key").value.trim();
  sessionStorage.setItem("bertkit-api-key", KEY);
  load();
}

function setStatus(id, text, isError) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = isError ? "status error" : "status";
}

// Cosine in [-1, 1] on one absolute scale for every pooling (so their ranges compare): 0 is white, 1 dark red,
// -1 dark blue. Lightness, not just hue, carries the value, so it reads in grey too.
function color(v) {
  const t = Math.min(1, Math.abs(v));
  return `hsl(${v >= 0 ? 0 : 220}, 80%, ${Math.round(100 - 62 * t)}%)`;
}

function heatmap(pooling, matrix) {
  const box = document.createElement("div");
  box.className = "heatmap-box";
  const title = document.createElement("h3");
  title.textContent = pooling;
  box.appendChild(title);
  const table = document.createElement("table");
  table.className = "heatmap";
  table.dataset.pooling = pooling;
  const head = table.insertRow();
  head.appendChild(document.createElement("th"));
  matrix.forEach((_, j) => { const th = document.createElement("th"); th.textContent = "s" + (j + 1); head.appendChild(th); });
  matrix.forEach((row, i) => {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = "s" + (i + 1);
    tr.appendChild(th);
    row.forEach((v) => {
      const td = tr.insertCell();
      td.textContent = v.toFixed(2);
      td.dataset.value = v;
      td.style.background = color(v);
      td.style.color = Math.abs(v) > 0.6 ? "#fff" : "#222";
    });
  });
  box.appendChild(table);
  return box;
}

async function compare() {
  const texts = document.getElementById("sentences").value.split("\n").map((s) => s.trim()).filter((s) => s);
  if (texts.length < 2) { setStatus("similarity-status", "enter at least two sentences", true); return; }
  setStatus("similarity-status", "computing…");
  if (!INFO) { askForKey("enter the key first"); return; }
  const poolings = ["cls", "pooler", "mean", "mask_prompt"].filter((p) => INFO.poolings.includes(p));
  try {
    const data = await post("/similarity", {texts, poolings});
    const out = document.getElementById("heatmaps");
    out.replaceChildren(...poolings.map((p) => heatmap(p, data.matrices[p])));
    const legend = texts.map((t, i) => `s${i + 1}: ${t}`).join("   ");
    setStatus("similarity-status", legend + (data.truncated.length ? "  (some texts were truncated)" : ""));
  } catch (e) { setStatus("similarity-status", e.message, true); }
}

async function fill() {
  const out = document.getElementById("fill-results");
  out.replaceChildren();
  try {
    const data = await post("/fill-mask", {text: document.getElementById("mask-text").value, top_k: 5});
    data.masks.forEach((preds, n) => {
      const table = document.createElement("table");
      table.className = "mask-preds";
      table.insertRow().insertCell().textContent = `[MASK] #${n + 1}`;
      preds.forEach((p) => { const tr = table.insertRow(); tr.insertCell().textContent = p.token; tr.insertCell().textContent = p.score.toFixed(4); });
      out.appendChild(table);
    });
    setStatus("fill-status", "");
  } catch (e) { setStatus("fill-status", e.message, true); }
}

async function tokenize() {
  const text = document.getElementById("token-text").value;
  const out = document.getElementById("token-results");
  try {
    const data = await post("/tokens", {texts: [text], vectors: false});
    const r = data.results[0];
    out.replaceChildren(...r.tokens.map((tok, i) => {
      const span = document.createElement("span");
      span.className = "token";
      span.textContent = tok + " ";
      const small = document.createElement("small");
      small.textContent = `${r.offsets[i][0]}–${r.offsets[i][1]}`;
      span.appendChild(small);
      return span;
    }));
    setStatus("tokens-status", `${r.tokens.length} tokens`);
  } catch (e) { setStatus("tokens-status", e.message, true); }
}

async function load() {
  const res = await fetch("/info", {headers: headers()});
  if (res.status === 401) { askForKey((await res.json()).error.message); return; }
  INFO = await res.json();
  document.getElementById("key-form").hidden = true;
  delete document.body.dataset.needsKey;
  document.getElementById("model-info").textContent =
    `${INFO.model}: ${INFO.dimensions} dimensions, max ${INFO.max_length} tokens, heads: ` +
    Object.entries(INFO.heads).map(([k, v]) => `${k} ${v ? "yes" : "no"}`).join(", ");
  if (!INFO.heads.mlm) {
    document.getElementById("fill").disabled = true;
    setStatus("fill-status", "this model has no masked-LM head; serve one with it (e.g. --model splade-tiny) to fill in [MASK]");
  }
  document.body.dataset.ready = "1";
}

function init() {
  document.getElementById("key-form").addEventListener("submit", useKey);
  document.getElementById("compare").addEventListener("click", compare);
  document.getElementById("fill").addEventListener("click", fill);
  document.getElementById("tokenize").addEventListener("click", tokenize);
  load();
}

init();
