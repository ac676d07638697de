// Shared by the four pages: the navigation bar, JSON requests with readable errors, small formatters.
"use strict";

const PAGES = [["/", "Draw"], ["/photo", "Photo"], ["/train", "Train"], ["/zoo", "Zoo"]];
PAGES.push(["/explain", "Explain"]);
PAGES.push(["/teach", "Teach"]);
PAGES.push(["/detect", "Detect"]);

function renderHeader() {
  const header = document.createElement("header");
  const links = PAGES.map(([href, title]) =>
    `<a href="${href}" class="${location.pathname === href ? "active" : ""}">${title}</a>`).join("");
  header.innerHTML = `<span class="brand">cnnkit playground</span><nav>${links}</nav>`;
  document.body.prepend(header);
}

// fetch() that returns parsed JSON or throws an Error carrying the server's {"error": ...} message.
async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const text = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(text);
  }
  return body;
}

function showMessage(element, text, isError = false) {
  element.textContent = text || "";
  element.classList.toggle("error", Boolean(isError));
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function formatCount(value) {
  for (const [unit, scale] of [["G", 1e9], ["M", 1e6], ["K", 1e3]]) {
    if (Math.abs(value) >= scale) return `${(value / scale).toFixed(2)} ${unit}`;
  }
  return String(value);
}

function formatBytes(value) {
  for (const [unit, scale] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
    if (Math.abs(value) >= scale) return `${(value / scale).toFixed(2)} ${unit}`;
  }
  return `${value} B`;
}

// Horizontal probability bars as SVG: rows of [label, probability in 0..1]; the largest is highlighted.
function barChart(svg, rows, width = 420) {
  const rowHeight = 24, labelWidth = 130, barWidth = width - labelWidth - 60;
  const best = rows.reduce((a, b) => (b[1] > a[1] ? b : a), rows[0] || ["", 0]);
  svg.setAttribute("width", width);
  svg.setAttribute("height", rows.length * rowHeight + 4);
  svg.setAttribute("viewBox", `0 0 ${width} ${rows.length * rowHeight + 4}`);
  svg.innerHTML = rows.map(([label, p], i) => {
    const y = i * rowHeight + 2, w = Math.max(1, p * barWidth);
    const colour = label === best[0] ? "#2f6fdf" : "#a9bde3";
    return `<g class="bar-row" data-label="${escapeHtml(label)}">
      <text x="${labelWidth - 8}" y="${y + 16}" text-anchor="end" font-size="13">${escapeHtml(label)}</text>
      <rect x="${labelWidth}" y="${y + 4}" width="${w.toFixed(1)}" height="15" rx="3" fill="${colour}"></rect>
      <text x="${labelWidth + w + 6}" y="${y + 16}" font-size="12" fill="#5d6678">${(100 * p).toFixed(1)}%</text></g>`;
  }).join("");
}

document.addEventListener("DOMContentLoaded", renderHeader);
