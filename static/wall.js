// The class wall: one EventSource for the whole room. Each `tile` event replaces that job's tile
// (the server sends at most two a second per job); `room` carries the spotlight and hidden set.
"use strict";

(() => {
  const wall = document.getElementById("wall");
  if (!wall) return;
  const code = wall.dataset.wall;
  const instructor = wall.dataset.instructor === "1";
  const tpl = document.getElementById("tile");
  const tiles = new Map(); // job id -> {el, data}
  const spot = document.querySelector("[data-spotlight]");
  let room = { spotlight: null, hidden: [] };
  let sortPending = false;
  window.wallStats = { frames: 0, tiles: 0, lastFrameAt: 0 }; // read by tests and bench/wall.py

  const pct = (c) => (c == null ? "–" : (100 * c).toFixed(c >= 0.9995 ? 2 : 1) + "%");

  const post = (path, body) => fetch(`/api/v1/rooms/${code}/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), credentials: "same-origin",
  });

  function render(t) {
    let entry = tiles.get(t.id);
    if (!entry) {
      const el = tpl.content.firstElementChild.cloneNode(true);
      el.dataset.job = t.id;
      el.querySelector("[data-link]").href = `/jobs/${t.id}`;
      el.querySelector("[data-spot]")?.addEventListener("click", () => post("spotlight", { job: t.id }));
      el.querySelector("[data-hide]")?.addEventListener("click", () => post("hide", { job: t.id, hidden: !entry.data.hidden }));
      wall.prepend(el);
      entry = { el, data: t };
      tiles.set(t.id, entry);
    }
    entry.data = t;
    const el = entry.el;
    const img = el.querySelector("[data-img]");
    const wait = el.querySelector("[data-wait]");
    if (t.image) { // a run without an image yet (queued, starting) shows a placeholder, never a broken image
      img.src = t.image;
      img.hidden = false;
      wait.hidden = true;
    } else {
      wait.textContent = t.status === "queued" ? "in the queue" : "starting";
    }
    img.alt = `best image of ${t.nickname || "a student"}'s run: ${t.label || "no image yet"}`;
    el.querySelector("[data-label]").textContent = t.label || t.method;
    el.querySelector("[data-conf]").textContent = pct(t.confidence);
    el.querySelector("[data-meter]").value = t.confidence || 0;
    el.querySelector("[data-name]").textContent = t.nickname || "someone";
    el.querySelector("[data-status]").textContent = t.status;
    const defence = el.querySelector("[data-defence]"); // an arena attack names the defence it faces
    const plus = (t.model || "").indexOf("+");
    defence.hidden = plus < 0;
    defence.textContent = plus < 0 ? "" : `vs ${t.model.slice(plus + 1)}`;
    el.dataset.status = t.status;
    el.dataset.confidence = t.confidence || 0;
    el.classList.toggle("is-hidden", !!t.hidden);
    const hideBtn = el.querySelector("[data-hide]");
    if (hideBtn) hideBtn.textContent = t.hidden ? "Show" : "Hide";
    if (room.spotlight === t.id) showSpotlight();
    scheduleSort();
  }

  function scheduleSort() {
    if (sortPending || !document.querySelector("[data-sort]")?.checked) return;
    sortPending = true; // at most one reorder a second: tiles do not jump on every frame
    setTimeout(() => {
      sortPending = false;
      const ordered = [...tiles.values()].sort((a, b) => (b.data.confidence || 0) - (a.data.confidence || 0));
      ordered.forEach((e) => wall.appendChild(e.el));
    }, 1000);
  }
  document.querySelector("[data-sort]")?.addEventListener("change", scheduleSort);

  function showSpotlight() {
    const t = room.spotlight && tiles.get(room.spotlight)?.data;
    spot.hidden = !t;
    document.body.classList.toggle("spotlit", !!t);
    if (!t) return;
    if (t.image) spot.querySelector("[data-spot-img]").src = t.image;
    spot.querySelector("[data-spot-label]").textContent = t.label || "";
    spot.querySelector("[data-spot-conf]").textContent = pct(t.confidence);
    spot.querySelector("[data-spot-name]").textContent = t.nickname || "";
    spot.dataset.job = t.id;
  }
  document.querySelector("[data-unspot]")?.addEventListener("click", () => post("spotlight", { job: null }));

  function counts() {
    document.querySelector("[data-count]").textContent = tiles.size;
    document.querySelector("[data-empty]").hidden = tiles.size > 0;
    wall.classList.toggle("dense", tiles.size > 24); // a full class fits one projector screen
    window.wallStats.tiles = tiles.size;
    fit();
  }

  // A few tiles on a projector grow to use the screen: the column count that gives the largest
  // square images with every tile in view. Phones, and walls of more than 24, keep the CSS grid.
  function fit() {
    const n = tiles.size;
    if (n === 0 || n > 24 || window.innerWidth < 900) {
      wall.style.gridTemplateColumns = "";
      return;
    }
    const gap = 12;
    const defended = [...tiles.values()].some((e) => (e.data.model || "").includes("+"));
    // label, meter and name under each image (and the buttons, and the defence an attack faces)
    const text = (instructor ? 130 : 90) + (defended ? 24 : 0);
    const width = wall.clientWidth;
    const height = window.innerHeight - wall.getBoundingClientRect().top - window.scrollY - 16;
    let best = 0;
    let cols = 1;
    for (let c = 1; c <= n; c++) {
      const rows = Math.ceil(n / c);
      const size = Math.min((width - gap * (c - 1)) / c, (height - gap * (rows - 1)) / rows - text);
      if (size > best) { best = size; cols = c; }
    }
    wall.style.gridTemplateColumns = `repeat(${cols}, ${Math.max(160, Math.floor(best))}px)`;
  }
  window.addEventListener("resize", fit);

  const es = new EventSource(wall.dataset.events);
  es.addEventListener("tile", (ev) => {
    render(JSON.parse(ev.data));
    window.wallStats.frames += 1;
    window.wallStats.lastFrameAt = performance.now();
    counts();
  });
  es.addEventListener("remove", (ev) => {
    const id = JSON.parse(ev.data).id;
    tiles.get(id)?.el.remove();
    tiles.delete(id);
    counts();
  });
  es.addEventListener("room", (ev) => {
    room = JSON.parse(ev.data);
    const m = document.querySelector("[data-members]");
    if (m && room.members != null) m.textContent = room.members;
    showSpotlight();
  });
  // The instructor's pinned defence arena: a table beside the tiles (above them on a phone; null: taken down).
  const pinned = document.querySelector("[data-arena-pinned]");
  es.addEventListener("arena", (ev) => {
    const board = JSON.parse(ev.data);
    pinned.hidden = !board;
    document.querySelector("[data-wall-area]").classList.toggle("pinned", !!board);
    document.querySelector("[data-unpin-form]")?.toggleAttribute("hidden", !board);
    if (board) {
      pinned.querySelector("[data-arena-model]").textContent = board.model;
      pinned.querySelector("[data-arena-table]").replaceChildren(window.FoolingArena.table(board));
    }
    window.wallStats.arena = board ? board.model : null;
    fit();
  });
  es.addEventListener("close", () => es.close());
  counts();
})();
