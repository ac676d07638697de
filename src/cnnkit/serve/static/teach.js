// Teach page: classes of pictures -> /api/teach/session, /api/teach/images (one picture per request),
// /api/teach/fit, then /api/teach/events (server-sent events) until the held-out accuracy arrives; new pictures
// go to /api/teach/predict.
"use strict";

const message = document.getElementById("message"), tryMessage = document.getElementById("try-message");
const teachButton = document.getElementById("teach"), progress = document.getElementById("progress");
const statusLine = document.getElementById("status");
const UPLOADS_AT_ONCE = 3;
let limits = {min_classes: 2, max_classes: 5, min_images_per_class: 5, max_images: 300};
let classes = [], nextClassNumber = 1, taughtRun = null, source = null;

// ------------------------------------------------------------------------------------------------- classes
function addClass() {
  if (classes.length >= limits.max_classes) return;
  classes.push({name: `Class ${nextClassNumber++}`, files: []});
  renderClasses();
}

function renderClasses() {
  const box = document.getElementById("classes");
  box.innerHTML = classes.map((c, i) => `<div class="class-card" data-index="${i}">
      <div class="row">
        <input type="text" class="class-name" aria-label="name of class ${i + 1}" maxlength="32"
               value="${escapeHtml(c.name)}">
        <span class="muted class-count">${c.files.length} picture${c.files.length === 1 ? "" : "s"}</span>
        ${classes.length > limits.min_classes ? '<button class="secondary remove-class" title="remove this class">×</button>' : ""}
      </div>
      <div class="row">
        <input type="file" class="class-files" multiple aria-label="pictures of class ${i + 1}"
               accept="image/png,image/jpeg,image/gif,image/webp,image/bmp">
        <button class="secondary camera-only class-camera">Camera</button>
      </div>
      <div class="thumbs">${c.files.map((f, j) =>
        `<img src="${f.url}" data-file="${j}" alt="${escapeHtml(f.file.name)}" title="${escapeHtml(f.file.name)}: click to remove">`).join("")}</div>
    </div>`).join("");
  for (const card of box.querySelectorAll(".class-card")) {
    const entry = classes[Number(card.dataset.index)];
    card.querySelector(".class-name").addEventListener("input", (e) => { entry.name = e.target.value; });
    card.querySelector(".class-files").addEventListener("change", (e) => {
      addFiles(entry, [...e.target.files]);
    });
    card.querySelector(".class-camera").addEventListener("click", () => openCamera((file) => addFiles(entry, [file])));
    const remove = card.querySelector(".remove-class");
    if (remove) remove.addEventListener("click", () => {
      entry.files.forEach((f) => URL.revokeObjectURL(f.url));
      classes.splice(classes.indexOf(entry), 1);
      renderClasses();
    });
    for (const thumb of card.querySelectorAll(".thumbs img")) {
      thumb.addEventListener("click", () => {
        const [removed] = entry.files.splice(Number(thumb.dataset.file), 1);
        URL.revokeObjectURL(removed.url);
        renderClasses();
      });
    }
  }
  document.getElementById("add-class").disabled = classes.length >= limits.max_classes;
  const total = classes.reduce((n, c) => n + c.files.length, 0);
  document.getElementById("class-note").textContent = `${classes.length} classes, ${total} pictures`;
  showCameraButtons();
}

function addFiles(entry, files) {
  for (const file of files) entry.files.push({file, url: URL.createObjectURL(file)});
  renderClasses();
}

// What the server would refuse anyway, said before anything is sent.
function problemWithClasses() {
  const names = classes.map((c) => c.name.trim());
  if (names.some((n) => !n)) return "Give every class a name.";
  if (new Set(names.map((n) => n.toLowerCase())).size !== names.length) return "Give the classes different names.";
  const few = classes.filter((c) => c.files.length < limits.min_images_per_class).map((c) => c.name.trim());
  if (few.length) return `Each class needs at least ${limits.min_images_per_class} pictures; add more to ${few.join(", ")}.`;
  const total = classes.reduce((n, c) => n + c.files.length, 0);
  if (total > limits.max_images) return `At most ${limits.max_images} pictures in all; remove ${total - limits.max_images}.`;
  return null;
}

// --------------------------------------------------------------------------------------------------- teach
async function sendImages(session) {
  const queue = classes.flatMap((c) => c.files.map((f) => [c.name.trim(), f.file]));
  let sent = 0;
  progress.max = queue.length;
  progress.value = 0;
  async function worker() {
    while (queue.length) {
      const [label, file] = queue.shift();
      const form = new FormData();
      form.append("session", session);
      form.append("label", label);
      form.append("image", file, file.name || "camera.jpg");
      await api("/api/teach/images", {method: "POST", body: form});
      progress.value = ++sent;
      statusLine.textContent = `sending pictures: ${sent} of ${progress.max}`;
    }
  }
  await Promise.all(Array.from({length: UPLOADS_AT_ONCE}, worker));
}

function setTeaching(teaching) {
  teachButton.disabled = teaching;
  document.getElementById("add-class").disabled = teaching || classes.length >= limits.max_classes;
}

teachButton.addEventListener("click", async () => {
  const problem = problemWithClasses();
  if (problem) { showMessage(message, problem, true); return; }
  setTeaching(true);
  showMessage(message, "");
  let session = null;
  const asJson = (body) => ({method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  try {
    ({session} = await api("/api/teach/session", {method: "POST"}));
    await sendImages(session);
    await api("/api/teach/fit", asJson({session}));
    follow();
  } catch (error) {
    setTeaching(false);
    statusLine.textContent = "";
    showMessage(message, error.message, true);
    // A refused picture ends this try: the session is given up, so pressing Teach again (or another visitor) can start.
    if (session) api("/api/teach/close", asJson({session})).catch(() => {});
  }
});

function follow() {
  if (source) source.close();
  source = new EventSource("/api/teach/events");
  source.addEventListener("started", (e) => {
    const d = JSON.parse(e.data);
    progress.max = d.images;
    progress.value = 0;
    statusLine.textContent = `${d.run}: reading ${d.images} pictures`;
  });
  source.addEventListener("features", (e) => {
    const d = JSON.parse(e.data);
    progress.max = d.total;
    progress.value = d.done;
    statusLine.textContent = `features of ${d.done} of ${d.total} pictures`;
  });
  source.addEventListener("fitting", (e) => {
    const d = JSON.parse(e.data);
    statusLine.textContent = `fitting the classifier on ${d.train_images} pictures, testing on ${d.held_out_images}`;
  });
  source.addEventListener("done", (e) => {
    const d = JSON.parse(e.data);
    source.close();
    setTeaching(false);
    if (d.state === "failed") {
      statusLine.textContent = "failed";
      showMessage(message, d.error, true);
      return;
    }
    progress.value = progress.max;
    statusLine.textContent = `done in ${d.seconds.toFixed(1)} s`;
    showResult(d);
  });
  source.addEventListener("idle", () => source.close());
}

function showResult(d) {
  taughtRun = d.run;
  document.getElementById("accuracy").textContent = `${d.accuracy.toFixed(1)}%`;
  document.getElementById("counts").textContent = `${d.train_images} + ${d.held_out_images}`;
  document.getElementById("seconds").textContent = `${d.seconds.toFixed(1)} s`;
  const header = d.classes.map((c) => `<th>${escapeHtml(c)}</th>`).join("");
  const rows = d.confusion.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return `<tr><th>${escapeHtml(d.classes[i])}</th>${row.map((n, j) =>
      `<td class="${i === j ? "hit" : n ? "miss" : ""}" style="--share:${(n / total).toFixed(2)}">${n}</td>`).join("")}</tr>`;
  }).join("");
  document.getElementById("confusion").innerHTML =
    `<thead><tr><th>true ↓ predicted →</th>${header}</tr></thead><tbody>${rows}</tbody>`;
  document.getElementById("run-note").innerHTML = `${d.train_images} pictures taught it and ${d.held_out_images} ` +
    `held-out ones tested it (C = ${d.C}). Saved as the run folder <b>${escapeHtml(d.run)}</b>: ` +
    `<code>cnnkit predict runs/${escapeHtml(d.run)} picture.jpg</code> (or your --checkpoints folder).`;
  document.body.classList.add("has-teach-result");
  document.getElementById("try-file").disabled = false;
  document.getElementById("try-camera").disabled = false;
}

// ------------------------------------------------------------------------------------------------- try it
function clearTry() {
  document.getElementById("prediction").textContent = "";
  document.getElementById("try-bars").innerHTML = "";
  document.getElementById("try-input").removeAttribute("src");
  document.getElementById("try-overlay").removeAttribute("src");
}

async function classify(file) {
  if (!taughtRun) return;
  showMessage(tryMessage, `Classifying ${file.name}…`);
  const form = new FormData();
  form.append("run", taughtRun);
  form.append("image", file, file.name || "camera.jpg");
  try {
    const result = await api("/api/teach/predict", {method: "POST", body: form});
    const best = result.probabilities.find((p) => p.class === result.prediction);
    document.getElementById("prediction").textContent = `${result.prediction} (${(100 * best.p).toFixed(1)}%)`;
    barChart(document.getElementById("try-bars"), result.probabilities.map((p) => [p.class, p.p]), 360);
    document.getElementById("try-input").src = result.input;
    document.getElementById("try-overlay").src = result.overlay;
    showMessage(tryMessage, "");
  } catch (error) {
    clearTry();
    showMessage(tryMessage, error.message, true);
  }
}

document.getElementById("try-file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
document.getElementById("try-camera").addEventListener("click", () => openCamera(classify));

// -------------------------------------------------------------------------------------------------- camera
// Where the browser offers one (a secure page: localhost or https), pictures can come from the camera.
const hasCamera = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
let cameraStream = null, onPicture = null;

function showCameraButtons() {
  for (const button of document.querySelectorAll(".camera-only")) button.hidden = !hasCamera;
}

async function openCamera(callback) {
  onPicture = callback;
  try {
    cameraStream = cameraStream || await navigator.mediaDevices.getUserMedia({video: true, audio: false});
    document.getElementById("camera-video").srcObject = cameraStream;
    document.getElementById("camera").hidden = false;
  } catch (error) {
    showMessage(message, `The camera is not available: ${error.message}`, true);
  }
}

function closeCamera() {
  if (cameraStream) cameraStream.getTracks().forEach((track) => track.stop());
  cameraStream = null;
  document.getElementById("camera").hidden = true;
}

document.getElementById("camera-shoot").addEventListener("click", () => {
  const video = document.getElementById("camera-video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    if (blob && onPicture) onPicture(new File([blob], `camera-${Date.now()}.jpg`, {type: "image/jpeg"}));
  }, "image/jpeg", 0.9);
});
document.getElementById("camera-close").addEventListener("click", closeCamera);

// ---------------------------------------------------------------------------------------------------- start
document.getElementById("add-class").addEventListener("click", addClass);

async function start() {
  try {
    const [state, info] = await Promise.all([api("/api/teach"), api("/api/info")]);
    limits = state.limits;
    document.getElementById("limit").textContent = Math.round(info.max_upload_mb);
    document.getElementById("min-images").textContent = limits.min_images_per_class;
    document.getElementById("max-images").textContent = limits.max_images;
    if (state.busy) showMessage(message, state.busy);
  } catch (error) {
    showMessage(message, error.message, true);
  }
  addClass();
  addClass();
}

start();
