// Train page: POST /api/train, then follow /api/train/events (server-sent events) into two canvas charts.
"use strict";

const message = document.getElementById("message");
const startButton = document.getElementById("start"), stopButton = document.getElementById("stop");
let source = null, series = null, drawScheduled = false;

function resetSeries() {
  series = {batchLoss: [], batchAcc: [], valLoss: [], valAcc: []};
}

function movingAverage(points, window = 10) {
  return points.map((p, i) => {
    const slice = points.slice(Math.max(0, i - window + 1), i + 1);
    return [p[0], slice.reduce((s, q) => s + q[1], 0) / slice.length];
  });
}

// One chart: a line for the batches, dots for the epochs; axes from the data (accuracy fixed to 0..100).
function drawChart(canvas, title, line, dots, fixedRange) {
  const c = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  const left = 46, right = 12, top = 26, bottom = 30;
  c.clearRect(0, 0, W, H);
  c.font = "13px system-ui, sans-serif";
  c.fillStyle = "#1d2433";
  c.fillText(title, left, 16);
  const all = line.concat(dots);
  const xMax = Math.max(1, ...all.map((p) => p[0]));
  let [yMin, yMax] = fixedRange || [0, Math.max(0.1, ...all.map((p) => p[1]))];
  const x = (v) => left + (v / xMax) * (W - left - right);
  const y = (v) => H - bottom - ((v - yMin) / (yMax - yMin)) * (H - top - bottom);
  c.strokeStyle = "#d9dee7";
  c.fillStyle = "#5d6678";
  c.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const v = yMin + (i / 4) * (yMax - yMin);
    c.beginPath(); c.moveTo(left, y(v)); c.lineTo(W - right, y(v)); c.stroke();
    c.fillText(v.toFixed(fixedRange ? 0 : 2), 4, y(v) + 4);
  }
  for (let e = 0; e <= xMax; e++) c.fillText(String(e), x(e) - 3, H - bottom + 14);
  c.fillText("epoch", W - right - 32, H - 4);
  if (line.length) {
    c.strokeStyle = "#2f6fdf"; c.lineWidth = 1.5; c.beginPath();
    line.forEach((p, i) => (i ? c.lineTo(x(p[0]), y(p[1])) : c.moveTo(x(p[0]), y(p[1]))));
    c.stroke(); c.lineWidth = 1;
  }
  c.fillStyle = "#e67e22";
  for (const p of dots) { c.beginPath(); c.arc(x(p[0]), y(p[1]), 4, 0, 2 * Math.PI); c.fill(); }
  canvas.dataset.points = String(line.length + dots.length);
}

function redraw() {
  drawScheduled = false;
  drawChart(document.getElementById("loss-curve"), "loss (cross-entropy)", movingAverage(series.batchLoss), series.valLoss);
  drawChart(document.getElementById("acc-curve"), "accuracy (%)", movingAverage(series.batchAcc), series.valAcc, [0, 100]);
}

function scheduleRedraw() {
  if (!drawScheduled) { drawScheduled = true; requestAnimationFrame(redraw); }
}

function setRunning(running) {
  startButton.disabled = running;
  stopButton.disabled = !running;
}

function showFilters(data) {
  document.getElementById("filters").src = data.image;
  document.getElementById("filters-caption").textContent = `${data.layer} · ${data.shape.join("x")}`;
}

function follow() {
  if (source) source.close();
  resetSeries();
  document.getElementById("result").innerHTML = "";
  source = new EventSource("/api/train/events");
  const status = document.getElementById("status");
  source.addEventListener("started", (e) => {
    const d = JSON.parse(e.data);
    status.textContent = `${d.run}: ${d.data}`;
    showMessage(message, "");
    showFilters(d);
    setRunning(true);
  });
  source.addEventListener("batch", (e) => {
    const d = JSON.parse(e.data);
    series.batchLoss.push([d.step, d.loss]);
    series.batchAcc.push([d.step, d.acc]);
    status.textContent = `epoch ${d.epoch}, loss ${d.loss.toFixed(3)}`;
    scheduleRedraw();
  });
  source.addEventListener("filters", (e) => showFilters(JSON.parse(e.data)));
  source.addEventListener("epoch", (e) => {
    const d = JSON.parse(e.data);
    series.valLoss.push([d.epoch, d.val_loss]);
    series.valAcc.push([d.epoch, d.val_acc]);
    scheduleRedraw();
  });
  source.addEventListener("done", (e) => {
    const d = JSON.parse(e.data);
    source.close();
    setRunning(false);
    if (d.image) showFilters(d);
    if (d.state === "failed") {
      status.textContent = "failed";
      showMessage(message, d.error, true);
      return;
    }
    status.textContent = `${d.state} after ${d.epochs_completed} epoch(s)`;
    document.getElementById("result").innerHTML = d.checkpoint
      ? `Test accuracy ${d.test_acc.toFixed(2)}%. Saved as <b>${escapeHtml(d.checkpoint)}</b>: ` +
        `<a href="/?checkpoint=${encodeURIComponent(d.checkpoint)}">draw digits for it</a>.`
      : "Stopped before the first batch finished; nothing was saved.";
  });
  source.addEventListener("idle", () => source.close());
}

startButton.addEventListener("click", async () => {
  const settings = {
    model: document.getElementById("model").value,
    dataset: document.getElementById("dataset").value,
    train_images: Number(document.getElementById("train-images").value),
    epochs: Number(document.getElementById("epochs").value),
    lr: Number(document.getElementById("lr").value),
  };
  try {
    setRunning(true);
    const job = await api("/api/train", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(settings)});
    showMessage(message, `Started ${job.run}. Loading the data…`);
    follow();
  } catch (error) {
    setRunning(false);
    showMessage(message, error.message, true);
  }
});

stopButton.addEventListener("click", async () => {
  try {
    await api("/api/train/stop", {method: "POST"});
    showMessage(message, "Stopping after the current batch; the model so far is evaluated and saved.");
    stopButton.disabled = true;
  } catch (error) {
    showMessage(message, error.message, true);
  }
});

const modelSelect = document.getElementById("model");
function describeModel() {  // the menu holds short names (a long one is cut off); the details go below it
  document.getElementById("model-note").textContent = modelSelect.selectedOptions[0].dataset.note;
}
modelSelect.addEventListener("change", describeModel);
describeModel();

resetSeries();
redraw();
// A run started earlier (or from another tab) is shown from its beginning.
api("/api/train").then(({job}) => { if (job) follow(); }).catch((error) => showMessage(message, error.message, true));
