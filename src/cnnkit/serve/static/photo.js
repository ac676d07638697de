// Photo page: upload a file (or pick an example), show /api/photo's top-5 labels and Grad-CAM overlay.
"use strict";

const message = document.getElementById("message");
const NO_RESULT_NOTE = "Choose a photo to see what the network thinks it shows.";

// Back to the empty page: a refused upload must not leave the previous photo's answer beside its error.
function clearResult() {
  document.body.classList.remove("has-result");
  document.getElementById("labels").innerHTML = "";
  document.getElementById("labels-note").textContent = NO_RESULT_NOTE;
  document.getElementById("input").removeAttribute("src");
  document.getElementById("overlay").removeAttribute("src");
  document.getElementById("cam-caption").textContent = "";
}

async function classify(form, description) {
  showMessage(message, `Classifying ${description}…`);
  try {
    const result = await api("/api/photo", {method: "POST", body: form});
    document.getElementById("labels").innerHTML = result.labels.map((l) => `<li>
        <div class="row"><b>${escapeHtml(l.label)}</b><span class="muted">${(100 * l.p).toFixed(1)}%</span></div>
        <div class="bar" style="width:${Math.max(1, 100 * l.p).toFixed(1)}%"></div></li>`).join("");
    document.getElementById("labels-note").textContent = `${result.model} on ${result.source}`;
    document.getElementById("input").src = result.input;
    document.getElementById("overlay").src = result.overlay;
    document.getElementById("cam-caption").textContent = `for “${result.gradcam_class}”, at layer ${result.gradcam_layer}`;
    document.body.classList.add("has-result");
    showMessage(message, "");
  } catch (error) {
    clearResult();
    showMessage(message, error.message, true);
  }
}

document.getElementById("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("image", file, file.name);
  classify(form, file.name);
});

async function loadExamples() {
  try {
    const [{examples}, info] = await Promise.all([api("/api/photo/examples"), api("/api/info")]);
    document.getElementById("limit").textContent = Math.round(info.max_upload_mb);
    const box = document.getElementById("examples");
    box.innerHTML = examples.map((e) =>
      `<button data-name="${escapeHtml(e.name)}" title="${escapeHtml(e.name)}"><img src="${e.url}" alt="${escapeHtml(e.name)}"></button>`).join("");
    for (const button of box.querySelectorAll("button")) {
      button.addEventListener("click", () => {
        const form = new FormData();
        form.append("example", button.dataset.name);
        classify(form, button.dataset.name);
      });
    }
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

loadExamples();
