// Explain page: a network, an input and a convolution -> /api/explain/maps (the feature maps); a click on the map
// -> /api/explain/unit (receptive field, arithmetic or input gradient, the ReLU and pooling after it).
"use strict";

const $ = (id) => document.getElementById(id);
const message = $("message"), sourceSelect = $("source"), layerSelect = $("layer"), channelInput = $("channel");
const pad = $("pad"), padContext = pad.getContext("2d");
let layers = [], input = null, mapShape = null, unit = null, drawing = false, lastPoint = null;
// Each maps request takes a number; an answer that arrives after a newer request was sent is dropped, so a slow
// answer for an old channel or picture cannot overwrite the map the user asked for last.
let mapsRequest = 0;
const DIGITS = 4;  // decimals shown: every number on the page is rounded the same way

const fixed = (value) => (value === null || value === undefined ? "pad" : Number(value).toFixed(DIGITS));

// ------------------------------------------------------------------------------------------- requests
function inputForm(extra) {
  const form = new FormData();
  form.append("source", sourceSelect.value);
  if (layerSelect.value) form.append("layer", layerSelect.value);
  form.append("channel", channelInput.value || "0");
  if (input.example) form.append("example", input.example);
  if (input.blob) form.append("image", input.blob, input.name);
  if (input.drawing) form.append("drawing", "true");
  for (const [key, value] of Object.entries(extra || {})) form.append(key, value);
  return form;
}

async function showMaps() {
  if (!input || !sourceSelect.value) return;
  showMessage(message, `Running ${sourceSelect.value}…`);  // a pretrained network loads for a few seconds
  const request = ++mapsRequest;
  try {
    const answer = await api("/api/explain/maps", {method: "POST", body: inputForm()});
    if (request !== mapsRequest) return;  // a newer request is on its way
    mapShape = answer.layer.output_shape;
    $("map-caption").textContent = `${answer.layer.name} · channel ${answer.channel} · ` +
      `${mapShape.slice(1).join("x")} · values ${fixed(answer.map.min)} to ${fixed(answer.map.max)}`;
    await drawImage($("map"), answer.map.image, mapShape[1], mapShape[2]);
    $("map-placeholder").hidden = true;
    $("thumbnails").innerHTML = answer.thumbnails.map((src, c) => `<button class="thumb${c === answer.channel ?
      " active" : ""}" data-channel="${c}" title="channel ${c}"><img src="${src}" alt="channel ${c}"></button>`).join("");
    showMessage(message, "");
    if (unit && unit[0] < mapShape[1] && unit[1] < mapShape[2]) await explainUnit(...unit);
    else clearUnit();
  } catch (error) {
    if (request === mapsRequest) showMessage(message, error.message, true);
  }
}

async function explainUnit(row, column) {
  unit = [row, column];
  drawUnitMarker();
  try {
    const answer = await api("/api/explain/unit", {method: "POST", body: inputForm({row, column})});
    showUnit(answer);
    showMessage(message, "");
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

// ------------------------------------------------------------------------------------------- pictures
function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = reject;
    image.src = src;
  });
}

// Draw a picture of rows x columns values on a canvas as big squares (no smoothing: one value, one square).
async function drawImage(canvas, src, rows, columns) {
  const image = await loadImage(src);
  const side = 280, scale = Math.max(1, Math.floor(side / Math.max(rows, columns)));
  canvas.width = columns * scale;
  canvas.height = rows * scale;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  canvas.dataset.src = src;
  return context;
}

async function drawUnitMarker() {
  const canvas = $("map");
  if (!canvas.dataset.src || !mapShape) return;
  const context = await drawImage(canvas, canvas.dataset.src, mapShape[1], mapShape[2]);
  const cell = canvas.width / mapShape[2];
  context.strokeStyle = "#ff2d55";
  context.lineWidth = Math.max(2, cell / 6);
  context.strokeRect(unit[1] * cell, unit[0] * cell, cell, cell);
}

// The input with the receptive field (clipped to the picture); the input gradient beside it for deeper layers.
async function drawField(answer) {
  const field = answer.receptive_field, [height, width] = answer.input_size;
  for (const [id, src] of [["input-view", answer.input], ["gradient-view", answer.gradient]]) {
    const context = await drawImage($(id), src, height, width);
    const cell = $(id).width / width;
    context.strokeStyle = "#00e0ff";
    context.lineWidth = 2;
    context.setLineDash(field.whole_input ? [6, 4] : []);
    context.strokeRect(field.left * cell, field.top * cell, (field.right - field.left + 1) * cell,
                       (field.bottom - field.top + 1) * cell);
  }
  $("gradient-figure").hidden = answer.first_convolution;
  $("field-caption").textContent = field.whole_input ? "· the whole input" :
    `· ${field.size}x${field.size} pixels, rows ${field.top} to ${field.bottom}, columns ${field.left} to ` +
    `${field.right} (jump ${field.jump})`;
}

// ------------------------------------------------------------------------------------------- the unit
function clearUnit() {
  unit = null;
  for (const id of ["unit-summary", "arithmetic", "steps"]) $(id).innerHTML = "";
  $("unit-placeholder").hidden = false;
}

function grid(values, className, padding) {
  return `<table class="numbers ${className}">${values.map((line, i) => `<tr>${line.map((v, j) =>
    `<td class="${padding && padding[i][j] ? "pad" : ""}">${fixed(v)}</td>`).join("")}</tr>`).join("")}</table>`;
}

function showArithmetic(a) {
  const channels = a.kernel.map((kernel, i) => `<div class="channel-math">
      <h3>input channel ${a.input_channels[i]}</h3>
      <div class="triple">
        <figure><figcaption>kernel weights</figcaption>${grid(kernel, "kernel")}</figure>
        <span class="op">×</span>
        <figure><figcaption>input patch</figcaption>${grid(a.patch[i], "patch", a.padding)}</figure>
        <span class="op">=</span>
        <figure><figcaption>products</figcaption>${grid(a.products[i], "products", a.padding)}</figure>
      </div>
      <p>sum of channel ${a.input_channels[i]}'s products: <b class="channel-sum">${fixed(a.channel_sums[i])}</b></p>
    </div>`).join("");
  const sums = a.channel_sums.map(fixed).join(" + ");
  $("arithmetic").innerHTML = `${channels}
    <p class="equation">${sums} <span class="muted">(products)</span> + <b id="bias">${fixed(a.bias)}</b>
      <span class="muted">(bias${a.has_bias ? "" : ": this layer has none"})</span> = <b id="arithmetic-sum">${fixed(a.sum)}</b>
      <span class="muted">(the forward pass computed ${fixed(a.value)})</span></p>
    <p class="muted">Rows ${a.image_rows[0]} to ${a.image_rows.at(-1)}, columns ${a.image_columns[0]} to
      ${a.image_columns.at(-1)} of the input (after normalisation); grey cells are padding (zeros). Stride
      ${a.stride.join("x")}, padding ${a.conv_padding.join("x")}.</p>`;
}

function showSteps(steps) {
  $("steps").innerHTML = steps.length ? "<h3>After the convolution</h3>" + steps.map((step) => {
    if (!step.window) {
      return `<p class="step">${escapeHtml(step.type)} <span class="muted">(${escapeHtml(step.layer)})</span>:
        ${fixed(step.before)} → <b>${fixed(step.after)}</b></p>`;
    }
    const rows = step.window.map((line, i) => `<tr>${line.map((v, j) => `<td class="${step.chosen_cell &&
      step.chosen_cell[0] === i && step.chosen_cell[1] === j ? "chosen" : ""}">${fixed(v)}</td>`).join("")}</tr>`);
    const kept = step.chosen === undefined ? `mean ${fixed(step.after)}` : `keeps the largest, ${fixed(step.chosen)}`;
    return `<div class="step"><p>${escapeHtml(step.type)} <span class="muted">(${escapeHtml(step.layer)},
      ${step.kernel.join("x")} window, stride ${step.stride.join("x")})</span>: the window at rows
      ${step.window_top} to ${step.window_top + step.kernel[0] - 1}, columns ${step.window_left} to
      ${step.window_left + step.kernel[1] - 1} ${kept}, which becomes value (${step.output_position.join(", ")}) of
      the pooled map: <b class="pooled">${fixed(step.after)}</b></p>
      <table class="numbers window">${rows.join("")}</table></div>`;
  }).join("") : "";
}

function showUnit(answer) {
  $("unit-placeholder").hidden = true;
  const [channel, row, column] = answer.unit;
  $("unit-summary").innerHTML = `<p>${escapeHtml(answer.layer)}, channel ${channel}, row ${row}, column ${column}:
    value <b id="unit-value" class="big">${fixed(answer.value)}</b></p>`;
  drawField(answer);
  if (answer.arithmetic) showArithmetic(answer.arithmetic);
  else {
    $("arithmetic").innerHTML = `<p class="muted">A deeper layer adds up ${formatCount(answer.layer_info.input_shape[0] *
      answer.layer_info.kernel[0] * answer.layer_info.kernel[1] / answer.layer_info.groups)} products of the feature maps
      before it, so instead of the numbers the page shows which input pixels move this value: the input gradient
      (right, bright = strong), inside the receptive field the calculator gives (${answer.receptive_field.whole_input ?
      "the whole input" : `${answer.receptive_field.size}x${answer.receptive_field.size} pixels`}).</p>`;
  }
  showSteps(answer.steps);
}

// ------------------------------------------------------------------------------------------- sliders
const sliders = ["n", "k", "s", "p"].map((name) => $(`size-${name}`));

function outputSize(n, k, s, p) {
  return n + 2 * p - k < 0 ? null : Math.floor((n + 2 * p - k) / s) + 1;
}

function updateSizes() {
  const [n, k, s, p] = sliders.map((slider) => Number(slider.value));
  for (const slider of sliders) $(`${slider.id}-value`).textContent = slider.value;
  const out = outputSize(n, k, s, p);
  $("size-formula").innerHTML = out === null ?
    `The ${k}x${k} kernel does not fit in ${n} + 2·${p} = ${n + 2 * p} pixels: no output.` :
    `out = ⌊(n + 2p − k) / s⌋ + 1 = ⌊(${n} + ${2 * p} − ${k}) / ${s}⌋ + 1 = <b id="size-out">${out}</b>`;
  const left = out === null ? 0 : (n + 2 * p - k) % s;
  const layer = layers.find((x) => x.name === layerSelect.value);
  const same = layer && layer.same_padding && n === layer.input_shape[1] && k === layer.kernel[0] &&
    s === layer.stride[0] && p === 0 ? `This layer pads TensorFlow's 'same' way instead: ${Math.ceil(n / s)} ` +
    `outputs (⌈n / s⌉), the padding split between the two sides, more at the bottom and right. ` : "";
  $("size-note").textContent = same + (left ? `The stride does not land on the last pixel: ${left} pixel(s) at ` +
    "the end are never read (the notes' rule says choose the stride or padding so that this is 0)." : "");
  drawSizeGrid(n, k, s, p, out);
}

function drawSizeGrid(n, k, s, p, out) {
  const svg = $("size-grid"), total = n + 2 * p, cell = Math.max(2, Math.min(12, 180 / total));
  const outCell = out ? Math.max(2, Math.min(12, 180 / out)) : 0, gap = 30, side = total * cell;
  const width = side + gap + (out || 0) * outCell + 2, height = Math.max(side, (out || 0) * outCell) + 2;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const cells = [];
  for (let i = 0; i < total; i++) {
    for (let j = 0; j < total; j++) {
      const padding = i < p || j < p || i >= n + p || j >= n + p;
      cells.push(`<rect x="${1 + j * cell}" y="${1 + i * cell}" width="${cell}" height="${cell}"
        class="${padding ? "pad" : "pixel"}"></rect>`);
    }
  }
  const windows = out ? `<rect class="window" x="${1}" y="${1}" width="${k * cell}" height="${k * cell}"></rect>
    <rect class="window last" x="${1 + (out - 1) * s * cell}" y="${1}" width="${k * cell}" height="${k * cell}"></rect>` : "";
  const outputs = [];
  for (let i = 0; i < (out || 0); i++) {
    for (let j = 0; j < out; j++) {
      outputs.push(`<rect x="${1 + side + gap + j * outCell}" y="${1 + i * outCell}" width="${outCell}"
        height="${outCell}" class="${i === 0 && (j === 0 || j === out - 1) ? "output chosen" : "output"}"></rect>`);
    }
  }
  svg.innerHTML = cells.join("") + windows + outputs.join("");
}

function setSliders(layer) {
  const [k] = layer.kernel, [s] = layer.stride, [p] = layer.padding, n = layer.input_shape[1];
  sliders[0].max = Math.max(64, n);
  sliders[1].max = Math.max(11, k);
  for (const [slider, value] of zip(sliders, [n, k, s, p])) slider.value = value;
  updateSizes();
}

function zip(a, b) { return a.map((value, i) => [value, b[i]]); }

// ------------------------------------------------------------------------------------------- choices
async function loadLayers() {
  try {
    const answer = await api(`/api/explain/layers?source=${encodeURIComponent(sourceSelect.value)}`);
    layers = answer.layers;
    layerSelect.innerHTML = layers.map((l) => `<option value="${escapeHtml(l.name)}">${escapeHtml(l.name)} · ` +
      `${l.kernel.join("x")} · ${l.output_shape.join("x")}</option>`).join("");
    describeLayer();
    $("pad").parentElement.hidden = answer.input_shape[1] > 64;
    showMessage(message, "");
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

function describeLayer() {
  const l = layers.find((x) => x.name === layerSelect.value);
  if (!l) return;
  channelInput.max = l.output_shape[0] - 1;
  if (Number(channelInput.value) > l.output_shape[0] - 1) channelInput.value = 0;
  const padding = l.same_padding ? "TensorFlow 'same' padding (added by the layer, more on the bottom right)" :
    `padding ${l.padding.join("x")}`;
  $("layer-info").textContent = `${l.type}: ${l.input_shape.join("x")} → ${l.output_shape.join("x")}, kernel ` +
    `${l.kernel.join("x")}, stride ${l.stride.join("x")}, ${padding}${l.groups > 1 ? `, ${l.groups} groups` : ""}; ` +
    `receptive field ${l.receptive_field ?? "the whole input"} pixels.`;
  setSliders(l);
}

async function init() {
  try {
    const {sources, examples} = await api("/api/explain/sources");
    const groups = [["run", "Your runs"], ["pretrained", "Zoo, pretrained"], ["random", "Zoo, random weights"]];
    sourceSelect.innerHTML = groups.map(([kind, title]) => `<optgroup label="${title}">${sources.filter((s) =>
      s.kind === kind).map((s) => `<option value="${escapeHtml(s.source)}">${escapeHtml(s.label)}</option>`).join("")}
      </optgroup>`).join("");
    const wanted = new URLSearchParams(location.search).get("source");
    if (sources.some((s) => s.source === wanted)) sourceSelect.value = wanted;
    $("examples").innerHTML = examples.map((name) => `<button data-example="${escapeHtml(name)}" title="${escapeHtml(name)}">
      <img src="/examples/${encodeURIComponent(name)}" alt="${escapeHtml(name)}"></button>`).join("");
    await loadLayers();
    input = {example: examples[0]};
    await showMaps();
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

sourceSelect.addEventListener("change", async () => { clearUnit(); channelInput.value = 0; await loadLayers(); showMaps(); });
layerSelect.addEventListener("change", () => { clearUnit(); describeLayer(); showMaps(); });
channelInput.addEventListener("change", showMaps);
$("thumbnails").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-channel]");
  if (button) { channelInput.value = button.dataset.channel; showMaps(); }
});
$("examples").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-example]");
  if (button) { input = {example: button.dataset.example}; showMaps(); }
});
$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (file) { input = {blob: file, name: file.name}; showMaps(); }
});
$("map").addEventListener("click", (event) => {
  if (!mapShape) return;
  const box = $("map").getBoundingClientRect();
  const row = Math.min(mapShape[1] - 1, Math.floor((event.clientY - box.top) / box.height * mapShape[1]));
  const column = Math.min(mapShape[2] - 1, Math.floor((event.clientX - box.left) / box.width * mapShape[2]));
  explainUnit(row, column);
});
for (const slider of sliders) slider.addEventListener("input", updateSizes);

// The drawing pad: light strokes on black, as MNIST's digits are.
function clearPad() { padContext.fillStyle = "#000"; padContext.fillRect(0, 0, pad.width, pad.height); }
function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}
pad.addEventListener("pointerdown", (e) => { drawing = true; lastPoint = padPoint(e); pad.setPointerCapture(e.pointerId); });
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const point = padPoint(e);
  Object.assign(padContext, {strokeStyle: "#fff", lineWidth: 11, lineCap: "round", lineJoin: "round"});
  padContext.beginPath();
  padContext.moveTo(...lastPoint);
  padContext.lineTo(...point);
  padContext.stroke();
  lastPoint = point;
});
for (const name of ["pointerup", "pointercancel"]) pad.addEventListener(name, () => { drawing = false; });
$("clear").addEventListener("click", clearPad);
$("use-drawing").addEventListener("click", async () => {
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  input = {blob, name: "drawing.png", drawing: true};
  showMaps();
});

clearPad();
init();
