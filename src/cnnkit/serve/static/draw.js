// Draw page: a canvas whose strokes are sent as a PNG to /api/draw; the answer fills the bars and maps.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const select = document.getElementById("checkpoint");
const message = document.getElementById("message");
let drawing = false, hasInk = false, lastPoint = null;
let inFlight = false, pending = false, lastSent = 0;
let usable = [];  // the runs this page can use: classifiers of grey or colour images (the server says which)
const PREDICT_INTERVAL_MS = 150;  // while the pen moves: often enough to feel live, rarely enough for 2 CPUs

function clearResult() {
  document.body.classList.remove("has-result");
  document.getElementById("prediction").textContent = "";
  document.getElementById("bars").innerHTML = "";
  document.getElementById("maps").innerHTML = "";
  document.getElementById("seen").removeAttribute("src");
}

function clearPad() {
  context.fillStyle = "#000";
  context.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  clearResult();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

function strokeTo(p) {
  context.strokeStyle = "#fff";
  context.lineWidth = 20;
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  context.moveTo(...(lastPoint || p));
  context.lineTo(...p);
  context.stroke();
  lastPoint = p;
  hasInk = true;
}

pad.addEventListener("pointerdown", (e) => { drawing = true; lastPoint = null; pad.setPointerCapture(e.pointerId); strokeTo(point(e)); });
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  strokeTo(point(e));
  if (Date.now() - lastSent > PREDICT_INTERVAL_MS) predict();
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => { if (drawing) { drawing = false; predict(); } });
}
document.getElementById("clear").addEventListener("click", clearPad);

async function predict() {
  if (!hasInk || !select.value) return;
  if (inFlight) { pending = true; return; }  // the latest drawing is sent once this answer is in
  inFlight = true;
  lastSent = Date.now();
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const form = new FormData();
    form.append("checkpoint", select.value);
    form.append("image", blob, "drawing.png");
    const result = await api("/api/draw", {method: "POST", body: form});
    showResult(result);
    showMessage(message, "");
  } catch (error) {
    clearResult();  // an answer for an earlier drawing or model beside the error would mislead
    showMessage(message, error.message, true);
  } finally {
    inFlight = false;
    if (pending) { pending = false; predict(); }
  }
}

function showResult(result) {
  document.body.classList.add("has-result");
  document.getElementById("prediction").textContent =
    `${result.prediction} (${(100 * result.confidence).toFixed(1)}%)`;
  let rows = result.probabilities.map((r) => [r.class, r.p]);
  if (rows.length > 10) rows = rows.sort((a, b) => b[1] - a[1]).slice(0, 10);  // CIFAR-100: the top ten
  barChart(document.getElementById("bars"), rows);
  document.getElementById("seen").src = result.input;
  document.getElementById("maps").innerHTML = result.maps.map((m) => `<figure>
      <figcaption>${escapeHtml(m.layer)} · ${m.shape.join("x")}</figcaption>
      <img src="${m.image}" alt="feature maps of ${escapeHtml(m.layer)}"></figure>`).join("");
}

async function loadFilters() {
  const img = document.getElementById("filters");
  try {
    const f = await api(`/api/checkpoints/${encodeURIComponent(select.value)}/filters`);
    img.src = f.image;
    document.getElementById("filters-caption").textContent = `${f.layer} · ${f.shape.join("x")}`;
  } catch (error) {
    img.removeAttribute("src");
    showMessage(message, error.message, true);
  }
}

async function loadCheckpoints() {
  const wanted = new URLSearchParams(location.search).get("checkpoint") || select.value;
  try {
    const {checkpoints, folder} = await api("/api/checkpoints");
    usable = checkpoints.filter((c) => c.drawable);  // newest first, as the server lists them
    if (!usable.length) {
      select.innerHTML = "";
      document.getElementById("checkpoint-info").textContent = "";
      const others = checkpoints.length ? ` (its ${checkpoints.length} run(s) are ${[...new Set(checkpoints.map(
        (c) => c.task))].join(", ")} models, which take no drawings)` : "";
      showMessage(message, `No trained classifiers in ${folder} yet${others}. Train one on the Train page (a ` +
                           "minute), or run 'make demo' and reload.");
      return;
    }
    select.innerHTML = usable.map((c) => `<option value="${escapeHtml(c.name)}">${escapeHtml(c.name)}</option>`).join("");
    if (usable.some((c) => c.name === wanted)) select.value = wanted;
    describe(usable.find((c) => c.name === select.value));
    const skipped = checkpoints.some((c) => c.name === wanted && !c.drawable);
    showMessage(message, skipped ? `${wanted} is not a classifier of images, so it cannot read a drawing; ` +
                                   `showing ${select.value} instead.` : "");
    await loadFilters();
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

function describe(c) {
  if (!c) return;
  const accuracy = c.val_acc == null ? "" : `, ${c.val_acc.toFixed(1)}% validation accuracy`;
  document.getElementById("checkpoint-info").textContent =
    `${c.model} on ${c.dataset}, epoch ${c.epoch}${accuracy}; classes: ${c.classes.join(", ")}`;
}

select.addEventListener("change", async () => {
  describe(usable.find((c) => c.name === select.value));
  showMessage(message, "");
  await loadFilters();
  predict();
});

clearPad();
loadCheckpoints();
// Coming back from the Train page (or a terminal running `cnnkit train`): offer the new checkpoints.
window.addEventListener("focus", loadCheckpoints);
