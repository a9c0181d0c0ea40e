// embedtool serve: the page. Vanilla JS over the JSON API (/docs lists it); no build step, no inline script (the
// server's Content-Security-Policy allows only this file).
"use strict";

const $ = (sel) => document.querySelector(sel);
const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
  "#9d755d", "#bab0ac", "#1f77b4", "#2ca02c"];
// Bidirectional overrides and isolates are shown as their code point: "‮gnp.exe" must not read "exe.png".
const BIDI = /[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g;
const visible = (text) => String(text).replace(BIDI, (c) => `⟨U+${c.codePointAt(0).toString(16).toUpperCase()}⟩`);

let exportColumns = [];
let last = null;  // the last search: {kind: "track", track, name}, {kind: "seeds", seeds} or {kind: "file", file}
let seeds = [];  // the tracks picked for "more like these": {track_id, name}
let uploadedUrl = null;  // the uploaded query file as an object URL, for its players

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the CSP, unlike a style attribute
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(visible(c)));
  return node;
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({ error: `The server answered HTTP ${res.status}.` }));
  if (!res.ok) throw new Error(body.error || `The server answered HTTP ${res.status}.`);
  return body;
}

function show(box, text, error = true) {
  box.hidden = !text;
  box.textContent = text ? visible(text) : "";
  box.classList.toggle("error", error);
}

const fmt = (s) => Number(s).toFixed(1);

// --- players ----------------------------------------------------------------------------------------------
// A player for [start, end) of a source: it starts at `start` and pauses at `end` on a timer armed for the time
// left (re-armed on seek and rate change), not on `timeupdate`, which fires only every ~250 ms.
function rangePlayer(src, start, end, title) {
  const audio = el("audio", { controls: "", preload: "none", src: `${src}#t=${start}`,
    "data-start": start, "data-end": end });
  let stopAt = end;
  let timer = null;
  const arm = () => {
    clearTimeout(timer);
    if (audio.paused) return;
    const left = (stopAt - audio.currentTime) / (audio.playbackRate || 1);
    if (left <= 0.004) { audio.pause(); return; }
    timer = setTimeout(arm, Math.max(1, left * 1000 - 4));  // fires just before; checks again
  };
  audio.addEventListener("play", () => {
    if (audio.currentTime < start - 0.05 || audio.currentTime >= stopAt) audio.currentTime = start;
  });
  for (const ev of ["playing", "seeked", "ratechange"]) audio.addEventListener(ev, arm);
  audio.addEventListener("pause", () => clearTimeout(timer));
  // Play from `from` to `until` (a click on a timeline); the range's own play button goes back to the range.
  audio.playFrom = (from, until) => {
    stopAt = until;
    audio.currentTime = from;
    audio.play().catch(() => {});
    const reset = () => { stopAt = end; audio.removeEventListener("pause", reset); };
    audio.addEventListener("pause", reset);
  };
  return el("span", { class: "range" }, `${title} ${fmt(start)}–${fmt(end)} s`, audio);
}

// A timeline of a whole track (or the query) with a range marked; a click (or Enter) plays from that point to
// the end of the range when inside it, else for the range's length.
// Loudness envelopes (0..1 per step) for the timelines: a library track's from the server (its stored features),
// an uploaded file's decoded here.
const envelopes = new Map();
const BINS = 200;

function trackEnvelope(trackId) {
  if (!envelopes.has(trackId)) {
    envelopes.set(trackId, api(`/api/envelope/${encodeURIComponent(trackId)}?bins=${BINS}`).then((e) => e.levels));
  }
  return envelopes.get(trackId);
}

async function fileEnvelope(file) {
  const audio = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(await file.arrayBuffer());
  const data = audio.getChannelData(0);
  const step = Math.max(1, Math.floor(data.length / BINS));
  const db = [];
  for (let i = 0; i < BINS; i++) {
    let peak = 0;
    for (let j = i * step; j < Math.min(data.length, (i + 1) * step); j++) peak = Math.max(peak, Math.abs(data[j]));
    db.push(20 * Math.log10(Math.max(peak, 1e-6)));
  }
  const top = Math.max(...db);
  return db.map((v) => Math.max(0, Math.min(1, (v - (top - 60)) / 60)));
}

function drawEnvelope(canvas, levels) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#9aa3b5";
  const w = width / levels.length;
  levels.forEach((v, i) => {
    const h = Math.max(1, v * height);
    ctx.fillRect(i * w, (height - h) / 2, Math.max(1, w - 0.5), h);
  });
}

function timeline(player, duration, start, end, what, levels = null) {
  const audio = player.querySelector("audio");
  const total = Math.max(duration || end, end, 0.001);
  const mark = el("div", { class: "mark", style: `left:${(100 * start) / total}%;width:${Math.max(0.6, (100 * (end - start)) / total)}%` });
  const head = el("div", { class: "playhead", hidden: "" });
  const wave = el("canvas", { class: "wave", width: 400, height: 22 });
  if (levels) levels.then((l) => drawEnvelope(wave, l)).catch(() => {});  // no envelope: the bar stays plain
  const bar = el("div", { class: "timeline", tabindex: "0", role: "button", "data-duration": total,
    "aria-label": `${what}: ${fmt(total)} s, matched ${fmt(start)}–${fmt(end)} s; click to play from a point, Enter plays the range` },
  wave, mark, head, el("span", { class: "ends" }, `0 s`), el("span", { class: "ends right" }, `${fmt(total)} s`));
  const playAt = (t) => {
    const until = t >= start && t < end ? end : Math.min(total, t + Math.max(end - start, 0.5));
    audio.playFrom(t, until);
  };
  bar.addEventListener("click", (e) => {
    const box = bar.getBoundingClientRect();
    playAt(Math.max(0, Math.min(total, ((e.clientX - box.left) / box.width) * total)));
  });
  bar.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); playAt(start); }
  });
  audio.addEventListener("timeupdate", () => {  // only the picture follows timeupdate; stopping does not
    head.hidden = false;
    head.style.left = `${(100 * audio.currentTime) / total}%`;
  });
  return el("div", { class: "where" }, el("span", { class: "what" }, what), bar);
}

// --- search -----------------------------------------------------------------------------------------------
function renderResults(list, answer, querySrc, queryLevels = null) {
  list.replaceChildren();
  for (const m of answer.matches) {
    const match = rangePlayer(`/api/audio/${encodeURIComponent(m.track_id)}`, m.ref_start_s, m.ref_end_s, "match");
    const rows = [timeline(match, m.duration_s, m.ref_start_s, m.ref_end_s, "match in this track",
      trackEnvelope(m.track_id)), match];
    if (querySrc) {
      const q = rangePlayer(querySrc, m.query_start_s, m.query_end_s, "query");
      rows.push(timeline(q, answer.query.duration_s, m.query_start_s, m.query_end_s, "in the query", queryLevels), q);
    }
    list.append(el("li", { "data-track": m.track_id },
      el("div", { class: "head" },
        el("span", { class: "name" }, m.name),
        m.label ? el("span", { class: "label" }, m.label) : "",
        el("span", { class: "score" }, `score ${m.score.toFixed(3)} · ${m.windows} windows`),
        el("button", { type: "button", class: "link", onclick: () => searchTrack(m.track_id, { push: true }) },
          "search from this"),
        el("button", { type: "button", class: "add-seed", onclick: () => toggleSeed({ track_id: m.track_id, name: m.name }) },
          "add as seed")),
      el("div", { class: "players" }, ...rows)));
  }
  if (!answer.matches.length) list.append(el("li", {}, "no tracks found"));
}

function describe(answer, what) {
  let text = `${answer.mode} for ${what}: ${answer.query.duration_s.toFixed(2)} s, ${answer.query.windows} windows`;
  if (answer.mode === "identify") {
    if (answer.no_match) text += " — no match above the calibrated threshold; the closest candidates:";
    else if (answer.decided_by === "fingerprint")
      text += ` — identified by fingerprint (landmarks agree at ${answer.fingerprint_hits} moments)`;
    else text += ` — identified (confidence ${answer.confidence.toFixed(2)}, threshold ${Number(answer.threshold).toFixed(2)})`;
  }
  if (answer.note) text += `. ${answer.note}`;
  return text;
}

function clearResults() {
  $("#query-info").textContent = "";
  $("#query-player").replaceChildren();
  $("#results").replaceChildren();
  $("#export").hidden = true;
}

const kValue = () => Math.max(1, Math.min(100, parseInt($("#k").value, 10) || 10));

function searchUrl(track) {
  return `/?${new URLSearchParams({ track, mode: $("#mode").value, k: kValue() })}`;
}

// --- several seeds: "more like these" -----------------------------------------------------------------------
// The address of a search from several seeds repeats track= (`/?track=A&track=B&combine=rrf&k=10`).
function seedsParams() {
  const params = new URLSearchParams();
  for (const s of seeds) params.append("track", s.track_id);
  params.set("mode", "similar");
  params.set("k", kValue());
  params.set("combine", $("#combine").value);
  return params;
}

function drawSeeds() {
  $("#seeds").hidden = !seeds.length;
  $("#seed-list").replaceChildren(...seeds.map((s) => el("li", { "data-track": s.track_id }, s.name,
    el("button", { type: "button", "aria-label": `remove seed ${s.name}`, onclick: () => toggleSeed(s) }, "×"))));
  $("#more-like-these").textContent = `more like ${seeds.length === 1 ? "this" : `these ${seeds.length}`}`;
  const picked = new Set(seeds.map((s) => s.track_id));
  for (const li of trackItems()) li.classList.toggle("seed", picked.has(li.dataset.track));
}

function toggleSeed(track) {
  const at = seeds.findIndex((s) => s.track_id === track.track_id);
  if (at >= 0) seeds.splice(at, 1); else seeds.push({ track_id: track.track_id, name: track.name });
  drawSeeds();
}

async function searchSeeds({ push = false } = {}) {
  if (!seeds.length) return;
  activate("search");
  closeTrackList();
  show($("#message"), "");
  $("#mode").value = "similar";  // several seeds are answered in similar mode
  const params = seedsParams();
  if (push) history.pushState(null, "", `/?${params}`); else history.replaceState(null, "", `/?${params}`);
  $("#query-info").textContent = "searching …";
  try {
    const answer = await api(`/api/search?${params}`);
    for (const s of answer.query.seeds) {  // names for seeds that came from the address
      const known = seeds.find((x) => x.track_id === s.library_track);
      if (known && s.name) known.name = s.name;
    }
    drawSeeds();
    const names = answer.query.seeds.map((s) => s.name || s.given);
    last = { kind: "seeds", seeds: seeds.map((s) => s.track_id), name: names.join(" + "), answer };
    const how = answer.query.combine === "mean" ? "the mean of their vectors" : "rank fusion of their answers";
    $("#query-info").textContent = visible(`similar to ${names.length} seeds together (${how}): ${names.join(", ")}; ` +
      "their own tracks are left out");
    $("#query-player").replaceChildren();
    renderResults($("#results"), answer, null);
    $("#export").hidden = false;
  } catch (err) {
    clearResults();
    show($("#message"), err.message);
  }
}

// A library track's search; `push` adds it to the history (so Back returns to the previous search).
async function searchTrack(trackId, { push = false } = {}) {
  activate("search");
  closeTrackList();
  show($("#message"), "");
  if (push) history.pushState(null, "", searchUrl(trackId));
  else history.replaceState(null, "", searchUrl(trackId));
  $("#query-info").textContent = "searching …";
  try {
    const params = new URLSearchParams({ track: trackId, mode: $("#mode").value, k: kValue() });
    const answer = await api(`/api/search?${params}`);
    last = { kind: "track", track: trackId, name: answer.query.name || trackId, answer };
    const src = `/api/audio/${encodeURIComponent(trackId)}`;
    $("#query-info").textContent = visible(describe(answer, last.name));
    $("#query-player").replaceChildren(el("span", { class: "range" }, "query",
      el("audio", { controls: "", preload: "none", src, id: "query-audio" })));
    renderResults($("#results"), answer, src, trackEnvelope(trackId));
    $("#export").hidden = false;
  } catch (err) {
    clearResults();
    show($("#message"), err.message);
  }
}

async function searchUpload(file) {
  activate("search");
  closeTrackList();
  show($("#message"), "");
  $("#query-info").textContent = visible(`searching with ${file.name} …`);
  const form = new FormData();
  form.append("file", file);
  try {
    const params = new URLSearchParams({ mode: $("#mode").value, k: kValue() });
    const answer = await api(`/api/search?${params}`, { method: "POST", body: form });
    if (uploadedUrl) URL.revokeObjectURL(uploadedUrl);
    uploadedUrl = URL.createObjectURL(file);
    last = { kind: "file", file, name: file.name, answer };
    history.replaceState(null, "", `/?${new URLSearchParams({ mode: $("#mode").value, k: kValue() })}`);
    $("#query-info").textContent = visible(describe(answer, file.name));
    $("#query-player").replaceChildren(el("span", { class: "range" }, "query",
      el("audio", { controls: "", preload: "metadata", src: uploadedUrl, id: "query-audio" })));
    renderResults($("#results"), answer, uploadedUrl, fileEnvelope(file));
    $("#export").hidden = false;
  } catch (err) {
    clearResults();
    show($("#message"), err.message);
  }
}

// The last search again (after a change of mode or k), for a library track or an uploaded file alike.
function rerun() {
  if (!last) return;
  if (last.kind === "track") searchTrack(last.track, { push: true });
  else if (last.kind === "seeds") searchSeeds({ push: true });
  else searchUpload(last.file);
}

// --- export -----------------------------------------------------------------------------------------------
// The same columns as `embedtool neighbours --format csv`: one row per matched track.
const FLOAT_COLUMNS = new Set(["score", "query_start_s", "query_end_s", "ref_start_s", "ref_end_s", "confidence"]);

function csvCell(column, value) {
  if (value === null || value === undefined) return "";
  let text;
  if (typeof value === "boolean") text = value ? "True" : "False";  // as Python's csv writes them
  else if (typeof value === "number" && FLOAT_COLUMNS.has(column) && Number.isInteger(value)) text = value.toFixed(1);
  else text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function exportRows(answer, query) {
  const head = { query, mode: answer.mode, no_match: answer.no_match, confidence: answer.confidence,
    decided_by: answer.decided_by, fingerprint_hits: answer.fingerprint_hits };
  const matches = answer.matches.length ? answer.matches : [{}];
  return matches.map((m) => exportColumns.map((c) => csvCell(c, c in m ? m[c] : head[c])).join(","));
}

function download(text, type, name) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name, hidden: "" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// An M3U8 playlist of the answer's tracks, as `embedtool neighbours --format m3u` writes it.
function m3uText(answer) {
  const lines = ["#EXTM3U"];
  for (const m of answer.matches) {
    if (!m.path) continue;
    const seconds = m.duration_s === null || m.duration_s === undefined ? -1 : Math.round(m.duration_s);
    const stem = String(m.path).split(/[\\/]/).pop().replace(/\.[^.]*$/, "");
    lines.push(`#EXTINF:${seconds},${stem.split(/\s+/).join(" ")}`, m.path);
  }
  return lines.join("\n") + "\n";
}

function exportAs(format) {
  if (!last) return;
  const query = last.kind === "track" ? last.track : last.kind === "seeds" ? last.seeds.join(" + ") : last.name;
  const base = `neighbours-${String(last.name).replace(/[^\w.-]+/g, "_").slice(0, 60)}`;
  if (format === "m3u") {
    download(m3uText(last.answer), "audio/x-mpegurl", `${base}.m3u8`);
  } else if (format === "csv") {
    download([exportColumns.join(","), ...exportRows(last.answer, query)].join("\n") + "\n", "text/csv", `${base}.csv`);
  } else {
    const answer = { ...last.answer, query: { given: query, ...last.answer.query } };
    download(JSON.stringify(answer, null, 2) + "\n", "application/json", `${base}.json`);
  }
}

// --- the track list (keyboard: ↓/↑ move, Enter searches, Escape goes back to the box) --------------------
let typing = null;
let findSeq = 0;

let active = -1;  // the chosen item of the track list (focus stays on the list: aria-activedescendant)

function trackItems() { return [...document.querySelectorAll("#track-list li[data-track]")]; }

function closeTrackList() {
  $("#track-list").replaceChildren();
  $("#track-list").removeAttribute("aria-activedescendant");
  $("#track-query").setAttribute("aria-expanded", "false");
  active = -1;
}

function selectItem(index) {
  const items = trackItems();
  const list = $("#track-list");
  if (!items.length) return;
  active = Math.max(0, Math.min(items.length - 1, index));
  for (const [j, li] of items.entries()) li.setAttribute("aria-selected", j === active ? "true" : "false");
  items[active].scrollIntoView({ block: "nearest" });
  list.setAttribute("aria-activedescendant", items[active].id);
  if (document.activeElement !== list) list.focus();
}

async function findTracks() {
  const q = $("#track-query").value.trim();
  const list = $("#track-list");
  const seq = ++findSeq;
  if (!q) { closeTrackList(); return; }
  const found = await api(`/api/tracks?${new URLSearchParams({ q, limit: 30 })}`);
  if (seq !== findSeq) return;  // a later keystroke's answer wins
  active = -1;
  list.replaceChildren(...found.tracks.map((t, i) => el("li", { "data-track": t.track_id, id: `track-${i}`,
    role: "option", "aria-selected": "false", "data-name": t.name,
    onclick: (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey) toggleSeed(t);  // pick a seed; the list stays open
      else searchTrack(t.track_id, { push: true });
    } },
  el("span", {}, t.name), t.label ? el("span", { class: "label" }, t.label) : "")));
  drawSeeds();
  if (!found.tracks.length) list.append(el("li", {}, "no track matches"));
  $("#track-query").setAttribute("aria-expanded", "true");
}

function listKeys(e) {
  const items = trackItems();
  const at = active;
  if (e.key === "ArrowDown") { e.preventDefault(); selectItem(at + 1); }
  else if (e.key === "ArrowUp") {
    e.preventDefault();
    if (at <= 0) $("#track-query").focus(); else selectItem(at - 1);
  } else if (e.key === "Home") { e.preventDefault(); selectItem(0); }
  else if (e.key === "End") { e.preventDefault(); selectItem(items.length - 1); }
  else if (e.key === "Enter" && at >= 0) { e.preventDefault(); searchTrack(items[at].dataset.track, { push: true }); }
  else if (e.key === " " && at >= 0) {
    e.preventDefault();
    toggleSeed({ track_id: items[at].dataset.track, name: items[at].dataset.name });
  }
  else if (e.key === "Escape") { e.preventDefault(); $("#track-query").focus(); }
}

async function queryKeys(e) {
  if (e.key === "ArrowDown") {
    e.preventDefault();
    clearTimeout(typing);
    if (!trackItems().length) await findTracks();
    selectItem(0);
  } else if (e.key === "Enter") {
    e.preventDefault();
    clearTimeout(typing);
    await findTracks();
    const items = trackItems();
    if (items.length) searchTrack(items[0].dataset.track, { push: true });
  } else if (e.key === "Escape") closeTrackList();
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
    c.setAttribute("tabindex", "0");
    c.dataset.track = p.track_id;
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = visible(`${p.name}${p.label ? ` (${p.label})` : ""}`);
    c.append(t);
    const hover = () => {
      $("#map-hover").textContent = visible(`${p.name} · label ${p.label ?? "–"} · cluster ${p.cluster ?? "–"}`);
    };
    c.addEventListener("mouseenter", hover);
    c.addEventListener("focus", hover);
    c.addEventListener("click", () => openPoint(p));
    c.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openPoint(p); } });
    svg.append(c);
  }
  $("#legend").replaceChildren(...keys.map((k) => el("li", {},
    el("span", { style: `background:${colourOf(k, keys)}` }), `${by} ${k ?? "none"}`)));
}

async function openPoint(p) {
  const player = rangePlayer(`/api/audio/${encodeURIComponent(p.track_id)}`, p.exemplar_start_s, p.exemplar_end_s, p.name);
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
        el("div", {}, rangePlayer(`/api/audio/${encodeURIComponent(e.track_id)}`, e.start_s, e.end_s, e.name)));
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

// --- duplicates -------------------------------------------------------------------------------------------
// A file of a group: its name, and a player of the passage when the server streams it (a library track).
function dupFile(f, start, end) {
  if (!f.playable) return el("div", { class: "dup-file" }, f.name, el("span", { class: "hint" }, " (copy not served)"));
  return el("div", { class: "dup-file" }, f.name,
    rangePlayer(`/api/audio/${encodeURIComponent(f.track_id)}`, start, end, f.name));
}

async function loadDuplicates() {
  const box = $("#duplicates");
  if (box.childElementCount) return;
  show($("#duplicates-message"), "finding duplicates…", false);
  try {
    const d = await api("/api/duplicates");
    show($("#duplicates-message"), "");
    const n = d.counts;
    box.replaceChildren(el("p", { id: "duplicates-summary" }, `${d.groups.length} groups among ${d.tracks} tracks: ` +
      `${n.exact} exact copies, ${n["near-copy"]} near-copies, ${n.shared} shared passages`));
    for (const g of d.groups) {
      const items = g.relations.flatMap((r) => r.passages.map((p) => el("li", {},
        el("span", { class: "label" }, r.kind),
        r.kind === "shared" ? ` ${fmt(p.a_start_s)}–${fmt(p.a_end_s)} s = ${fmt(p.b_start_s)}–${fmt(p.b_end_s)} s`
          : ` ${Math.round(100 * r.coverage_a)}% / ${Math.round(100 * r.coverage_b)}% agree`,
        dupFile(r.a, p.a_start_s, p.a_end_s), dupFile(r.b, p.b_start_s, p.b_end_s))));
      box.append(el("div", { class: "dup-group", "data-group": g.group, "data-kind": g.kind },
        el("h3", {}, `group ${g.group} · ${g.kind} · ${g.files.length} files`), el("ul", {}, ...items)));
    }
  } catch (err) {
    show($("#duplicates-message"), err.message);
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
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.view === view);
    b.setAttribute("aria-pressed", b.dataset.view === view ? "true" : "false");
  }
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  if (view === "map") loadMap();
  if (view === "clusters") loadClusters();
  if (view === "duplicates") loadDuplicates();
}

// The search the address names (`/?track=ID&mode=similar&k=10`): on load, and on Back/Forward.
function fromAddress() {
  const params = new URLSearchParams(location.search);
  const mode = params.get("mode");
  if (mode === "similar" || mode === "identify") $("#mode").value = mode;
  if (params.get("k")) $("#k").value = Math.max(1, Math.min(100, parseInt(params.get("k"), 10) || 10));
  const tracks = params.getAll("track");
  const combine = params.get("combine");
  if (combine === "rrf" || combine === "mean") $("#combine").value = combine;
  if (tracks.length > 1 || (tracks.length && combine)) {
    seeds = tracks.map((id) => seeds.find((s) => s.track_id === id) || { track_id: id, name: id });
    drawSeeds();
    searchSeeds();
  } else if (tracks.length) searchTrack(tracks[0]);
  else if (last && (last.kind === "track" || last.kind === "seeds")) { last = null; clearResults(); }
}

function dropZone() {
  let depth = 0;
  const overlay = $("#drop-overlay");
  const hasFiles = (e) => e.dataTransfer && [...(e.dataTransfer.types || [])].includes("Files");
  document.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; overlay.hidden = false; } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) overlay.hidden = true; });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (!file) return;
    if ($("#view-classify").hidden) searchUpload(file); else classify(file);
  });
}

async function start() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => activate(b.dataset.view));
  $("#track-query").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(findTracks, 150); });
  $("#track-query").addEventListener("keydown", queryKeys);
  $("#track-list").addEventListener("keydown", listKeys);
  $("#track-list").addEventListener("focus", () => { if (active < 0) selectItem(0); });
  // Choosing the same file again searches again: the input is emptied once its file is taken.
  $("#upload").addEventListener("change", (e) => { const f = e.target.files[0]; e.target.value = ""; if (f) searchUpload(f); });
  $("#classify-upload").addEventListener("change", (e) => { const f = e.target.files[0]; e.target.value = ""; if (f) classify(f); });
  $("#mode").addEventListener("change", rerun);
  $("#k").addEventListener("change", rerun);
  $("#export-csv").addEventListener("click", () => exportAs("csv"));
  $("#export-json").addEventListener("click", () => exportAs("json"));
  $("#export-m3u").addEventListener("click", () => exportAs("m3u"));
  $("#more-like-these").addEventListener("click", () => searchSeeds({ push: true }));
  $("#combine").addEventListener("change", () => { if (last && last.kind === "seeds") searchSeeds({ push: true }); });
  $("#clear-seeds").addEventListener("click", () => { seeds = []; drawSeeds(); });
  $("#colour-by").addEventListener("change", () => mapData && drawMap());
  window.addEventListener("popstate", fromAddress);
  dropZone();
  try {
    const s = await api("/api/status");
    exportColumns = s.export_columns || [];
    $("#status").textContent = visible(`${s.tracks} tracks · ${s.workspace}`);
    $("#report-link").hidden = !s.report;
    if (!s.search) show($("#message"), s.search_error);
    if (!s.classify) show($("#classify-message"), s.classify_error, false);
  } catch (err) {
    show($("#message"), err.message);
  }
  fromAddress();
  document.body.dataset.ready = "1";
}

start();
