// The page: drop or choose an image, see its look-alikes; click one to search from it.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path) => `/v1/collections/${encodeURIComponent($("collection").value)}${path}`;

function headers() {
  const key = $("key") ? $("key").value || localStorage.getItem("lookalike-key") : null;
  if ($("key") && key) localStorage.setItem("lookalike-key", key);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function call(path, options = {}) {
  const response = await fetch(api(path), { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ title: response.statusText }));
    throw new Error(problem.detail || problem.title);
  }
  return response;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function thumbnail(img, id) {
  const blob = await (await call(`/items/${id}/thumbnail`)).blob();
  img.src = URL.createObjectURL(blob);
}

function show(hits) {
  const grid = $("grid");
  grid.replaceChildren();
  for (const hit of hits) {
    const card = document.createElement("figure");
    card.className = "hit";
    card.dataset.id = hit.id;
    const img = document.createElement("img");
    img.alt = `item ${hit.id}`;
    thumbnail(img, hit.id).catch(() => {});
    const caption = document.createElement("figcaption");
    caption.innerHTML = `<span class="label"></span> <span class="distance"></span><br><span class="id"></span>`;
    caption.querySelector(".label").textContent = hit.label ?? "–";
    caption.querySelector(".distance").textContent = `d=${hit.distance.toFixed(3)}`;
    caption.querySelector(".id").textContent = `#${hit.id}`;
    card.append(img, caption);
    card.addEventListener("click", () => searchById(hit.id));
    grid.append(card);
  }
  status(`${hits.length} neighbours`);
}

async function searchFile(file) {
  $("query").src = URL.createObjectURL(file);
  $("query").hidden = false;
  status("searching…");
  const form = new FormData();
  form.append("image", file);
  form.append("k", $("k").value);
  try {
    const answer = await (await call("/search/images", { method: "POST", body: form })).json();
    show(answer.results[0].hits);
    await predict(file);
  } catch (error) {
    status(error.message, true);
  }
}

async function searchById(id) {
  status("searching…");
  try {
    const body = JSON.stringify({ id, k: Number($("k").value) });
    const answer = await (await call("/search", { method: "POST", body, headers: { "Content-Type": "application/json" } })).json();
    $("query").hidden = false;
    thumbnail($("query"), id).catch(() => {});
    $("prediction").hidden = true;
    show(answer.results[0].hits);
  } catch (error) {
    status(error.message, true);
  }
}

async function predict(file) {
  const name = $("classifier").value;
  $("prediction").hidden = !name;
  if (!name) return;
  const form = new FormData();
  form.append("image", file);
  form.append("k", "0");
  const answer = await (await call(`/classifiers/${encodeURIComponent(name)}/predict`, { method: "POST", body: form })).json();
  const prediction = answer.predictions[0];
  $("prediction").textContent = `${name}: ${prediction.label} (p=${prediction.probabilities[prediction.label].toFixed(3)})`;
}

async function loadClassifiers() {
  const select = $("classifier");
  select.replaceChildren(new Option("none", ""));
  try {
    const answer = await (await call("/classifiers")).json();
    for (const card of answer.classifiers) select.append(new Option(card.name, card.name));
    if (answer.classifiers.length) select.value = answer.classifiers[0].name;
  } catch (error) {
    status(error.message, true);
  }
}

$("file").addEventListener("change", (event) => event.target.files[0] && searchFile(event.target.files[0]));
$("collection").addEventListener("change", loadClassifiers);
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) searchFile(event.dataTransfer.files[0]);
});
if ($("key")) $("key").value = localStorage.getItem("lookalike-key") || "";
loadClassifiers();
