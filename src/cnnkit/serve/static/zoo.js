// Zoo page: /api/zoo/summary for a model and input size -> totals, a stage diagram (SVG) and the layer table.
"use strict";

const message = document.getElementById("message");
const modelSelect = document.getElementById("model"), sizeInput = document.getElementById("input-size");
let models = [];

function shape(s) { return s.length ? s.join("x") : "-"; }

function drawStages(svg, stages) {
  // One box per stage; its height follows the spatial size of its output, so the pyramid of a CNN
  // (large and thin early, small and deep late) shows at a glance.
  const boxWidth = 118, gap = 26, height = 190, maxSide = Math.max(...stages.map((s) => s.output_shape[1] || 1));
  const width = stages.length * (boxWidth + gap);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height + 70);
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 70}`);
  svg.innerHTML = stages.map((s, i) => {
    const side = s.output_shape.length === 3 ? s.output_shape[1] : 1;
    const h = Math.max(18, height * Math.sqrt(side / maxSide));
    const x = i * (boxWidth + gap), y = (height - h) / 2;
    const arrow = i ? `<path d="M${x - gap + 3},${height / 2} L${x - 4},${height / 2}" stroke="#5d6678"
        marker-end="url(#arrow)"></path>` : "";
    return `${arrow}<g class="stage"><title>${escapeHtml(s.types.join(", "))}</title>
      <rect x="${x}" y="${y}" width="${boxWidth}" height="${h}" rx="6" fill="#e4edfc" stroke="#2f6fdf"></rect>
      <text x="${x + boxWidth / 2}" y="${height + 20}" text-anchor="middle" font-size="12" font-weight="600">${escapeHtml(s.name)}</text>
      <text x="${x + boxWidth / 2}" y="${height + 36}" text-anchor="middle" font-size="11" fill="#5d6678">${shape(s.output_shape)}</text>
      <text x="${x + boxWidth / 2}" y="${height + 51}" text-anchor="middle" font-size="11" fill="#5d6678">${formatCount(s.params)} params</text></g>`;
  }).join("") + `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6"
      orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#5d6678"></path></marker></defs>`;
}

async function show() {
  const params = new URLSearchParams({model: modelSelect.value, input_size: sizeInput.value});
  history.replaceState(null, "", `/zoo?${params}`);
  showMessage(message, `Measuring ${modelSelect.value}…`);
  try {
    const r = await api(`/api/zoo/summary?${params}`);
    const t = r.totals;
    document.getElementById("totals").innerHTML = `
      <div><b id="total-params">${t.params.toLocaleString("en-US")}</b>parameters (${formatBytes(t.param_bytes)})</div>
      <div><b>${formatCount(t.macs)}</b>MACs per image (${formatCount(t.flops)} FLOPs)</div>
      <div><b>${formatBytes(t.activation_bytes)}</b>of layer outputs per image</div>
      <div><b>${shape(r.input_size)} → ${shape(t.output_shape)}</b>input → output</div>`;
    drawStages(document.getElementById("diagram"), r.stages);
    document.querySelector("#layers tbody").innerHTML = r.rows.map((row) => `<tr>
      <td>${escapeHtml(row.name)}</td><td>${escapeHtml(row.type)}</td><td>${shape(row.output_shape)}</td>
      <td>${row.params.toLocaleString("en-US")}</td><td>${row.macs ? formatCount(row.macs) : "-"}</td>
      <td>${formatBytes(row.activation_bytes)}</td><td>${row.receptive_field ?? "whole input"}</td></tr>`).join("");
    document.getElementById("layers-wrap").scrollTop = 0;
    updateScrollCue();
    showMessage(message, "");
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

// The table scrolls inside its box: say so (how many rows, which way), and shade each edge it continues past.
function updateScrollCue() {
  const wrap = document.getElementById("layers-wrap"), rows = document.querySelectorAll("#layers tbody tr").length;
  const below = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight > 1;
  const right = wrap.scrollWidth - wrap.scrollLeft - wrap.clientWidth > 1;
  wrap.classList.toggle("more-below", below);
  wrap.classList.toggle("more-right", right);
  const down = wrap.scrollHeight > wrap.clientHeight + 1, across = wrap.scrollWidth > wrap.clientWidth + 1;
  const ways = [down && "down", across && "sideways"].filter(Boolean).join(" and ");
  document.getElementById("layers-cue").textContent = ways ? `${rows} layers: scroll the table ${ways} to see them all.` : "";
}

function describeModel() {
  const m = models.find((x) => x.name === modelSelect.value);
  if (!m) return;
  sizeInput.value = m.input_size.join("x");
  document.getElementById("paper").textContent = `${m.family} · ${m.paper}`;
}

async function init() {
  try {
    ({models} = await api("/api/zoo/models"));
    modelSelect.innerHTML = models.map((m) => `<option value="${escapeHtml(m.name)}">${escapeHtml(m.name)}</option>`).join("");
    const query = new URLSearchParams(location.search);
    modelSelect.value = models.some((m) => m.name === query.get("model")) ? query.get("model") :
      (models.some((m) => m.name === "resnet18") ? "resnet18" : models[0].name);
    describeModel();
    if (query.get("input_size")) sizeInput.value = query.get("input_size");
    await show();
  } catch (error) {
    showMessage(message, error.message, true);
  }
}

modelSelect.addEventListener("change", () => { describeModel(); show(); });
document.getElementById("layers-wrap").addEventListener("scroll", updateScrollCue, {passive: true});
window.addEventListener("resize", updateScrollCue);
document.getElementById("show").addEventListener("click", show);
sizeInput.addEventListener("keydown", (e) => { if (e.key === "Enter") show(); });
init();
