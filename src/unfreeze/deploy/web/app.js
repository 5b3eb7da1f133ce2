// The web page of `unfreeze api`: the model in use, then one card per uploaded image with
// its decision, every probability, and the Grad-CAM overlay. Plain JS, no dependencies:
// every request goes to the server that served this page.
"use strict";

const TOKEN_KEY = "unfreeze-api-token";
const $ = (selector, root = document) => root.querySelector(selector);

// An element with a class and text (textContent only: names come from users' files).
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const fixed = (value, digits = 3) =>
  typeof value === "number" ? value.toFixed(digits) : String(value);

// One /v1 call: {status, body}; status 0 when the request itself failed. Never throws.
async function call(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    return { status: 0, body: { detail: `no answer from the server (${error.message})` } };
  }
  let body;
  try {
    body = await response.json();
  } catch (error) {
    body = {};
  }
  if (!body || typeof body !== "object") body = {};
  if (!response.ok && !body.detail) {
    body.detail = `HTTP ${response.status} ${response.statusText}`.trim();
  }
  if (response.status === 401) askForToken(body.detail);
  return { status: response.status, body };
}

// ---- the model ----------------------------------------------------------------------------

function setStatus(text) {
  $("#status").textContent = text;
}

function askForToken(detail) {
  const form = $("#auth");
  const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
  form.hidden = false;
  $("#auth-error").textContent = hadToken ? `The token was refused: ${detail}` : "";
  setStatus("This server wants an API token.");
}

$("#auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#auth").hidden = true;
  setStatus("Loading the model…");
  loadModel();
});

let loadTimer = null;

async function loadModel() {
  clearTimeout(loadTimer);
  const { status, body } = await call("v1/model");
  if (status === 200) {
    showModel(body);
  } else if (status === 401) {
    // askForToken has shown the form; loadModel runs again when it is submitted
  } else if (status === 503 || status === 0) {
    setStatus(`Model loading… (${body.detail}) retrying every 2 s`);
    loadTimer = setTimeout(loadModel, 2000);
  } else {
    setStatus(`Cannot describe the model: ${body.detail}`);
  }
}

function addFact(list, term, value) {
  list.append(el("dt", "", term));
  const dd = el("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value;
  list.append(dd);
}

function perLabelTable(point, classes) {
  const table = el("table", "per-label");
  const head = table.createTHead().insertRow();
  for (const name of ["label", "threshold", "temperature", "note"]) {
    const th = el("th", "", name);
    th.scope = "col";
    head.append(th);
  }
  const body = table.createTBody();
  classes.forEach((label, i) => {
    const row = body.insertRow();
    row.append(el("th", "", label));
    row.cells[0].scope = "row";
    row.insertCell().textContent = point ? fixed(point.thresholds[i]) : "0.500";
    row.insertCell().textContent = point ? fixed(point.temperatures[i], 2) : "1.00";
    const fallback = point && point.fallbacks && point.fallbacks[label];
    row.insertCell().textContent = fallback ? `fell back to 0.5: ${fallback}` : "";
  });
  return table;
}

function showModel(model) {
  const point = model.operating_point;
  const facts = $("#facts");
  facts.replaceChildren();
  $("#release").textContent = model.release;
  addFact(facts, "Release", model.release);
  addFact(facts, "Task", model.task);
  addFact(facts, "Classes", model.classes.join(", "));
  addFact(facts, "Image size", `${model.image_size} × ${model.image_size} px`);
  if (model.task === "multilabel") {
    const perLabel = point && point.thresholds ? point : null;
    addFact(facts, "Decision", perLabel ? "each label at its own threshold"
      : "each label at 0.5 (no multi-label operating point saved)");
    addFact(facts, "Per label", perLabelTable(perLabel, model.classes));
  } else if (point && point.threshold !== null && point.threshold !== undefined) {
    addFact(facts, "Decision", `threshold ${fixed(point.threshold)} on P(${point.positive_class})`
      + ` (chosen by ${point.threshold_rule})`);
    addFact(facts, "Positive class", point.positive_class);
  } else {
    addFact(facts, "Decision", "arg-max (most probable class)");
  }
  if (model.task !== "multilabel") {
    addFact(facts, "Temperature", point ? fixed(point.temperature, 2) : "1.00");
  }
  addFact(facts, "TTA", point ? point.tta : "none");
  facts.hidden = false;

  const card = model.card || {};
  $("#card-text").textContent = card.markdown || "This release has no model card.";
  $("#card").hidden = false;
  setStatus("Ready: choose or drop images.");
}

// ---- images -------------------------------------------------------------------------------

function newCard(file) {
  const card = el("article", "result");
  card.dataset.name = file.name;
  card.setAttribute("aria-busy", "true"); // until both answers are shown
  card.append(el("h2", "name", file.name));

  const images = el("div", "images");
  const thumb = el("figure");
  const img = el("img", "thumb");
  const url = URL.createObjectURL(file);
  img.src = url;
  img.alt = `uploaded image ${file.name}`;
  img.addEventListener("load", () => URL.revokeObjectURL(url));
  img.addEventListener("error", () => { URL.revokeObjectURL(url); thumb.hidden = true; });
  thumb.append(img, el("figcaption", "", "uploaded"));
  const overlay = el("figure", "explain");
  overlay.append(el("figcaption", "caption", "Grad-CAM: computing…"));
  images.append(thumb, overlay);

  card.append(images, el("p", "decision", "predicting…"), el("ul", "bars"),
              el("p", "release"), el("p", "error"));
  $(".error", card).hidden = true;
  $(".error", card).setAttribute("role", "alert");
  $("#results").prepend(card);
  return card;
}

function showError(card, text) {
  const error = $(".error", card);
  error.textContent = text;
  error.hidden = false;
}

// Where the decision threshold lies on each class's bar (none for arg-max).
function thresholdsOf(result) {
  if (result.thresholds) return result.thresholds;
  if (result.rule === "threshold") return { [result.positive_class]: result.threshold };
  return {};
}

function showBars(card, result) {
  const decided = new Set(result.labels || [result.predicted]);
  const ticks = thresholdsOf(result);
  const bars = $(".bars", card);
  bars.replaceChildren();
  for (const [name, p] of Object.entries(result.probabilities)) {
    const item = el("li", decided.has(name) ? "decided" : "");
    const label = el("span", "bar-label");
    label.append(el("span", "class-name", name));
    if (decided.has(name)) label.append(el("span", "mark", "✓ decided"));
    const track = el("div", "track");
    track.setAttribute("aria-hidden", "true");
    const bar = el("div", "bar");
    bar.style.width = `${Math.min(100, Math.max(0, p * 100)).toFixed(1)}%`;
    track.append(bar);
    if (typeof ticks[name] === "number") {
      const tick = el("div", "tick");
      tick.style.left = `${Math.min(100, Math.max(0, ticks[name] * 100)).toFixed(1)}%`;
      track.append(tick);
      label.append(el("span", "threshold", `threshold ${fixed(ticks[name])}`));
    }
    label.append(el("span", "value", fixed(p)));
    item.append(label, track);
    bars.append(item);
  }
}

// The answer of /v1/predict in the card; true when the image was classified.
function showPrediction(card, { status, body }) {
  const decision = $(".decision", card);
  const result = body.results && body.results[0];
  if (body.release) $(".release", card).textContent = `answered by ${body.release}`;
  if (status === 200 && result && result.ok) {
    decision.dataset.predicted = result.predicted;
    if (result.labels) {
      decision.textContent = result.labels.length ? result.labels.join(", ") : "no label";
    } else {
      decision.textContent = result.predicted;
    }
    showBars(card, result);
    return true;
  }
  decision.textContent = "not classified";
  decision.classList.add("failed");
  showError(card, result && result.ok === false ? result.error : body.detail);
  return false;
}

function showOverlay(card, { status, body }, classified) {
  const figure = $(".explain", card);
  const caption = $(".caption", figure);
  if (status === 200 && body.png_base64) {
    const img = el("img", "overlay");
    img.src = `data:image/png;base64,${body.png_base64}`;
    img.alt = `Grad-CAM overlay of ${card.dataset.name} for ${body.result.explained}`;
    figure.prepend(img);
    caption.textContent = `Grad-CAM: ${body.result.explained}`;
  } else if (classified) {
    caption.textContent = `Grad-CAM failed: ${body.detail}`;
  } else {
    figure.hidden = true; // the card's error says why already
  }
}

function form(file) {
  const data = new FormData();
  data.append("file", file, file.name);
  return data;
}

async function classify(file) {
  const card = newCard(file);
  try {
    const predicting = call("v1/predict", { method: "POST", body: form(file) })
      .then((answer) => showPrediction(card, answer));
    const explaining = call("v1/explain?format=json", { method: "POST", body: form(file) });
    const [classified, explained] = await Promise.all([predicting, explaining]);
    showOverlay(card, explained, classified);
  } catch (error) { // a malformed answer: say so in the card rather than stop the page
    showError(card, `unexpected answer: ${error.message}`);
  } finally {
    card.setAttribute("aria-busy", "false");
  }
}

function classifyAll(files) {
  for (const file of files) classify(file);
}

const input = $("#files");
input.addEventListener("change", () => {
  classifyAll([...input.files]);
  input.value = ""; // the same file can be chosen again
});

const drop = $("#drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classifyAll([...event.dataTransfer.files]);
});
// a file dropped beside the zone must not replace the page
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

loadModel();
