// The defence arena of a room: the board (one row per defence, the room's attacks on each) comes
// as `arena` events on the room's one event stream; this draws it. The room's arena page updates
// its rows' attack cells; the class wall draws the whole pinned table (window.FoolingArena.table).
// Text only through textContent: nicknames are the students' own.
"use strict";

(() => {
  const pct = (c, digits = 1) => (c == null ? "–" : (100 * c).toFixed(digits) + "%");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // One attack: "Ada, direct: running: best accepted 97.12%, 6/10 at ≥ 99% · 12,300 evaluations".
  function attack(a) {
    const d = el("div", null, "attack");
    d.dataset.attack = a.id;
    d.dataset.status = a.status;
    if (a.nickname !== undefined) d.append(el("b", a.nickname || "someone"), ", "); // a room's attacks are named
    d.append(`${a.encoding}: `);
    const link = el("a", a.status);
    link.href = `/jobs/${a.id}`;
    d.append(link, ": ");
    if (a.needed != null) { // the defence fell: every class at 99.99%, accepted
      const b = el("b", `every class at 99.99% after ${a.needed.toLocaleString("en-US")} evaluations`);
      b.dataset.needed = "";
      d.append(b);
    } else {
      d.append(a.best == null ? "nothing accepted yet"
        : `best accepted ${pct(a.best, 2)}, ${a.at_99}/${a.targets} at ≥ 99%`);
      d.append(` · ${a.evaluations.toLocaleString("en-US")} evaluations`);
    }
    if (a.hidden) { // only the instructor's board names these
      const h = el("span", " (hidden from the students)", "muted");
      h.dataset.hiddenAttack = "";
      d.append(h);
    }
    return d;
  }

  function attacks(list) {
    const frag = document.createDocumentFragment();
    if (!list.length) frag.append(el("span", "no attack yet", "muted"));
    list.forEach((a) => frag.append(attack(a)));
    return frag;
  }

  function rejected(r) {
    if (r.gallery_rejected != null) return pct(r.gallery_rejected, 0);
    return r.detector || r.unavailable || r.busy ? "–" : "never rejects";
  }

  function falsePositives(r) {
    if (r.unavailable || r.busy) return "–";
    return r.detector ? pct(r.false_positive_rate) : "never rejects";
  }

  // The whole table, for the wall.
  function table(board) {
    const t = el("table", null, "models stack arena arena-board");
    t.dataset.arenaBoard = board.model;
    const head = t.createTHead().insertRow();
    ["defence", "clean accuracy", "false positives on real data",
      `gallery fooling images rejected${board.images ? ` (of ${board.images})` : ""}`, "the room's attacks"]
      .forEach((h) => head.append(el("th", h)));
    const body = t.createTBody();
    board.rows.filter((r) => !r.unavailable).forEach((r) => { // the projector shows what can be attacked
      const tr = body.insertRow();
      tr.dataset.defence = r.id;
      const cells = [el("code", r.defence), pct(r.clean_accuracy), falsePositives(r), rejected(r)];
      const labels = ["defence", "clean accuracy", "false positives", "gallery rejected", "attacks"];
      cells.forEach((c, i) => {
        const td = tr.insertCell();
        td.dataset.label = labels[i];
        td.append(c);
      });
      const td = tr.insertCell();
      td.dataset.label = labels[4];
      td.append(attacks(r.attacks));
    });
    return t;
  }

  window.FoolingArena = { table, attacks };

  // The open arena: the page's own attacks, one stream for all of them.
  const own = document.querySelector("[data-attack-events]");
  if (own) {
    const es = new EventSource(own.dataset.attackEvents);
    es.addEventListener("attack", (ev) => {
      const a = JSON.parse(ev.data);
      own.querySelector(`[data-attack="${CSS.escape(a.id)}"]`)?.replaceWith(attack(a));
    });
    es.addEventListener("close", () => es.close());
  }

  // The room's arena page: its rows' attack cells follow the board.
  const page = document.querySelector("[data-board-events]");
  if (!page) return;
  const es = new EventSource(page.dataset.boardEvents);
  es.addEventListener("arena", (ev) => {
    const board = JSON.parse(ev.data);
    if (!board) return;
    board.rows.forEach((r) => {
      const cell = page.querySelector(`tr[data-defence="${CSS.escape(r.id)}"] [data-attacks]`);
      if (cell) cell.replaceChildren(attacks(r.attacks));
    });
    window.arenaFrames = (window.arenaFrames || 0) + 1; // read by the browser tests
  });
  es.addEventListener("close", () => es.close());
})();
