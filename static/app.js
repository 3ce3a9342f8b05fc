// Fooling Lab: the little JavaScript of our own. htmx does requests and live updates; this file
// adds full screen, keyboard control for demos, and drawing / dropping images on the score page.
"use strict";

document.addEventListener("click", (ev) => {
  const fs = ev.target.closest("[data-fullscreen]");
  if (!fs) return;
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen();
});

// Demo keys on a run's page: Space pause/resume, Right arrow step, F full screen.
document.addEventListener("keydown", (ev) => {
  if (ev.target.closest("input, textarea, select")) return;
  const press = (action) => document.querySelector(`[data-action="${action}"]`)?.click();
  if (ev.key === " ") {
    const status = document.querySelector("[data-status]")?.dataset.status;
    press(status === "paused" ? "resume" : "pause");
    ev.preventDefault();
  } else if (ev.key === "ArrowRight") {
    press("step");
  } else if (ev.key === "f" || ev.key === "F") {
    document.querySelector("[data-fullscreen]")?.click();
  }
});

// Score page: draw a digit (white on black, like MNIST) or drop an image onto the form.
function setupScore() {
  const form = document.querySelector("form[data-score]");
  if (!form) return;
  const input = form.querySelector("input[type=file]");
  const canvas = form.querySelector("canvas");
  const drop = form.querySelector("[data-drop]");
  const useFiles = (files) => {
    const dt = new DataTransfer();
    for (const f of files) dt.items.add(f);
    input.files = dt.files;
    form.querySelector("[data-picked]").textContent = [...files].map((f) => f.name).join(", ");
  };
  if (drop) {
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
    drop.addEventListener("drop", (e) => useFiles(e.dataTransfer.files));
  }
  if (!canvas) return;
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...at(e)); ctx.strokeStyle = "#fff"; ctx.lineWidth = canvas.width / 12; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    canvas.toBlob((blob) => useFiles([new File([blob], "drawing.png", { type: "image/png" })]), "image/png");
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  form.querySelector("[data-clear]")?.addEventListener("click", (e) => { e.preventDefault(); clear(); });
}
document.addEventListener("DOMContentLoaded", setupScore);

// The logistic-regression explainer: recompute sigmoid(w . (x + eps sign(w))) as the slider moves.
function setupLogistic() {
  const box = document.querySelector("[data-logistic]");
  if (!box) return;
  const w = JSON.parse(box.dataset.w), x = JSON.parse(box.dataset.x);
  const sigmoid = (z) => 1 / (1 + Math.exp(-z));
  const slider = box.querySelector("[data-slider]");
  const update = () => {
    const eps = parseFloat(slider.value);
    const y = x.map((xi, i) => xi + eps * Math.sign(w[i]));
    const wy = y.reduce((s, yi, i) => s + yi * w[i], 0);
    box.querySelectorAll("[data-y]").forEach((td, i) => { td.textContent = +y[i].toFixed(2); });
    box.querySelector("[data-eps]").textContent = eps;
    box.querySelector("[data-wy]").textContent = +wy.toFixed(2);
    box.querySelector("[data-py]").textContent = sigmoid(wy).toFixed(4);
  };
  slider.addEventListener("input", update);
}
document.addEventListener("DOMContentLoaded", setupLogistic);

// Forms that destroy something ask first (data-confirm holds the question).
document.addEventListener("submit", (ev) => {
  const q = ev.target.closest("form[data-confirm]")?.dataset.confirm;
  if (q && !window.confirm(q)) ev.preventDefault();
});

// A study's exposure time: its image hides this many milliseconds after it has loaded.
document.querySelectorAll("img[data-expose-ms]").forEach((img) => {
  const hide = () => setTimeout(() => img.classList.add("exposed"), Number(img.dataset.exposeMs));
  if (img.complete) hide(); else img.addEventListener("load", hide, { once: true });
});
