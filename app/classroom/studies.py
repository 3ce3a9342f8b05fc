"""Human studies with a fixed design: can people see what the network sees in its fooling images?

A study is designed once and then frozen: its models, the stimulus conditions kept apart
(gradient ascent, evolution with the direct encoding, evolution with CPPNs, real controls), a
confidence floor (99% by default, the paper's sense of "fooled"), and its tasks, each a block:

- ``forced_choice`` (Zhou & Firestone 2019): the network's label against the label of another
  fooling image of the study. Chance 1/2.
- ``options`` (Dujmovic, Malhotra & Bowers 2020): the network's label, its runner-up, a random
  other label and "none of these". Chance 1/4 for a uniform guess; agreement among the answers that
  named a label (chance 1/3) is reported beside it.

Each participant gets ``trials_per_block`` trials per block, never an image twice, no feedback
until a block is complete. Stimuli are copied into the study (PNG and sha256) when it is made,
so the study can be re-run and cited whatever happens to the runs they came from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import secrets
import shutil
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.fooling.info import GRADIENT
from app.jobs.store import JobStore, connect

NONE = "none of these"
TASKS = {"forced_choice": 0.5, "options": 0.25}  # task -> chance agreement for a uniform guess
CONDITIONS = ("gradient", "evolution-direct", "evolution-cppn")
CONTROL = "control"
MAX_STIMULI = 120  # per study: each is a PNG copied into the study's folder
MAX_TRIALS_PER_BLOCK = 60
INSTRUCTION = {
    "forced_choice": "Which of the two labels fits this image better? Pick one, even if you are unsure.",
    "options": "Which label fits this image best? Pick one, or \"none of these\".",
}
CONSENT = ("Taking part is voluntary and anonymous: your answers are stored under a random id, and you "
           "may stop at any time. Continue only if you agree that your answers are used for this study.")

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    design TEXT NOT NULL,
    stimuli TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS study_trials (
    id TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    participant TEXT NOT NULL,
    block INTEGER NOT NULL,
    position INTEGER NOT NULL,
    stimulus INTEGER NOT NULL,
    options TEXT NOT NULL,
    shown REAL NOT NULL,
    answer TEXT,
    answered REAL,
    ms INTEGER,
    address TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS study_trials_slot ON study_trials (study, participant, block, position);
CREATE UNIQUE INDEX IF NOT EXISTS study_trials_seen ON study_trials (study, participant, stimulus);
CREATE INDEX IF NOT EXISTS studies_owner ON studies (owner);
"""


@dataclass(frozen=True)
class Design:
    models: list[str]
    tasks: list[str] = field(default_factory=lambda: ["forced_choice", "options"])
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    controls: bool = True
    min_confidence: float = 0.99
    trials_per_block: int = 10
    exposure_ms: int | None = None
    room: str | None = None

    def blocks(self) -> list[dict]:
        return [{"block": i, "task": t, "chance": TASKS[t], "instruction": INSTRUCTION[t]}
                for i, t in enumerate(self.tasks)]


def condition_of(spec: dict) -> str | None:
    """A run's stimulus condition: method and encoding kept apart (None: not a fooling run)."""
    method = spec.get("method")
    if method in GRADIENT:
        return "gradient" if method == "gradient" else None
    if method in ("evolve", "map-elites"):
        return f"evolution-{spec.get('encoding', 'direct')}"
    return None


def fooling_candidates(jobs: JobStore, design: Design, limit: int = 500) -> list[dict]:
    """Saved images of finished, visible runs on the design's models, at or above the floor."""
    out = []
    for rec in jobs.list(limit, visible=True, room=design.room):
        spec = rec["spec"]
        cond = condition_of(spec)
        if cond not in design.conditions or spec.get("model") not in design.models:
            continue
        for t in (rec.get("result") or {}).get("targets", []):
            path = jobs.root / rec["id"] / f"{int(t['position'])}.png"
            if t["confidence"] >= design.min_confidence and path.is_file():
                out.append({"kind": "fooling", "condition": cond, "model": spec["model"], "path": path,
                            "source": f"job:{rec['id']}:{t['position']}"})
    return out


def missing_runs(candidates: list[dict], design: Design) -> list[dict]:
    """The (model, condition) pairs of the design that have no stimulus yet, as runs to make."""
    have = {(c["model"], c["condition"]) for c in candidates}
    runs = []
    for model in design.models:
        for cond in design.conditions:
            if (model, cond) not in have:
                method, encoding = ("gradient", "direct") if cond == "gradient" else ("map-elites", cond.split("-")[1])
                runs.append({"model": model, "method": method, "encoding": encoding,
                             "min_confidence": design.min_confidence})
    return runs


def pick_stimuli(candidates: list[dict], controls: list[dict], design: Design, seed: int) -> list[dict]:
    """A frozen set: up to an equal share of MAX_STIMULI * 3/4 from each (model, condition) (a group
    with fewer gives what it has), no two images alike (by sha256, checked when they are read), plus
    controls at about a quarter of the set."""
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in candidates:
        groups.setdefault((c["model"], c["condition"]), []).append(c)
    n_fool = min(MAX_STIMULI * 3 // 4, sum(len(g) for g in groups.values()))
    per = max(1, n_fool // max(1, len(groups)))
    chosen = []
    for key in sorted(groups):
        g = groups[key]
        rng.shuffle(g)
        chosen += g[:per]
    if design.controls:
        ctl = list(controls)
        rng.shuffle(ctl)
        chosen += ctl[:max(2, len(chosen) // 3)]
    return chosen[:MAX_STIMULI]


def freeze_options(stimuli: list[dict], labels: dict[str, list[str]], rng: random.Random) -> None:
    """Each image's options, fixed when the study is made (a participant who sees the same image
    under several cookies learns nothing from which labels come back): for ``forced_choice`` the
    network's label and the label of another fooling image of the study, drawn as Zhou & Firestone
    did (so a foil label is as common as the labels it stands beside); for ``options`` the
    network's label, its runner-up and a random other label ("none of these" is added per trial)."""
    fooling = [s for s in stimuli if s["kind"] == "fooling"]
    for stim in stimuli:
        right, names = stim["label"], labels[stim["model"]]
        others = [s["label"] for s in fooling if s["model"] == stim["model"] and s["label"] != right]
        foil = rng.choice(others) if others else rng.choice([x for x in names if x != right] or [right])
        spare = [x for x in names if x not in (right, stim["runner_up"])]
        stim["options"] = {"forced_choice": [right, foil],
                           "options": [right, stim["runner_up"], *([rng.choice(spare)] if spare else [])]}


# -- statistics ---------------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95% Wilson score interval for k agreements in n trials."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042, 60: 2.0, 120: 1.98}


def t95(df: int) -> float:
    return T95.get(df) or T95[max(k for k in T95 if k <= df)]


def dprime_2afc(k: int, n: int) -> float:
    """d' for k of n correct in a two-alternative forced choice: sqrt(2) z(k/n), the proportion kept
    off 0 and 1 by half a trial (so that a perfect score gives a finite d')."""
    p = min(max(k / n, 0.5 / n), 1 - 0.5 / n)
    return round(math.sqrt(2) * statistics.NormalDist().inv_cdf(p), 4)


def block_results(rows: list[dict], chance: float) -> dict:
    """Agreement in one block: per participant (share and Wilson interval over their trials) and
    overall: the mean of the participants' shares (people, not trials, are the unit), with an
    interval that covers both a t interval across participants and a Wilson interval over all
    trials (a few participants who happen to agree equally must not make the interval vanish)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["participant"], []).append(r)
    people = []
    for who, rs in sorted(by.items()):
        k = sum(r["agreed"] for r in rs)
        people.append({"participant": who, "trials": len(rs), "agreed": k, "agreement": round(k / len(rs), 4),
                       "ci95": wilson(k, len(rs)), "none": sum(r["answer"] == NONE for r in rs)})
    shares = [p["agreement"] for p in people]
    k, n = sum(p["agreed"] for p in people), len(rows)
    pooled = wilson(k, n)
    if chance == 0.5:  # two-alternative forced choice: sensitivity d' = sqrt(2) z(proportion agreeing)
        for p in people:
            p["dprime"] = dprime_2afc(p["agreed"], p["trials"])
    if len(shares) >= 2:
        mean, sd = statistics.mean(shares), statistics.stdev(shares)
        half = t95(len(shares) - 1) * sd / math.sqrt(len(shares))
        agreement = round(mean, 4)
        ci = [round(min(max(0.0, mean - half), pooled[0]), 4), round(max(min(1.0, mean + half), pooled[1]), 4)]
    else:
        agreement, ci = (round(k / n, 4) if n else None), pooled
    named = [r for r in rows if r["answer"] != NONE]
    extra = {"dprime": round(statistics.mean(p["dprime"] for p in people), 4) if people else None} \
        if chance == 0.5 else {}
    return {"chance": chance, "participants": len(people), "trials": n, "agreement": agreement, "ci95": ci, **extra,
            "above_chance": None if ci is None else ci[0] > chance,
            "agreement_among_named": round(sum(r["agreed"] for r in named) / len(named), 4) if named else None,
            "per_participant": people}


def results(study: dict, rows: list[dict]) -> dict:
    """Per block: the task, its chance, and agreement overall, per participant, per condition and per
    image (beside the network's confidence)."""
    stimuli = study["stimuli"]
    out = []
    for b in study["design"]["blocks"]:
        rs = [r for r in rows if r["block"] == b["block"] and r["answer"] is not None]
        # The headline is the fooling images': the controls (which people nearly always get) apart
        fooling = [r for r in rs if stimuli[r["stimulus"]]["kind"] == "fooling"]
        res = {"block": b["block"], "task": b["task"], "images_counted": "fooling",
               **block_results(fooling, b["chance"])}
        controls = [r for r in rs if stimuli[r["stimulus"]]["kind"] != "fooling"]
        res["controls"] = {k: v for k, v in block_results(controls, b["chance"]).items() if k != "per_participant"}
        conds: dict[str, list[dict]] = {}
        images: dict[int, list[dict]] = {}
        for r in rs:
            conds.setdefault(stimuli[r["stimulus"]]["condition"], []).append(r)
            images.setdefault(r["stimulus"], []).append(r)
        res["conditions"] = {c: {k: v for k, v in block_results(v, b["chance"]).items() if k != "per_participant"}
                             for c, v in sorted(conds.items())}
        res["images"] = [{"stimulus": s, "condition": stimuli[s]["condition"], "model": stimuli[s]["model"],
                          "label": stimuli[s]["label"], "confidence": stimuli[s]["confidence"],
                          "transfer": stimuli[s].get("transfer", {}),
                          "trials": len(v), "agreement": round(sum(r["agreed"] for r in v) / len(v), 4)}
                         for s, v in sorted(images.items())]
        out.append(res)
    return {"id": study["id"], "title": study["title"], "blocks": out}


CSV_FIELDS = ("study", "participant", "block", "task", "position", "trial", "stimulus", "condition", "model",
              "network_label", "network_confidence", "options", "answer", "agreed", "ms", "shown", "answered")


def trials_csv(study: dict, rows: list[dict], salt: str) -> str:
    """One row per answered trial; participants as a per-study pseudonym, never their cookie id."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    blocks = {b["block"]: b["task"] for b in study["design"]["blocks"]}
    for r in rows:
        if r["answer"] is None:
            continue
        s = study["stimuli"][r["stimulus"]]
        w.writerow([study["id"], pseudonym(salt, study["id"], r["participant"]), r["block"], blocks[r["block"]],
                    r["position"], r["id"], r["stimulus"], s["condition"], s["model"], s["label"],
                    f"{s['confidence']:.6f}", "|".join(r["options"]), r["answer"], int(r["agreed"]), r["ms"],
                    f"{r['shown']:.3f}", f"{r['answered']:.3f}"])
    return buf.getvalue()


def pseudonym(salt: str, study_id: str, participant: str) -> str:
    return hashlib.sha256(f"{salt}:{study_id}:{participant}".encode()).hexdigest()[:10]


# -- storage ------------------------------------------------------------------------------------------
class StudyStore:
    """Studies and their trials in one SQLite file; each study's stimuli in data/studies/<id>/."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "studies"
        self.path = Path(data_dir) / "studies.sqlite3"
        self._db = connect(self.path, SCHEMA)
        self._lock = threading.Lock()
        # the network each trial was shown to (a per-network cap); a database from before it gains the column
        if "address" not in {r[1] for r in self._db.execute("PRAGMA table_info(study_trials)")}:
            self._db.execute("ALTER TABLE study_trials ADD COLUMN address TEXT NOT NULL DEFAULT ''")
        self._db.execute("CREATE INDEX IF NOT EXISTS study_trials_address ON study_trials (address)")

    def _all(self, query: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute(query, args).fetchall()]

    def create(self, owner: str, address: str, title: str, design: Design, stimuli: list[dict],
               pngs: list[bytes]) -> dict:
        study_id = secrets.token_urlsafe(9)
        folder = self.root / study_id
        folder.mkdir(parents=True)
        for i, png in enumerate(pngs):
            (folder / f"{i}.png").write_bytes(png)
        sheet = {**asdict(design), "blocks": design.blocks()}
        with self._lock:
            self._db.execute("INSERT INTO studies (id, owner, address, title, design, stimuli, created) "
                             "VALUES (?,?,?,?,?,?,?)", (study_id, owner, address, title, json.dumps(sheet),
                                                        json.dumps(stimuli), time.time()))
        return self.get(study_id)

    def get(self, study_id: str) -> dict | None:
        rows = self._all("SELECT * FROM studies WHERE id=?", (study_id,))
        if not rows:
            return None
        s = rows[0]
        s["design"], s["stimuli"] = json.loads(s["design"]), json.loads(s["stimuli"])
        return s

    def owned(self, owner: str, limit: int = 50) -> list[dict]:
        rows = self._all("SELECT id, title, created FROM studies WHERE owner=? ORDER BY created DESC LIMIT ?",
                         (owner, limit))
        return rows

    def count(self, owner: str | None = None, address: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM studies", ()
        if owner is not None:
            q, args = q + " WHERE owner=?", (owner,)
        elif address is not None:
            q, args = q + " WHERE address=?", (address,)
        with self._lock:
            return self._db.execute(q, args).fetchone()[0]

    def count_trials(self, address: str | None = None) -> int:
        """Trials shown, in all studies: all of them, or those shown at one network address."""
        q, args = ("SELECT COUNT(*) FROM study_trials", ()) if address is None else \
            ("SELECT COUNT(*) FROM study_trials WHERE address=?", (address,))
        with self._lock:
            return self._db.execute(q, args).fetchone()[0]

    def participants(self, study_id: str) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT participant FROM study_trials WHERE study=?",
                                                    (study_id,))}

    def delete(self, study_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM study_trials WHERE study=?", (study_id,))
            self._db.execute("DELETE FROM studies WHERE id=?", (study_id,))
        shutil.rmtree(self.root / study_id, ignore_errors=True)

    def sweep(self, cutoff: float) -> int:
        """Retention: studies made before ``cutoff``, with their trials and images; how many."""
        old = [r["id"] for r in self._all("SELECT id FROM studies WHERE created < ?", (cutoff,))]
        for study_id in old:
            self.delete(study_id)
        return len(old)

    def trials(self, study_id: str, participant: str | None = None) -> list[dict]:
        q = "SELECT * FROM study_trials WHERE study=?" + (" AND participant=?" if participant else "")
        rows = self._all(q + " ORDER BY shown, block, position", (study_id, participant) if participant
                         else (study_id,))
        for r in rows:
            r["options"] = json.loads(r["options"])
        return rows

    def open_or_new(self, study_id: str, participant: str, make, address: str = "") -> dict | None:
        """This participant's open trial, or the one ``make(their trials)`` returns, added: the
        read and the insert under one lock, so two requests at once never open two trials."""
        with self._lock:
            rows = [dict(r) for r in self._db.execute(
                "SELECT * FROM study_trials WHERE study=? AND participant=? ORDER BY block, position",
                (study_id, participant)).fetchall()]
            for r in rows:
                r["options"] = json.loads(r["options"])
            open_ = [r for r in rows if r["answer"] is None]
            if open_:
                return open_[0]
            trial = make(rows)
            if trial is not None:
                self._db.execute("INSERT INTO study_trials (id, study, participant, block, position, stimulus, "
                                 "options, shown, address) VALUES (?,?,?,?,?,?,?,?,?)",
                                 (trial["id"], trial["study"], trial["participant"], trial["block"],
                                  trial["position"], trial["stimulus"], json.dumps(trial["options"]), trial["shown"],
                                  address))
            return trial

    def answer(self, trial_id: str, answer: str, ms: int) -> bool:
        with self._lock:
            return self._db.execute("UPDATE study_trials SET answer=?, answered=?, ms=? WHERE id=? AND answer IS NULL",
                                    (answer, time.time(), ms, trial_id)).rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


def agreed(study: dict, trial: dict) -> bool:
    return trial["answer"] == study["stimuli"][trial["stimulus"]]["label"]


def scored(study: dict, rows: list[dict]) -> list[dict]:
    """Trials with ``agreed``: the answer named the network's label."""
    return [{**r, "agreed": agreed(study, r)} for r in rows]


def next_trial(store: StudyStore, study: dict, participant: str, address: str = "") -> dict | None:
    """This participant's open trial, or a new one, or None when every block is done. Each block is
    ``trials_per_block`` images that this participant has not seen (by content: no two with the same
    sha256), drawn at random; the options were fixed per image when the study was made."""
    design = study["design"]
    per = design["trials_per_block"]

    def make(mine: list[dict]) -> dict | None:
        if len(mine) >= per * len(design["blocks"]):
            return None
        block, position = divmod(len(mine), per)
        seen = {study["stimuli"][t["stimulus"]]["sha256"] for t in mine}
        unseen = [s["id"] for s in study["stimuli"] if s["sha256"] not in seen]
        if not unseen:
            return None
        rng = random.Random(secrets.randbits(64))
        stim = study["stimuli"][rng.choice(unseen)]
        task = design["blocks"][block]["task"]
        options = list(stim["options"][task])
        rng.shuffle(options)
        if task == "options":
            options.append(NONE)
        return {"id": secrets.token_urlsafe(12), "study": study["id"], "participant": participant, "block": block,
                "position": position, "stimulus": stim["id"], "shown": time.time(), "options": options}

    return store.open_or_new(study["id"], participant, make, address)


def block_feedback(study: dict, trials: list[dict], block: int) -> dict | None:
    """A participant's own agreement in a block, once every trial of it is answered (never before)."""
    per = study["design"]["trials_per_block"]
    done = [t for t in trials if t["block"] == block and t["answer"] is not None]
    if len(done) < per:
        return None
    k = sum(agreed(study, t) for t in done)
    chance = study["design"]["blocks"][block]["chance"]
    return {"block": block, "task": study["design"]["blocks"][block]["task"], "trials": len(done), "agreed": k,
            "agreement": round(k / len(done), 4), "chance": chance}
