// edge-vad review page. Plain JavaScript, no build step, no CDN; served with a CSP that allows only this
// file (no inline script). Data is always put into the page as text (textContent), never as HTML.
"use strict";

const CAMERA_POLL_MS = 300;   // live frames refresh a few times a second, not as a video stream
const EVENTS_POLL_MS = 2000;
const HEALTH_POLL_MS = 5000;
const STALE_S = 5;            // a camera without a new frame for this long is shown as such
const CLIP_RETRIES = 24;      // the clip may still be transcoding (503): retry every 5 s for 2 minutes
const SPARK_W = 300, SPARK_H = 64;
const SPARK_SPAN_S = [60, 300];  // the sparkline shows at least the last minute, at most five
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { mode: null, selected: null, rows: new Map(), cameras: new Map(), clipTries: 0 };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function getJson(url) {
  const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!resp.ok) throw new Error(url + ": HTTP " + resp.status);
  return resp.json();
}

function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function score(x) { return typeof x === "number" ? x.toFixed(2) : "–"; }

// ------------------------------------------------------------------------------------------ cameras
function cameraCard(cam) {
  const card = el("article", { class: "camera", "data-camera": cam.name });
  const title = el("h3");
  title.append(el("span", {}, cam.name), el("span", { class: "muted score-now" }, ""));
  const img = el("img", { alt: "Latest frame of " + cam.name });
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 " + SPARK_W + " " + SPARK_H);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const cls of ["on", "off"]) {
    const line = document.createElementNS(SVG_NS, "line");
    line.setAttribute("class", cls);
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(SPARK_W));
    svg.append(line);
  }
  const poly = document.createElementNS(SVG_NS, "polyline");
  poly.setAttribute("class", "score");
  svg.append(poly);
  const caption = el("p", { class: "muted" }, "");
  card.append(title, img, svg, caption);
  return { card, img, svg, poly, caption, seq: -1, scoreNow: title.lastChild };
}

function sparkY(s) { return (SPARK_H - 2) - Math.max(0, Math.min(1, s)) * (SPARK_H - 4); }

function drawCamera(view, cam) {
  view.card.classList.toggle("open", cam.gate_open);
  const stale = typeof cam.age_s === "number" && cam.age_s > STALE_S;
  view.card.classList.toggle("stale", stale);
  view.scoreNow.textContent = stale ? "no frame for " + Math.round(cam.age_s) + " s" :
    (cam.gate_open ? "gate OPEN · " : "") + "score " + score(cam.score);
  if (cam.frame_seq !== view.seq && cam.frame_seq > 0) {
    view.seq = cam.frame_seq;
    view.img.src = "/api/cameras/" + encodeURIComponent(cam.name) + "/frame.jpg?seq=" + cam.frame_seq;
  }
  const [on, off] = view.svg.querySelectorAll("line");
  on.setAttribute("y1", sparkY(cam.on_threshold)); on.setAttribute("y2", sparkY(cam.on_threshold));
  off.setAttribute("y1", sparkY(cam.off_threshold)); off.setAttribute("y2", sparkY(cam.off_threshold));
  const pts = cam.history;
  if (pts.length) {
    const end = pts[pts.length - 1][0];
    const span = Math.min(SPARK_SPAN_S[1], Math.max(SPARK_SPAN_S[0], end - pts[0][0]));
    view.poly.setAttribute("points", pts.map(([t, s]) =>
      ((1 - (end - t) / span) * SPARK_W).toFixed(1) + "," + sparkY(s).toFixed(1)).join(" "));
  }
  const shown = pts.length ? Math.min(SPARK_SPAN_S[1], Math.max(SPARK_SPAN_S[0], pts[pts.length - 1][0] - pts[0][0])) : 0;
  view.caption.textContent = "smoothed score, last " + Math.round(shown / 60 * 10) / 10 + " min · gate on " +
    score(cam.on_threshold) + " / off " + score(cam.off_threshold);
}

async function pollCameras() {
  try {
    const data = await getJson("/api/cameras");
    $("no-cameras").hidden = data.cameras.length > 0;
    for (const cam of data.cameras) {
      let view = state.cameras.get(cam.name);
      if (!view) {
        view = cameraCard(cam);
        state.cameras.set(cam.name, view);
        $("cameras").append(view.card);
      }
      drawCamera(view, cam);
    }
  } catch (err) { /* the run may be stopping; try again */ }
  setTimeout(pollCameras, CAMERA_POLL_MS);
}

async function pollHealth() {
  try {
    const resp = await fetch("/healthz", { cache: "no-store" });
    const body = await resp.json();
    const pill = $("health");
    pill.hidden = false;
    pill.textContent = body.status;
    pill.className = "pill " + (body.status === "ok" ? "ok" : "bad");
  } catch (err) { /* review mode has no /healthz */ }
  setTimeout(pollHealth, HEALTH_POLL_MS);
}

// ------------------------------------------------------------------------------------------ events
function filtersQuery() {
  const q = new URLSearchParams();
  const cam = $("filter-camera").value, cls = $("filter-class").value, day = $("filter-day").value;
  if (cam) q.set("camera", cam);
  if (cls) q.set("class", cls);
  if (day) { q.set("day", day); q.set("tz", String(new Date().getTimezoneOffset())); }
  return q.toString();
}

function fillSelect(select, values) {
  const keep = select.value;
  const have = new Set(Array.from(select.options).map((o) => o.value));
  for (const v of values) if (!have.has(v)) select.append(el("option", { value: v }, v));
  select.value = keep;
}

function verdictBadge(verdict) {
  if (!verdict) return document.createTextNode("");
  return el("span", { class: "verdict " + verdict }, verdict === "false_alarm" ? "false alarm" : "confirmed");
}

function eventRow(ev) {
  const tr = el("tr", { "data-id": ev.id });
  for (let i = 0; i < 6; i++) tr.append(el("td"));
  tr.cells[0].className = "thumb";
  tr.addEventListener("click", () => select(ev.id));
  return tr;
}

function drawRow(tr, ev) {
  tr.dataset.state = ev.state;
  tr.classList.toggle("open", ev.state === "open");
  tr.classList.toggle("selected", ev.id === state.selected);
  if (ev.has_snapshot && !tr.cells[0].firstChild) {
    tr.cells[0].append(el("img", { src: "/api/events/" + ev.id + "/snapshot", alt: "snapshot", loading: "lazy" }));
  }
  tr.cells[1].textContent = localTime(ev.start_time);
  tr.cells[2].textContent = ev.source;
  tr.cells[3].textContent = (ev.class || "–") + (ev.state === "open" ? " (open)" : "");
  tr.cells[4].textContent = score(ev.peak_score);
  tr.cells[5].replaceChildren(verdictBadge(ev.verdict));
}

async function pollEvents(once) {
  try {
    const data = await getJson("/api/events?" + filtersQuery());
    fillSelect($("filter-camera"), data.facets.cameras);
    fillSelect($("filter-class"), data.facets.classes);
    const body = $("events").tBodies[0];
    const keep = new Set();
    for (const ev of data.events) {
      let tr = state.rows.get(ev.id);
      if (!tr) { tr = eventRow(ev); state.rows.set(ev.id, tr); }
      drawRow(tr, ev);
      body.append(tr);  // moves an existing row into order without reloading its thumbnail
      keep.add(ev.id);
    }
    for (const [id, tr] of state.rows) if (!keep.has(id)) { tr.remove(); state.rows.delete(id); }
    $("no-events").hidden = data.events.length > 0;
    $("event-count").textContent = "(" + data.events.length + ")";
    if (state.selected && keep.has(state.selected)) refreshDetail(false);
  } catch (err) { /* try again */ }
  if (!once) setTimeout(() => pollEvents(false), EVENTS_POLL_MS);
}

// ------------------------------------------------------------------------------------------ one event
function fact(dl, name, value) {
  if (value === undefined || value === null || value === "") return;
  dl.append(el("dt", {}, name), el("dd", {}, value));
}

function select(id) {
  state.selected = id;
  state.clipTries = 0;
  if (location.hash !== "#event=" + id) history.replaceState(null, "", "#event=" + id);
  for (const [rid, tr] of state.rows) tr.classList.toggle("selected", rid === id);
  $("feedback-status").textContent = "";
  refreshDetail(true);
}

async function refreshDetail(fresh) {
  const id = state.selected;
  let ev;
  try { ev = await getJson("/api/events/" + id); } catch (err) { return; }
  if (id !== state.selected) return;
  const aside = $("detail");
  aside.hidden = false;
  aside.dataset.id = id;
  $("detail-title").textContent = ev.source + " · " + localTime(ev.start_time);
  const dl = $("detail-facts");
  dl.replaceChildren();
  const fine = ev.fine || {};
  fact(dl, "State", ev.type === "end" ? "ended" : "open");
  fact(dl, "Class", fine.class);
  if (fine.probs) {
    const top = Object.entries(fine.probs).sort((a, b) => b[1] - a[1]).slice(0, 3);
    fact(dl, "Probabilities", top.map(([k, p]) => k + " " + (100 * p).toFixed(1) + " %").join(", "));
  }
  fact(dl, "Description", fine.description);
  fact(dl, "Peak / mean score", score(ev.peak_score) + " / " + score(ev.mean_score));
  if (typeof ev.end_s === "number") fact(dl, "Duration", (ev.end_s - ev.start_s).toFixed(1) + " s");
  fact(dl, "Ended", localTime(ev.end_time));
  fact(dl, "Event id", ev.id);
  fact(dl, "Verdict", ev.verdict ? ev.verdict.verdict.replace("_", " ") + " (" + localTime(ev.verdict.marked_at) + ")" : "");
  for (const b of document.querySelectorAll(".verdict-buttons button")) {
    b.classList.toggle("chosen", !!ev.verdict && ev.verdict.verdict === b.dataset.verdict);
  }
  const snap = $("detail-snapshot");
  const snapSrc = ev.snapshot ? "/api/events/" + id + "/snapshot" : "";
  if (snap.getAttribute("src") !== snapSrc) { if (snapSrc) snap.src = snapSrc; else snap.removeAttribute("src"); }
  snap.hidden = !snapSrc;
  const video = $("detail-clip");
  const clipSrc = ev.clip ? "/api/events/" + id + "/clip" : "";
  if (fresh || (clipSrc && video.getAttribute("src") !== clipSrc)) loadClip(clipSrc);
}

function loadClip(src) {
  const video = $("detail-clip");
  const status = $("clip-status");
  if (!src) {
    video.removeAttribute("src"); video.load(); video.hidden = true;
    status.textContent = "No clip (yet): it is written when the event's post-roll ends.";
    return;
  }
  video.hidden = false;
  status.textContent = "Loading the clip…";
  video.src = src;
  video.play().catch(() => {});
}

function clipEvents() {
  const video = $("detail-clip");
  const status = $("clip-status");
  video.addEventListener("loadeddata", () => { status.textContent = "Clip: pre-roll, event and post-roll."; });
  video.addEventListener("error", () => {
    if (!video.getAttribute("src")) return;
    if (state.clipTries++ < CLIP_RETRIES) {
      status.textContent = "Preparing the clip for the browser…";
      const src = video.getAttribute("src");
      setTimeout(() => { if (video.getAttribute("src") === src) { video.load(); video.play().catch(() => {}); } }, 5000);
    } else {
      status.textContent = "The clip cannot be played here.";
    }
  });
}

async function mark(verdict) {
  const id = state.selected;
  const status = $("feedback-status");
  status.textContent = "Saving…";
  try {
    const resp = await fetch("/api/events/" + id + "/feedback", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ verdict: verdict, note: "" }),
    });
    if (!resp.ok) throw new Error(await resp.text());
    const body = await resp.json();
    status.textContent = "Marked " + body.feedback.verdict.replace("_", " ") + " at " + localTime(body.feedback.marked_at) + ".";
    status.dataset.verdict = body.feedback.verdict;
    pollEvents(true);
  } catch (err) {
    status.textContent = "Not saved: " + err.message;
  }
}

// ------------------------------------------------------------------------------------------ start
async function start() {
  try {
    const st = await getJson("/api/status");
    state.mode = st.mode;
    $("mode").textContent = st.mode === "live" ? "live" : "review of " + st.events_dir;
  } catch (err) { $("mode").textContent = "offline"; }
  for (const id of ["filter-camera", "filter-class", "filter-day"]) $(id).addEventListener("change", () => pollEvents(true));
  $("filter-clear").addEventListener("click", () => {
    $("filter-camera").value = ""; $("filter-class").value = ""; $("filter-day").value = ""; pollEvents(true);
  });
  for (const b of document.querySelectorAll(".verdict-buttons button")) {
    b.addEventListener("click", () => mark(b.dataset.verdict));
  }
  clipEvents();
  setInterval(() => { $("clock").textContent = new Date().toLocaleTimeString(); }, 1000);
  const m = /^#event=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) select(m[1]);
  pollEvents(false);
  if (state.mode === "live") { pollCameras(); pollHealth(); } else { $("no-cameras").hidden = false; }
}

document.addEventListener("DOMContentLoaded", start);
