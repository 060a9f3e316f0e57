// The Map view: every item of the collection's stored map (GET .../map) as a point on a canvas.
// Points are written straight into the canvas's pixels (100k points draw in a few ms); a hover
// is answered from a grid of buckets over the map, so it reads only the points near the pointer.
// Uses page.js's $, call, Superseded, status, failed and searchById.
"use strict";

const GRID = 256; // buckets per side of the unit square
const HOVER_PIXELS = 8; // a point answers a hover within this many CSS pixels
const MARGIN = 0.94; // share of the canvas's shorter side the whole map fills
const PALETTE = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
  [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
  [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229],
];
const UNLABELLED = [90, 90, 90];
const FILTERED_OUT = [228, 228, 228];

const map = {
  loadedFor: null, points: null, shown: null, cellStart: null, cellItems: null,
  scale: 1, offsetX: 0, offsetY: 0, hovered: -1, dragFrom: null, dragged: false,
  frame: 0, thumbnails: new Map(), thumbTimer: 0,
};

const packed = ([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; // RGBA bytes, little-endian

async function loadMap() {
  const name = $("collection").value;
  if (map.loadedFor === name) return requestDraw();
  map.loadedFor = name;
  map.points = null;
  hideTip();
  $("map-count").textContent = "loading the map…";
  try {
    const answer = await (await call("/map")).json();
    map.points = {
      ids: answer.ids, labels: answer.labels, x: Float32Array.from(answer.x),
      y: Float32Array.from(answer.y), label: Int32Array.from(answer.label),
    };
  } catch (error) {
    if (error instanceof Superseded) return; // the collection's own load is under way
    map.loadedFor = null;
    $("map-count").textContent = error.message;
    return requestDraw();
  }
  fillLabelFilter();
  buildGrid();
  resetView();
}

function fillLabelFilter() {
  const select = $("map-label");
  select.replaceChildren(new Option("all labels", ""));
  map.points.labels.forEach((label, code) => select.append(new Option(label, String(code))));
  if (map.points.label.some((code) => code < 0)) select.append(new Option("(no label)", "-1"));
  applyFilter();
}

function applyFilter() {
  const { label } = map.points;
  const wanted = $("map-label").value;
  const code = Number(wanted);
  map.shown = new Uint8Array(label.length);
  let count = 0;
  for (let i = 0; i < label.length; i++) {
    if (wanted === "" || label[i] === code) { map.shown[i] = 1; count++; }
  }
  $("map-count").textContent = wanted === ""
    ? `${label.length.toLocaleString("en")} items on the map`
    : `${count.toLocaleString("en")} of ${label.length.toLocaleString("en")} items shown`;
  hideTip();
  requestDraw();
}

// Points bucketed by grid cell (a counting sort): cellItems[cellStart[c] .. cellStart[c + 1]].
function buildGrid() {
  const { x, y } = map.points;
  const cells = new Int32Array(x.length);
  const start = new Int32Array(GRID * GRID + 1);
  for (let i = 0; i < x.length; i++) {
    cells[i] = bucket(y[i]) * GRID + bucket(x[i]);
    start[cells[i] + 1]++;
  }
  for (let c = 0; c < GRID * GRID; c++) start[c + 1] += start[c];
  const next = start.slice(0, GRID * GRID);
  const items = new Int32Array(x.length);
  for (let i = 0; i < x.length; i++) items[next[cells[i]]++] = i;
  map.cellStart = start;
  map.cellItems = items;
}

const bucket = (v) => Math.min(GRID - 1, Math.max(0, Math.floor(v * GRID)));

function side() {
  const canvas = $("map");
  return Math.min(canvas.clientWidth, canvas.clientHeight) * MARGIN * map.scale;
}

function toScreen(x, y) {
  const canvas = $("map");
  const s = side();
  return [canvas.clientWidth / 2 + (x - 0.5) * s + map.offsetX, canvas.clientHeight / 2 - (y - 0.5) * s + map.offsetY];
}

function toMap(sx, sy) {
  const canvas = $("map");
  const s = side();
  return [(sx - canvas.clientWidth / 2 - map.offsetX) / s + 0.5, 0.5 - (sy - canvas.clientHeight / 2 - map.offsetY) / s];
}

function resetView() {
  map.scale = 1;
  map.offsetX = map.offsetY = 0;
  requestDraw();
}

function requestDraw() {
  if (!map.frame) map.frame = requestAnimationFrame(draw);
}

function draw() {
  map.frame = 0;
  const canvas = $("map");
  if ($("map-view").hidden) return;
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const pixels = new Uint32Array(image.data.buffer);
  pixels.fill(0xffffffff);
  if (map.points) {
    const dot = Math.max(2, Math.round(2 * ratio));
    const colours = map.points.labels.map((_, code) => packed(PALETTE[code % PALETTE.length]));
    plot(pixels, width, height, ratio, dot, 0, () => packed(FILTERED_OUT));
    plot(pixels, width, height, ratio, dot, 1, (code) => (code < 0 ? packed(UNLABELLED) : colours[code]));
  }
  context.putImageData(image, 0, 0);
  if (map.hovered >= 0) ring(context, ratio, map.hovered);
}

// The points whose `shown` flag equals `which`, each a dot x dot square of its colour.
function plot(pixels, width, height, ratio, dot, which, colourOf) {
  const { x, y, label } = map.points;
  const canvas = $("map");
  const s = side() * ratio;
  const left = (canvas.clientWidth / 2 + map.offsetX) * ratio - 0.5 * s;
  const top = (canvas.clientHeight / 2 + map.offsetY) * ratio + 0.5 * s;
  const half = dot >> 1;
  for (let i = 0; i < x.length; i++) {
    if (map.shown[i] !== which) continue;
    const px = Math.floor(left + x[i] * s) - half;
    const py = Math.floor(top - y[i] * s) - half;
    if (px < 0 || py < 0 || px + dot > width || py + dot > height) continue;
    const colour = colourOf(label[i]);
    for (let row = 0; row < dot; row++) pixels.fill(colour, (py + row) * width + px, (py + row) * width + px + dot);
  }
}

function ring(context, ratio, i) {
  const [sx, sy] = toScreen(map.points.x[i], map.points.y[i]);
  context.beginPath();
  context.arc(sx * ratio, sy * ratio, 6 * ratio, 0, 2 * Math.PI);
  context.lineWidth = 2 * ratio;
  context.strokeStyle = "#111";
  context.stroke();
}

// The shown point nearest (sx, sy) within HOVER_PIXELS, or -1: only the buckets around it are read.
function nearest(sx, sy) {
  if (!map.points) return -1;
  const [mx, my] = toMap(sx, sy);
  const reach = HOVER_PIXELS / side();
  const { x, y } = map.points;
  let best = -1;
  let bestDistance = reach * reach;
  for (let cy = bucket(my - reach); cy <= bucket(my + reach); cy++) {
    for (let cx = bucket(mx - reach); cx <= bucket(mx + reach); cx++) {
      const cell = cy * GRID + cx;
      for (let k = map.cellStart[cell]; k < map.cellStart[cell + 1]; k++) {
        const i = map.cellItems[k];
        const distance = (x[i] - mx) ** 2 + (y[i] - my) ** 2;
        if (map.shown[i] && distance < bestDistance) { best = i; bestDistance = distance; }
      }
    }
  }
  return best;
}

function hover(event) {
  const box = $("map").getBoundingClientRect();
  const found = nearest(event.clientX - box.left, event.clientY - box.top);
  if (found !== map.hovered) {
    map.hovered = found;
    if (found < 0) hideTip();
    else showTip(found, event.clientX - box.left, event.clientY - box.top);
    requestDraw();
  }
  $("map-tip").dataset.answeredMs = (performance.now() - event.timeStamp).toFixed(2);
}

function showTip(i, sx, sy) {
  const tip = $("map-tip");
  const { ids, labels, label } = map.points;
  tip.dataset.id = ids[i];
  tip.querySelector("figcaption").textContent = `${label[i] < 0 ? "(no label)" : labels[label[i]]} · #${ids[i]}`;
  const img = tip.querySelector("img");
  img.hidden = true;
  img.removeAttribute("src");
  tip.style.left = `${sx + 14}px`;
  tip.style.top = `${sy + 14}px`;
  tip.hidden = false;
  clearTimeout(map.thumbTimer);
  map.thumbTimer = setTimeout(() => tipThumbnail(ids[i]), 40); // not one fetch per point passed over
}

async function tipThumbnail(id) {
  let url = map.thumbnails.get(id);
  if (url === undefined) {
    try {
      url = URL.createObjectURL(await (await call(`/items/${id}/thumbnail`)).blob());
    } catch (error) {
      if (error instanceof Superseded) return; // another collection's item of that id
      url = null; // moved, unreadable, or a collection without files
    }
    if (map.thumbnails.size > 500) map.thumbnails.clear();
    map.thumbnails.set(id, url);
  }
  const tip = $("map-tip");
  if (url && tip.dataset.id === String(id) && !tip.hidden) {
    const img = tip.querySelector("img");
    img.src = url;
    img.hidden = false;
  }
}

function hideTip() {
  $("map-tip").hidden = true;
  delete $("map-tip").dataset.id;
  map.hovered = -1;
}

function zoom(event) {
  event.preventDefault();
  const box = $("map").getBoundingClientRect();
  const sx = event.clientX - box.left;
  const sy = event.clientY - box.top;
  const [mx, my] = toMap(sx, sy);
  map.scale = Math.min(500, Math.max(0.5, map.scale * Math.exp(-event.deltaY * 0.0015)));
  const s = side();
  const canvas = $("map");
  map.offsetX = sx - canvas.clientWidth / 2 - (mx - 0.5) * s;
  map.offsetY = sy - canvas.clientHeight / 2 + (my - 0.5) * s;
  hideTip();
  requestDraw();
}

function pointerMove(event) {
  if (map.dragFrom && event.buttons & 1) {
    const [fromX, fromY] = map.dragFrom;
    if (Math.abs(event.clientX - fromX) + Math.abs(event.clientY - fromY) > 3) map.dragged = true;
    if (map.dragged) {
      map.offsetX += event.movementX;
      map.offsetY += event.movementY;
      hideTip();
      return requestDraw();
    }
  }
  hover(event);
}

function pointClicked() {
  if (map.dragged || map.hovered < 0) return;
  searchById(map.points.ids[map.hovered]);
}

const canvas = $("map");
canvas.addEventListener("mousemove", pointerMove);
canvas.addEventListener("mouseleave", () => { hideTip(); requestDraw(); });
canvas.addEventListener("mousedown", (event) => { map.dragFrom = [event.clientX, event.clientY]; map.dragged = false; });
canvas.addEventListener("mouseup", () => { map.dragFrom = null; });
canvas.addEventListener("click", pointClicked);
canvas.addEventListener("wheel", zoom, { passive: false });
$("map-label").addEventListener("change", applyFilter);
$("map-reset").addEventListener("click", resetView);
window.addEventListener("resize", requestDraw);
document.addEventListener("lookalike:view", (event) => event.detail === "map" && loadMap());
document.addEventListener("lookalike:collection", () => {
  forgetMap();
  if (!$("map-view").hidden) loadMap();
});

// Nothing of the last collection's map stays: points, label filter (refilled when its map is
// loaded), thumbnails (ids repeat across collections), hovered point, zoom and pan.
function forgetMap() {
  Object.assign(map, { loadedFor: null, points: null, shown: null, cellStart: null, cellItems: null });
  for (const url of map.thumbnails.values()) if (url) URL.revokeObjectURL(url);
  map.thumbnails.clear();
  $("map-label").replaceChildren(new Option("all labels", ""));
  $("map-count").textContent = "";
  hideTip();
  resetView();
}

// For scripts and tests: where an item's point is on the screen (client pixels), or null.
window.lookalikeMap = {
  pointOnScreen(id) {
    const i = map.points ? map.points.ids.indexOf(id) : -1;
    if (i < 0) return null;
    const box = $("map").getBoundingClientRect();
    const [sx, sy] = toScreen(map.points.x[i], map.points.y[i]);
    return { x: box.left + sx, y: box.top + sy };
  },
  loaded: () => map.points !== null && map.loadedFor === $("collection").value,
};
