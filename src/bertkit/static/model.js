// bertkit playground, the model panel (GET /model: the `bertkit inspect` tree; POST /model/outputs: the
// outputs' shapes for an input) and the which-vector panel (GET /report: `bertkit serve --report DIR`).
"use strict";

const OUTPUT_NOTES = {
  last_hidden_state: "every token's vector from the last layer",
  pooler_output: "[CLS] of the last layer → dense → tanh (NSP-trained)",
  hidden_states: "the embedding output and each layer's output: one tensor per hidden state",
  attentions: "each layer's attention probabilities: one tensor per layer",
  mlm_logits: "the masked-LM head: a score per vocabulary entry at every token",
  nsp_logits: "the next-sentence head over pooler_output",
};

const fmt = (n) => n.toLocaleString("en-US");
const shapeText = (s) => "(" + s.join(", ") + ")";

async function showModel() {
  try {
    drawModelTree(await get("/model"));
    setStatus("model-status", "");
  } catch (e) {
    showError("model-status", ["model-tree"], e);
  }
  await showOutputs();
}

function drawModelTree(t) {
  const c = t.config;
  const heads = Object.entries({"pooler": t.heads.pooler, "masked-LM head": t.heads.mlm, "NSP head": t.heads.nsp});
  const parts = t.parts.map((p, i) => el("details", {open: i === 0, dataset: {part: p.name}},
    el("summary", {}, el("b", {}, p.name), `  ${fmt(p.count)} parameters`, p.note ? `  (${p.note})` : ""),
    el("div", {className: "scroll"}, el("table", {className: "tensors"},
      el("tr", {}, el("th", {}, "tensor"), el("th", {}, "shape"), el("th", {}, "parameters")),
      ...p.tensors.map((x) => el("tr", {}, el("td", {className: "name"}, x.name),
        el("td", {className: "shape"}, shapeText(x.shape)), el("td", {className: "num"}, fmt(x.count))))))));
  document.getElementById("model-tree").replaceChildren(
    el("p", {}, el("b", {}, t.model), `: ${c.layers} layers, hidden ${c.hidden}, ${c.heads} heads × ${c.head_dim}, ` +
      `feed-forward ${c.intermediate}, vocabulary ${fmt(c.vocab)}, ${c.positions} positions (tokenizer limit ${c.max_length})`),
    el("p", {className: "heads"}, "Heads: ", ...heads.map(([k, v]) => el("span", {className: v ? "present" : "absent"},
      `${k} ${v ? "present" : "absent"}`))),
    ...parts,
    el("p", {id: "model-total", dataset: {total: t.total}}, el("b", {}, `total parameters: ${fmt(t.total)}`)));
}

async function showOutputs() {
  const text = document.getElementById("outputs-text").value.trim();
  if (!text) { setStatus("outputs-status", "enter a sentence", true); return; }
  try {
    const data = await post("/model/outputs", {text});
    const rows = Object.entries(data.outputs).filter(([k, o]) => o.shape || !k.endsWith("_logits")).map(([k, o]) => {
      const shape = !o.shape ? "absent (no pooler)" : (o.count ? `${o.count} × ${shapeText(o.shape)}` : shapeText(o.shape));
      return el("tr", {dataset: {output: k}}, el("td", {}, el("code", {}, k)),
        el("td", {className: "shape", dataset: {shape: JSON.stringify(o.shape), count: o.count || ""}}, shape),
        el("td", {}, OUTPUT_NOTES[k] || ""));
    });
    document.getElementById("outputs-table").replaceChildren(
      el("tr", {}, el("th", {}, "output"), el("th", {}, "shape"), el("th", {}, "what it is")), ...rows);
    setStatus("outputs-status", `${data.tokens.length} tokens: ${data.tokens.join(" ")}`);
  } catch (e) {
    showError("outputs-status", [], e);
    document.getElementById("outputs-table").replaceChildren(el("tr", {}, el("td", {className: "error"}, e.message)));
  }
  rendered("outputs-table");
}

// -- which vector ------------------------------------------------------------------------------------------

// Points behind the task's best, clipped at -20 as the report's chart does: green (best) to red.
function gapColor(gap) {
  return `hsl(${Math.round(120 * (1 + Math.max(-20, Math.min(0, gap)) / 20))}, 65%, 78%)`;
}

async function showReport() {
  const body = document.getElementById("which-body");
  if (!INFO.inside.report) {
    body.replaceChildren(el("p", {className: "note"}, "No report is served. Make one with `bertkit report --output DIR …` " +
      "and start the server with `bertkit serve --report DIR` to see which vector wins on which task here."));
    return;
  }
  try {
    const r = await get("/report");
    body.replaceChildren(
      el("p", {}, "Model: ", el("b", {}, r.model), ". Every score ×100; ★ = best per task."),
      el("ul", {id: "which-recs"}, ...r.recommendations.map(recommendationItem)),
      el("div", {className: "scroll"}, reportTable(r)),
      el("figure", {id: "which-figure"}, el("figcaption", {}, "The report's summary chart (click to open it full size)")));
    setStatus("which-status", "");
    if (r.chart) await showReportChart();
  } catch (e) {
    showError("which-status", ["which-body"], e);
  }
  rendered("which-body");
}

function recommendationItem(x) {
  const margin = x.runner_up ? `, ${x.margin.toFixed(1)} ahead of ${x.runner_up}` : "";
  return el("li", {}, el("b", {}, x.task), ` (${x.data}): use `, el("b", {}, x.representation),
    ` (${x.metric} ${x.score.toFixed(1)}${margin})`);
}

function reportTable(r) {
  const table = el("table", {className: "report"});
  table.append(el("tr", {}, el("th", {}, "representation"), ...r.columns.map((c) =>
    el("th", {}, c.task, el("br"), el("small", {}, c.data), el("br"), el("small", {}, `(${c.metric})`)))));
  const best = r.columns.map((_, j) => Math.max(...r.rows.map((row) => row.cells[j].score ?? -Infinity)));
  r.rows.forEach((row) => table.append(el("tr", {}, el("th", {}, row.representation), ...row.cells.map((c, j) =>
    el("td", {className: c.best ? "best" : "", dataset: {value: c.score ?? ""},
      style: {background: c.score === null ? "#fff" : gapColor(c.score - best[j])}}, (c.best ? "★ " : "") + c.text)))));
  return table;
}

async function showReportChart() {
  const res = await fetch("/report/summary.png", {headers: headers()});
  if (!res.ok) throw new Error(`${res.status}: the report's chart could not be read`);
  const url = URL.createObjectURL(await res.blob());
  const img = el("img", {src: url, alt: "summary chart: representation × task, colour = points behind the task's best"});
  document.getElementById("which-figure").prepend(el("a", {href: url, target: "_blank"}, img));
}

VIEW_OPENERS.model = showModel;
VIEW_OPENERS.which = showReport;
