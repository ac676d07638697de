// Detect page: pick a detection run, send an example canvas or an upload to /api/detect, draw the boxes it
// answers on a canvas. The server sends every detection (min_score 0); the slider only redraws, with no request.
"use strict";

const DISPLAY_SIDE = 384;  // the picture is enlarged (pixels kept square) to about this many pixels a side
const message = document.getElementById("message");
const detectorMenu = document.getElementById("detector");
const threshold = document.getElementById("threshold");
const view = document.getElementById("view");
let answer = null;   // the last /api/detect answer
let picture = null;  // its image, decoded
let lastRequest = null;  // builds the last request's form again, so a new detector answers the same picture

function clearResult() {
  answer = picture = null;
  document.body.classList.remove("has-result");
  view.width = view.height = 0;
  delete view.dataset.drawn;
  document.getElementById("count").textContent = "";
  document.getElementById("list").innerHTML = "";
  document.getElementById("source").textContent = "";
}

// The picture, then each detection scoring at least the slider's value: its box, and "label score" on a tab of
// its class's colour above it (as cnnkit.detect.draw draws them).
function drawDetections() {
  const minimum = Number(threshold.value);
  document.getElementById("threshold-value").textContent = minimum.toFixed(2);
  if (!answer || !picture) return;
  const scale = Math.max(1, Math.floor(DISPLAY_SIDE / Math.max(answer.width, answer.height)));
  view.width = answer.width * scale;
  view.height = answer.height * scale;
  const context = view.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(picture, 0, 0, view.width, view.height);
  const shown = answer.detections.filter((d) => d.score >= minimum);
  const fontSize = Math.max(12, Math.round(2.5 * scale));
  context.font = `${fontSize}px system-ui, sans-serif`;
  context.textBaseline = "top";
  context.lineWidth = Math.max(1, Math.round(scale / 2));
  for (const d of shown) {
    const [x1, y1, x2, y2] = d.box.map((v) => v * scale);
    context.strokeStyle = d.colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const top = Math.max(0, y1 - fontSize - 4);
    context.fillStyle = d.colour;
    context.fillRect(x1, top, context.measureText(text).width + 4, fontSize + 4);
    context.fillStyle = "#000";
    context.fillText(text, x1 + 2, top + 2);
  }
  view.dataset.drawn = String(shown.length);
  const total = answer.detections.length;
  document.getElementById("count").textContent =
    `${shown.length} of ${total} detection${total === 1 ? "" : "s"} score at least ${minimum.toFixed(2)}.`;
  document.getElementById("list").innerHTML = shown.map((d) => {
    const corners = d.box.map((v) => v.toFixed(0)).join(", ");
    return `<li><span class="swatch" style="background:${d.colour}"></span><b>${escapeHtml(d.label)}</b>
      ${d.score.toFixed(2)} <span class="muted">at (${corners})</span></li>`;
  }).join("");
}

async function detect(buildForm, description) {
  lastRequest = [buildForm, description];
  try { await detectorsLoaded; } catch (_) { /* its error is on the page already */ }
  if (!detectorMenu.value) {
    showMessage(message, "No detector to ask: train one with the command above, then reload this page.", true);
    return;
  }
  const form = buildForm();
  form.append("detector", detectorMenu.value);
  form.append("min_score", "0");
  showMessage(message, `Looking for objects in ${description}…`);
  try {
    const result = await api("/api/detect", {method: "POST", body: form});
    const image = new Image();
    image.src = result.image;
    await image.decode();
    answer = result;
    picture = image;
    const scaled = result.scale < 1 ? `, scaled to ${result.width}x${result.height}` : "";
    document.getElementById("source").textContent = `${result.source}${scaled}, by ${result.detector}`;
    document.body.classList.add("has-result");
    drawDetections();
    showMessage(message, "");
  } catch (error) {
    clearResult();
    showMessage(message, error.message, true);
  }
}

function fileForm(file) {
  return () => {
    const form = new FormData();
    form.append("image", file, file.name);
    return form;
  };
}

function exampleForm(name) {
  return () => {
    const form = new FormData();
    form.append("example", name);
    return form;
  };
}

async function loadDetectors() {
  const {detectors, folder, train_command: command} = await api("/api/detect/detectors");
  detectorMenu.innerHTML = detectors.map((d) =>
    `<option value="${escapeHtml(d.name)}" title="${escapeHtml(`${d.dataset}, epoch ${d.epoch}`)}">${escapeHtml(d.name)}
      (${escapeHtml(d.model)})</option>`).join("");
  document.getElementById("folder").textContent = folder;
  document.getElementById("train-command").textContent = command;
  document.getElementById("no-detector").hidden = detectors.length > 0;
  detectorMenu.hidden = detectors.length === 0;
}

async function loadExamples() {
  const [{examples}, info] = await Promise.all([api("/api/detect/examples"), api("/api/info")]);
  document.getElementById("limit").textContent = Math.round(info.max_upload_mb);
  const box = document.getElementById("examples");
  box.innerHTML = examples.map((e) => `<button data-name="${escapeHtml(e.name)}" title="${escapeHtml(e.name)}">
    <img src="${e.url}" alt="${escapeHtml(e.name)}" class="pixelated"></button>`).join("");
  for (const button of box.querySelectorAll("button")) {
    button.addEventListener("click", () => detect(exampleForm(button.dataset.name), button.dataset.name));
  }
}

threshold.addEventListener("input", drawDetections);
detectorMenu.addEventListener("change", () => { if (lastRequest) detect(...lastRequest); });
document.getElementById("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) detect(fileForm(file), file.name);
});

// An example clicked before the list of detectors arrives waits for it (else it would find no detector chosen).
const detectorsLoaded = loadDetectors();
Promise.all([detectorsLoaded, loadExamples()]).catch((error) => showMessage(message, error.message, true));
