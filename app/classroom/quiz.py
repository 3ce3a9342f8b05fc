""""Can you tell?": the paper's missing human study, run live.

People see one image at a time, a fooling image from the gallery or a real image the network gets
right (MNIST test digits), and pick a label or "none of these". The options follow the human
studies since the paper (Zhou & Firestone 2019; Dujmovic et al. 2020): the network's label, its
runner-up, a random other label, in random order, and always "none of these". Each item records
what was shown (options and their order, when), so results can be re-analysed; agreement means
naming the network's label.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import random
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from app.data import mnist
from app.fooling.info import FOOLING
from app.jobs.store import JobStore
from app.serving.imaging import to_model_input, to_png

NONE = "none of these"
FOOLING_BAR = 0.5  # fooling images shown are those the network gives their target at least this
REAL_SHARE = 0.4  # about this share of items are real images (the control)
MNIST_MODEL = "lenet-mnist"
MNIST_POOL = 2000  # test digits the quiz draws from
PHOTO_SHAPE = (3, 224, 224)

Score = Callable[[str, torch.Tensor], Awaitable[torch.Tensor]]  # (model id, (N, C, H, W)) -> probabilities


@dataclass
class Candidate:
    source: str  # "job:<id>:<position>" or "mnist:<index>"
    kind: str  # fooling | real
    encoding: str  # direct | cppn | photo
    model: str
    truth: int | None = None  # a real image's true class


class QuizPool:
    """Where items come from: finished gallery jobs and the MNIST test set."""

    def __init__(self, jobs: JobStore, data_dir: Path, photos_dir: Path | None = None) -> None:
        self.jobs, self.data_dir = jobs, Path(data_dir)
        self.photos_dir = Path(photos_dir) if photos_dir else None
        self._mnist: tuple[torch.Tensor, torch.Tensor] | None = None
        self._photos: list[dict] | None = None

    def photo_folders(self) -> dict[str, Path]:
        """Folders holding a photos.json: the shipped samples, then each folder under DATA/photos
        (the Debian photos of `make data`, and any an operator adds)."""
        found = {"samples": self.photos_dir} if self.photos_dir else {}
        extra = self.data_dir / "photos"
        if extra.is_dir():
            found |= {d.name: d for d in sorted(extra.iterdir()) if (d / "photos.json").is_file()}
        return found

    def photos(self) -> list[dict]:
        """Real photos (each folder's photos.json: file, ImageNet label, licence, where it is from),
        read once: they do not change while the server runs. Each gets ``key`` (folder/file), by
        which it is named in a source ("photo:<key>") and a URL, and ``path``."""
        if self._photos is None:
            out = []
            for name, where in self.photo_folders().items():
                try:
                    listed = json.loads((where / "photos.json").read_text())
                except (OSError, ValueError):
                    continue  # an operator's broken list is skipped, not fatal
                for p in listed if isinstance(listed, list) else []:
                    if isinstance(p, dict) and {"file", "label"} <= set(p) and "/" not in str(p["file"]) \
                            and (where / str(p["file"])).is_file():
                        out.append({**p, "key": f"{name}/{p['file']}", "path": where / str(p["file"])})
            self._photos = out
        return self._photos

    def mnist(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first MNIST_POOL test digits, when the data is here (never downloaded from a request)."""
        if self._mnist is None and mnist.verified(self.data_dir):
            x, y = mnist.load(self.data_dir, train=False)
            self._mnist = (x[:MNIST_POOL].clone(), y[:MNIST_POOL].clone())
        return self._mnist

    def fooling(self, models: set[str], room: str | None = None, limit: int = 200) -> list[Candidate]:
        out = []
        # finished runs, stopped ones included: their best images are saved like any other
        for rec in self.jobs.list(limit, visible=True, room=room):
            spec = rec["spec"]
            if spec.get("method") not in FOOLING or spec.get("model") not in models:
                continue
            for t in (rec.get("result") or {}).get("targets", []):
                if t["confidence"] < FOOLING_BAR:
                    continue
                out.append(Candidate(f"job:{rec['id']}:{t['position']}", "fooling", spec.get("encoding", "direct"),
                                     spec["model"]))
        return out

    def image(self, c: Candidate) -> torch.Tensor | None:
        """The (C, H, W) image of a candidate, or None when it is gone (a deleted job)."""
        kind, _, ref = c.source.partition(":")
        if kind == "mnist":
            data = self.mnist()
            return None if data is None else data[0][int(ref)]
        if kind == "photo":  # at an ImageNet model's input: shorter side 256, centre 224
            ref = ref if "/" in ref else f"samples/{ref}"  # items kept before photos had folders
            photo = next((p for p in self.photos() if p["key"] == ref), None)
            if photo is None:
                return None
            with Image.open(photo["path"]) as img:
                return to_model_input(img.convert("RGB"), PHOTO_SHAPE, "center-crop")
        job_id, _, position = ref.rpartition(":")
        path = self.jobs.root / job_id / f"{int(position)}.png"
        if not path.is_file():
            return None
        with Image.open(path) as img:
            arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            channels = len(img.getbands())
            x = arr.view(img.height, img.width, channels).permute(2, 0, 1).float() / 255
        return x

    def png(self, source: str) -> bytes | None:
        kind, _, ref = source.partition(":")
        if kind == "job":
            job_id, _, position = ref.rpartition(":")
            path = self.jobs.root / job_id / f"{int(position)}.png"
            return path.read_bytes() if path.is_file() else None
        x = self.image(Candidate(source, "real", "photo", ""))
        return None if x is None else to_png(x)


async def make_item(pool: QuizPool, score: Score, labels: dict[str, list[str]], client: str, room: str | None,
                    seq: int, recent: set[str], rng: random.Random | None = None) -> dict | None:
    """A new item for this client (not one of its recent sources), or None when there is nothing to
    show. ``labels``: the class names of every available model."""
    rng = rng or random.Random(secrets.randbits(64))
    # Disk and database reads run off the event loop (the first MNIST read hashes 110 MB).
    fooling = [c for c in await asyncio.to_thread(pool.fooling, set(labels), room) if c.source not in recent]
    if room and len(fooling) < 5:  # a room's own runs first; the whole gallery while it has few
        fooling += [c for c in await asyncio.to_thread(pool.fooling, set(labels)) if c.source not in recent]
    real: list[Candidate] = []
    data = await asyncio.to_thread(pool.mnist) if MNIST_MODEL in labels else None
    if data is not None:
        picks = rng.sample(range(len(data[1])), 8)
        real = [Candidate(f"mnist:{i}", "real", "photo", MNIST_MODEL, int(data[1][i])) for i in picks
                if f"mnist:{i}" not in recent]
    for photo in pool.photos():  # ImageNet controls, for each ImageNet model here (read once, small)
        for model, names in labels.items():
            if len(names) == 1000 and photo["label"] in names and f"photo:{photo['key']}" not in recent:
                real.append(Candidate(f"photo:{photo['key']}", "real", "photo", model, names.index(photo["label"])))
    for _ in range(4):  # a candidate may be gone, or a real image the network gets wrong
        source = real if real and (not fooling or rng.random() < REAL_SHARE) else fooling
        if not source:
            return None
        c = source.pop(rng.randrange(len(source)))
        x = await asyncio.to_thread(pool.image, c)
        if x is None:
            continue
        probs = (await score(c.model, x[None]))[0]
        top = probs.topk(2).indices.tolist()
        if c.truth is not None and top[0] != c.truth:
            continue  # controls are images the network classifies correctly
        names = labels[c.model]
        others = [i for i in range(len(names)) if i not in top]
        options = [names[top[0]], names[top[1]]] + ([names[rng.choice(others)]] if others else [])
        rng.shuffle(options)
        return {"id": secrets.token_urlsafe(12), "client": client, "room": room, "kind": c.kind,
                "encoding": c.encoding, "dataset": "mnist" if c.model == MNIST_MODEL else "imagenet",
                "model": c.model, "source": c.source, "label": names[top[0]], "confidence": float(probs[top[0]]),
                "options": options + [NONE], "seq": seq, "shown": time.time()}
    return None


def chance(options: int) -> float:
    """Agreement by guessing among the shown options ("none of these" included)."""
    return 1.0 / options if options else 0.0


def summarise(answers: list[dict]) -> dict:
    """Agreement overall, per condition (kind x encoding x dataset) and per image, with chance."""
    def block(rows: list[dict]) -> dict:
        n = len(rows)
        return {"answers": n, "agreed": sum(r["agreed"] for r in rows),
                "agreement": (sum(r["agreed"] for r in rows) / n) if n else None,
                "none": sum(r["answer"] == NONE for r in rows),
                "chance": statistics.mean(chance(len(r["options"])) for r in rows) if n else None,
                "median_ms": statistics.median(r["ms"] for r in rows) if n else None}

    conditions: dict[str, list[dict]] = {}
    images: dict[str, list[dict]] = {}
    for r in answers:
        conditions.setdefault(condition(r), []).append(r)
        images.setdefault(r["source"], []).append(r)
    per_image = []
    for source, rows in images.items():
        b = block(rows)
        b.update(source=source, condition=condition(rows[0]), label=rows[-1]["label"],
                 confidence=rows[-1]["confidence"], item=rows[-1]["item"])
        per_image.append(b)
    per_image.sort(key=lambda b: (-b["answers"], b["source"]))
    return {"overall": block(answers), "conditions": {k: block(v) for k, v in sorted(conditions.items())},
            "images": per_image}


def condition(row: dict) -> str:
    return f"{row['kind']} · {row['encoding']} · {row['dataset']}" if row["kind"] == "fooling" else \
        f"real · {row['dataset']}"


CSV_FIELDS = ("item", "answered", "room", "participant", "kind", "encoding", "dataset", "model", "image",
              "network_label", "network_confidence", "options", "position", "answer", "agreed", "ms")


def to_csv(answers: list[dict], salt: str) -> str:
    """One row per answer. Participants appear as a per-server pseudonym, never their cookie id."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for r in answers:
        who = hashlib.sha256(f"{salt}:{r['client']}".encode()).hexdigest()[:10]
        w.writerow([r["item"], f"{r['answered']:.3f}", r["room"] or "", who, r["kind"], r["encoding"], r["dataset"],
                    r["model"], r["source"], r["label"], f"{r['confidence']:.6f}", "|".join(r["options"]), r["seq"],
                    r["answer"], int(r["agreed"]), r["ms"]])
    return buf.getvalue()
