// omniret search page: plain JS against the REST API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const keyBox = $("apikey");
keyBox.value = localStorage.getItem("omniret-api-key") || "";
keyBox.addEventListener("change", () => { localStorage.setItem("omniret-api-key", keyBox.value); loadCollections(); });

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (keyBox.value) h["Authorization"] = "Bearer " + keyBox.value;
  return h;
}

function status(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? { headers: headers(false) }
                                                   : { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
  return data;
}

async function loadCollections() {
  try {
    const data = await api("/v1/collections");
    const select = $("collection");
    select.innerHTML = "";
    for (const c of data.collections) {
      const opt = document.createElement("option");
      opt.value = c.name;
      opt.textContent = `${c.name} (${c.count})`;
      select.appendChild(opt);
    }
    if (!data.collections.length) status("No collections yet: index some files first.", false);
  } catch (e) { status(e.message, true); }
}

function readImage() {
  const file = $("image").files[0];
  if (!file) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(new Error("cannot read the image file"));
    r.readAsDataURL(file);
  });
}

function clock(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

async function thumbnail(url, img) {
  try {  // fetched with the key: an <img src> cannot send the Authorization header
    const res = await fetch(url, { headers: headers(false) });
    if (res.ok) img.src = URL.createObjectURL(await res.blob());
  } catch (e) { /* the card stays without a picture */ }
}

function card(hit) {
  const p = hit.payload || {};
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.id = hit.id;
  if (hit.thumbnail) {
    const img = document.createElement("img");
    img.alt = hit.id;
    el.appendChild(img);
    thumbnail(hit.thumbnail, img);
  }
  const title = document.createElement("div");
  title.className = "title";
  const src = p.source || p.path || hit.id;
  // uploads are stored as "<8 hex>-<name>" so equal names never collide; show the name
  const file = String(src).split("/").pop().replace(/^[0-9a-f]{8}-/, "");
  title.textContent = file + (p.page ? ` · page ${p.page}` : "");
  title.title = String(src);
  el.appendChild(title);
  if (p.video_start !== undefined && p.video_start !== null) {
    const when = document.createElement("div");
    when.className = "when";
    when.textContent = `${clock(p.video_start)} – ${clock(p.video_end)}`;
    el.appendChild(when);
  }
  const scores = document.createElement("div");
  scores.className = "scores";
  const has = (v) => v !== null && v !== undefined;
  const parts = [];
  if (has(hit.fused_score)) parts.push(`fused ${hit.fused_score.toFixed(4)}`);
  if (has(hit.dense_score)) parts.push(`vector ${hit.dense_score.toFixed(4)}`);
  if (has(hit.lexical_score)) parts.push(`bm25 ${hit.lexical_score.toFixed(3)}`);
  if (!parts.length) parts.push(`vector ${hit.score.toFixed(4)}`);
  if (has(hit.rerank_score)) parts.push(`rerank ${hit.rerank_score.toFixed(4)}`);
  scores.textContent = parts.join(" · ");
  el.appendChild(scores);
  const text = p.text || p.chunk;
  if (text) {
    const snip = document.createElement("div");
    snip.className = "snippet";
    snip.textContent = String(text).slice(0, 300);
    el.appendChild(snip);
  }
  return el;
}

$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("collection").value;
  if (!name) { status("Pick a collection.", true); return; }
  const body = { k: Number($("k").value) || 10, rerank: $("rerank").checked, mode: $("mode").value };
  const text = $("query").value.trim();
  if (text) body.text = text;
  try { const image = await readImage(); if (image) body.image = image; } catch (e) { status(e.message, true); return; }
  if (!body.text && !body.image) { status("Type a query or pick an image.", true); return; }
  if (body.mode !== "dense" && !body.text) { status(`${body.mode} search needs query text.`, true); return; }
  status("Searching…", false);
  try {
    const data = await api(`/v1/collections/${encodeURIComponent(name)}/search`, body);
    const grid = $("results");
    grid.innerHTML = "";
    data.hits.forEach((h) => grid.appendChild(card(h)));
    status(`${data.hits.length} result(s) in ${data.took_ms.toFixed(0)} ms (${body.mode})` + (data.reranked ? ", reranked" : ""), false);
  } catch (e) { status(e.message, true); }
});

loadCollections();
