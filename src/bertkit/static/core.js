// bertkit playground, shared pieces: requests (with the API key when the server asks for one), status and
// error lines, small DOM helpers, and the views (one <section data-view> each, chosen by the URL's #hash).
"use strict";

let INFO = null;
// The API key, when the server asks for one (`bertkit serve --api-key`): kept for this tab only.
let KEY = sessionStorage.getItem("bertkit-api-key") || "";

function headers(extra) {
  return KEY ? {...extra, Authorization: "Bearer " + KEY} : {...extra};
}

async function answer(res) {
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) askForKey(data.error ? data.error.message : "unauthorized");
  if (!res.ok) {
    const message = data.error ? (data.error.message || data.error) : res.statusText;
    throw new Error(`${res.status}: ${message}`);
  }
  return data;
}

async function post(path, body) {
  const init = {method: "POST", headers: headers({"Content-Type": "application/json"}), body: JSON.stringify(body)};
  return answer(await fetch(path, init));
}

async function get(path) {
  return answer(await fetch(path, {headers: headers()}));
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
  const node = document.getElementById(id);
  node.textContent = text;
  node.className = isError ? "status error" : "status";
}

// el("div", {className: "x", dataset: {a: 1}}, child, "text") -> an element.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  const {dataset, style, ...rest} = props || {};
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset || {});
  Object.assign(node.style, style || {});
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// A refused request: the status line says why, and the panel shows it too (never a blank panel).
function showError(statusId, panelIds, error) {
  setStatus(statusId, error.message, true);
  panelIds.forEach((id) => {
    document.getElementById(id).replaceChildren(el("p", {className: "error panel-error"}, "The server refused: " + error.message));
  });
}

// Count the answers drawn (or refused) into a panel, so a test can tell a new one from an old one.
function rendered(panelId) {
  const panel = document.getElementById(panelId);
  panel.dataset.renders = String(Number(panel.dataset.renders || 0) + 1);
}

function inputTexts(id) {
  return document.getElementById(id).value.split("\n").map((s) => s.trim()).filter((s) => s);
}

// -- views -------------------------------------------------------------------------------------------------

const VIEW_OPENERS = {};  // view id -> function run the first time the view is shown (after /info)
const OPENED = new Set();

function showView() {
  const views = [...document.querySelectorAll("section[data-view]")];
  const wanted = location.hash.slice(1);
  const current = views.find((v) => v.id === wanted) || views[0];
  views.forEach((v) => { v.hidden = v !== current; });
  document.querySelectorAll("#views a").forEach((a) => {
    a.classList.toggle("active", a.getAttribute("href") === "#" + current.id);
  });
  if (INFO && !OPENED.has(current.id) && VIEW_OPENERS[current.id]) {
    OPENED.add(current.id);
    VIEW_OPENERS[current.id]();
  }
}
