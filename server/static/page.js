// The page: drop or choose an image, see its look-alikes; click one to search from it.
// On a server with API keys it first asks for one, and keeps it for this tab (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const api = (collection, path) => `/v1/collections/${encodeURIComponent(collection)}${path}`;
const KEY = "lookalike-key";
const needsKey = document.body.dataset.needsKey === "yes";

function headers() {
  const key = needsKey ? sessionStorage.getItem(KEY) : null;
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// A problem's field messages, e.g. {"json": {"k": ["Must be ..."]}} -> ["k: Must be ..."].
function fieldMessages(errors, path = []) {
  if (Array.isArray(errors) && errors.every((m) => typeof m === "string")) {
    return errors.map((message) => (path.length ? `${path.join(".")}: ${message}` : message));
  }
  if (errors && typeof errors === "object") {
    return Object.entries(errors).flatMap(([name, inner]) =>
      fieldMessages(inner, path.length || !["json", "query", "multipart", "form", "files"].includes(name) ? [...path, name] : path));
  }
  return [];
}

// An answer for a collection the page no longer shows: dropped, it is no one's error.
class Superseded extends Error {}

class Problem extends Error {
  constructor(problem, status) {
    const fields = fieldMessages(problem.errors);
    super(fields.length ? fields.join("; ") : problem.detail || problem.title);
    this.status = status;
    this.fields = fields;
  }
}

async function call(path, options = {}) {
  const collection = $("collection").value;
  const response = await fetch(api(collection, path), { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if ($("collection").value !== collection) throw new Superseded(collection);
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ title: response.statusText }));
    if (response.status === 401 && needsKey) askForKey(problem.detail || problem.title);
    throw new Problem(problem, response.status);
  }
  return response;
}

function askForKey(why = "") {
  sessionStorage.removeItem(KEY);
  $("app").hidden = true;
  $("key-form").hidden = false;
  $("key-problem").textContent = why;
  $("key").focus();
}

function keyReady() {
  if (!needsKey) return true;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    location.reload();
  });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
  if (!sessionStorage.getItem(KEY)) {
    askForKey();
    return false;
  }
  $("forget-key").hidden = false;
  $("app").hidden = false;
  return true;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  $("problems").replaceChildren();
}

function failed(error) {
  if (error instanceof Superseded) return;
  if (error.status === 401 && needsKey) return; // the key form says why
  status(error.fields && error.fields.length > 1 ? "the request is not valid:" : error.message, true);
  if (error.fields && error.fields.length > 1) {
    for (const message of error.fields) $("problems").append(Object.assign(document.createElement("li"), { textContent: message }));
  }
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
    failed(error);
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
    failed(error);
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
    failed(error);
  }
}

function showView(name) {
  $("search-view").hidden = name !== "search";
  $("map-view").hidden = name !== "map";
  $("show-search").setAttribute("aria-pressed", String(name === "search"));
  $("show-map").setAttribute("aria-pressed", String(name === "map"));
  document.dispatchEvent(new CustomEvent("lookalike:view", { detail: name }));
}

$("file").addEventListener("change", (event) => event.target.files[0] && searchFile(event.target.files[0]));
// What one collection's searches left on the page: nothing of it stays under the next one's.
function clearResults() {
  $("grid").replaceChildren();
  $("query").hidden = true;
  $("query").removeAttribute("src");
  $("file").value = ""; // choosing the same file again searches the new collection
  $("prediction").hidden = true;
  $("prediction").textContent = "";
  status("");
}

$("collection").addEventListener("change", () => {
  clearResults();
  loadClassifiers();
  document.dispatchEvent(new CustomEvent("lookalike:collection"));
});
$("show-search").addEventListener("click", () => showView("search"));
$("show-map").addEventListener("click", () => showView("map"));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) searchFile(event.dataTransfer.files[0]);
});
const started = keyReady();
if (started) loadClassifiers();
