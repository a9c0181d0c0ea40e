// embedtool serve: the page. Vanilla JS over the JSON API (/docs lists it); no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
  "#9d755d", "#bab0ac", "#1f77b4", "#2ca02c"];
let uploaded = null;  // the last uploaded query file, for playing its matched range

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

function show(box, text, error = true) {
  box.hidden = !text;
  box.textContent = text || "";
  box.classList.toggle("error", error);
}

const fmt = (s) => Number(s).toFixed(1);

// A player for exactly [start, end) of a source: it starts at `start` and pauses at `end`.
function rangePlayer(src, start, end, title) {
  const audio = el("audio", { controls: "", preload: "none", src: `${src}#t=${start},${end}`,
    "data-start": start, "data-end": end });
  audio.addEventListener("play", () => {
    if (audio.currentTime < start - 0.05 || audio.currentTime >= end) audio.currentTime = start;
  });
  audio.addEventListener("timeupdate", () => { if (audio.currentTime >= end) audio.pause(); });
  return el("span", { class: "range" }, `${title} ${fmt(start)}–${fmt(end)} s`, audio);
}

// --- search -----------------------------------------------------------------------------------------------
function renderResults(list, answer, queryFile) {
  list.replaceChildren();
  for (const m of answer.matches) {
    const players = [rangePlayer(`/api/audio/${m.track_id}`, m.ref_start_s, m.ref_end_s, "match")];
    if (queryFile) players.push(rangePlayer(queryFile, m.query_start_s, m.query_end_s, "query"));
    list.append(el("li", { "data-track": m.track_id },
      el("div", { class: "head" },
        el("span", { class: "name" }, m.name),
        m.label ? el("span", { class: "label" }, m.label) : "",
        el("span", { class: "score" }, `score ${m.score.toFixed(3)} · ${m.windows} windows`),
        el("button", { class: "link", onclick: () => searchTrack(m.track_id, m.name) }, "search from this")),
      el("div", {}, ...players)));
  }
}

function describe(answer, what) {
  let text = `${answer.mode} for ${what}: ${answer.query.duration_s.toFixed(1)} s, ${answer.query.windows} windows`;
  if (answer.mode === "identify") {
    if (answer.no_match) text += " — no match above the calibrated threshold; the closest candidates:";
    else if (answer.decided_by === "fingerprint")
      text += ` — identified by fingerprint (landmarks agree at ${answer.fingerprint_hits} moments)`;
    else text += ` — identified (confidence ${answer.confidence.toFixed(2)}, threshold ${Number(answer.threshold).toFixed(2)})`;
  }
  return text;
}

async function searchTrack(trackId, name) {
  activate("search");
  $("#track-list").replaceChildren();
  show($("#message"), "");
  try {
    const params = new URLSearchParams({ track: trackId, mode: $("#mode").value, k: 10 });
    const answer = await api(`/api/search?${params}`);
    $("#query-info").textContent = describe(answer, name);
    renderResults($("#results"), answer, null);
  } catch (err) {
    show($("#message"), err.message);
  }
}

async function searchUpload(file) {
  show($("#message"), "");
  $("#query-info").textContent = `searching with ${file.name} …`;
  const form = new FormData();
  form.append("file", file);
  try {
    const answer = await api(`/api/search?mode=${$("#mode").value}&k=10`, { method: "POST", body: form });
    if (uploaded) URL.revokeObjectURL(uploaded);
    uploaded = URL.createObjectURL(file);
    $("#query-info").textContent = describe(answer, file.name);
    renderResults($("#results"), answer, uploaded);
  } catch (err) {
    $("#query-info").textContent = "";
    $("#results").replaceChildren();
    show($("#message"), err.message);
  }
}

let typing = null;
async function findTracks() {
  const q = $("#track-query").value.trim();
  const list = $("#track-list");
  if (!q) { list.replaceChildren(); return; }
  const found = await api(`/api/tracks?${new URLSearchParams({ q, limit: 30 })}`);
  list.replaceChildren(...found.tracks.map((t) => el("li", { "data-track": t.track_id,
    onclick: () => searchTrack(t.track_id, t.name) },
    el("span", {}, t.name), t.label ? el("span", { class: "label" }, t.label) : "")));
  if (!found.tracks.length) list.append(el("li", {}, "no track matches"));
}

// --- map --------------------------------------------------------------------------------------------------
let mapData = null;

function colourOf(value, keys) {
  const i = keys.indexOf(value);
  return i < 0 ? "#999" : PALETTE[i % PALETTE.length];
}

function drawMap() {
  const by = $("#colour-by").value;
  const svg = $("#map");
  const pts = mapData.points;
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 20 + (560 * (x - x0)) / (x1 - x0 || 1);
  const sy = (y) => 430 - (410 * (y - y0)) / (y1 - y0 || 1);
  const keys = [...new Set(pts.map((p) => p[by]))].sort((a, b) => (a > b ? 1 : -1));
  svg.replaceChildren();
  for (const p of pts) {
    const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    c.setAttribute("cx", sx(p.x)); c.setAttribute("cy", sy(p.y)); c.setAttribute("r", 6);
    c.setAttribute("fill", colourOf(p[by], keys));
    c.dataset.track = p.track_id;
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = `${p.name}${p.label ? ` (${p.label})` : ""}`;
    c.append(t);
    c.addEventListener("mouseenter", () => {
      $("#map-hover").textContent = `${p.name} · label ${p.label ?? "–"} · cluster ${p.cluster ?? "–"}`;
    });
    c.addEventListener("click", () => openPoint(p));
    svg.append(c);
  }
  $("#legend").replaceChildren(...keys.map((k) => el("li", {},
    el("span", { style: `background:${colourOf(k, keys)}` }), `${by} ${k ?? "none"}`)));
}

async function openPoint(p) {
  const player = rangePlayer(`/api/audio/${p.track_id}`, p.exemplar_start_s, p.exemplar_end_s, p.name);
  $("#map-player").replaceChildren(player);
  player.querySelector("audio").play().catch(() => {});
  try {
    const answer = await api(`/api/search?${new URLSearchParams({ track: p.track_id, k: 5 })}`);
    renderResults($("#map-results"), answer, null);
  } catch (err) {
    show($("#map-message"), err.message);
  }
}

async function loadMap() {
  if (mapData) return;
  show($("#map-message"), "computing the map …", false);
  try {
    mapData = await api("/api/map");
    show($("#map-message"), "");
    if (!mapData.has_clusters) $("#colour-by").value = "label";
    drawMap();
  } catch (err) {
    show($("#map-message"), err.message);
  }
}

// --- clusters ---------------------------------------------------------------------------------------------
async function loadClusters() {
  const box = $("#clusters");
  if (box.childElementCount) return;
  try {
    const c = await api("/api/clusters");
    const makeups = (c.labels && c.labels.composition) || {};
    const how = c.criterion === "fixed" ? "k fixed" : "k chosen by silhouette";
    const purity = c.labels ? `, label purity ${c.labels.purity.toFixed(2)}` : "";
    box.replaceChildren(el("p", {}, `${c.k} clusters of ${c.items} ${c.level}s (${how}${purity})`));
    c.sizes.forEach((size, i) => {
      const makeup = makeups[String(i)];
      const exemplars = (c.exemplars[String(i)] || []).map((e) =>
        el("div", {}, rangePlayer(`/api/audio/${e.track_id}`, e.start_s, e.end_s, e.name)));
      box.append(el("div", { class: "cluster", "data-cluster": i },
        el("h3", {}, `cluster ${i} · ${size} ${c.level}s`),
        makeup ? el("div", { class: "bars" }, ...Object.entries(makeup).map(([label, n]) =>
          el("span", { class: "label" }, `${label} ${n}`))) : "",
        ...exemplars));
    });
  } catch (err) {
    show($("#clusters-message"), err.message);
  }
}

// --- classify ---------------------------------------------------------------------------------------------
async function classify(file) {
  const out = $("#classify-result");
  out.replaceChildren();
  show($("#classify-message"), "");
  const form = new FormData();
  form.append("file", file);
  try {
    const r = await api("/api/classify", { method: "POST", body: form });
    const rows = Object.entries(r.probabilities).sort((a, b) => b[1] - a[1]).map(([label, p]) =>
      el("tr", {}, el("td", {}, label), el("td", {}, p.toFixed(3)),
        el("td", {}, el("span", { class: "bar", style: `width:${Math.round(p * 200)}px` }))));
    out.append(el("p", {}, `${file.name}: `, el("strong", { id: "predicted" }, r.label),
      ` (${r.duration_s.toFixed(1)} s)`), el("table", { class: "proba" }, ...rows));
  } catch (err) {
    show($("#classify-message"), err.message);
  }
}

// --- the page ---------------------------------------------------------------------------------------------
function activate(view) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  if (view === "map") loadMap();
  if (view === "clusters") loadClusters();
}

async function start() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => activate(b.dataset.view));
  $("#track-query").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(findTracks, 150); });
  $("#upload").addEventListener("change", (e) => e.target.files[0] && searchUpload(e.target.files[0]));
  $("#classify-upload").addEventListener("change", (e) => e.target.files[0] && classify(e.target.files[0]));
  $("#colour-by").addEventListener("change", () => mapData && drawMap());
  try {
    const s = await api("/api/status");
    $("#status").textContent = `${s.tracks} tracks · ${s.workspace}`;
    $("#report-link").hidden = !s.report;
    if (!s.search) show($("#message"), s.search_error);
    if (!s.classify) show($("#classify-message"), s.classify_error, false);
  } catch (err) {
    show($("#message"), err.message);
  }
  document.body.dataset.ready = "1";
}

start();
