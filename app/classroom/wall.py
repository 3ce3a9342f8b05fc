"""The class wall's tiles: one per job of a room, its best image so far as a small data URL, the
target's label and confidence, and its owner's nickname.

Tiles are made from what the runner already holds (a live job's snapshot, a finished job's saved
PNG) and cached per (job, version): many walls watching one room encode each frame once.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from app.cache import LRU
from app.jobs.runner import Runner
from app.jobs.store import ACTIVE
from app.serving.imaging import to_png

THUMB = 112  # pixels on the longest side: sharp on a projector tile, small in the stream
MAX_TILES = 120  # the room's active jobs and then the most recent finished ones, up to this many
FRAME_INTERVAL = 0.5  # seconds: at most 2 frames a second per tile


def thumbnail(png: bytes) -> str:
    """A PNG data URL no larger than THUMB on its longest side (small images stay as they are: the
    page scales them up with crisp pixels)."""
    img = Image.open(io.BytesIO(png))
    if max(img.size) > THUMB:
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        img.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=3)
        png = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode()


class Tiles:
    """Tile dicts per (job id, version), shared by every wall stream of the server."""

    def __init__(self, runner: Runner, size: int = 512) -> None:
        self.runner = runner
        self._cache: LRU[dict] = LRU(size)

    def key(self, job_id: str) -> tuple[str, object] | None:
        """What identifies the job's current frame: its live version, or 'final' once finished
        (None: no such job)."""
        live = self.runner.live(job_id)
        if live is not None and not live.finished:
            return (job_id, ("live", live.version, live.status))
        rec = self.runner.record(job_id)
        if rec is None:
            return None
        return (job_id, ("final", rec["status"], rec["updated"]))

    def tile(self, job_id: str) -> dict | None:
        key = self.key(job_id)
        if key is None:
            return None
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        made = self._make(job_id, key)
        return None if made is None else self._cache.put(key, made)

    def _make(self, job_id: str, key) -> dict | None:
        live = self.runner.live(job_id)
        if live is not None and not live.finished:  # all from memory: a running room's tiles cost no query
            rec = {"status": live.status, "client": live.client, "created": live.created, "spec": {
                "model": live.spec.model, "method": live.spec.method, "encoding": live.spec.encoding}}
        else:
            rec = self.runner.record(job_id)
            if rec is None:
                return None
        spec = rec["spec"]
        tile = {"id": job_id, "status": rec["status"], "model": spec.get("model"), "method": spec.get("method"),
                "encoding": spec.get("encoding"), "client": rec["client"], "created": rec["created"],
                "label": None, "confidence": None, "image": None, "step": 0, "targets": 0}
        snap = live.run.snap if live is not None and not live.finished else None
        if snap is not None:
            conf = snap.confidence
            best = int(conf.argmax())
            tile.update(label=live.labels[snap.targets[best]], confidence=float(conf[best]), step=snap.step,
                        targets=len(snap.targets), at_9999=int((conf >= 0.9999).sum()),
                        image=thumbnail(to_png(snap.images[best])))
        elif rec["status"] not in ACTIVE and rec.get("result"):
            targets = rec["result"].get("targets") or []
            if targets:
                best = max(targets, key=lambda t: t["confidence"])
                path = self.runner.store.root / job_id / f"{best['position']}.png"
                tile.update(label=best.get("label"), confidence=best["confidence"], targets=len(targets),
                            step=(rec.get("progress") or {}).get("step", 0),
                            at_9999=sum(t["confidence"] >= 0.9999 for t in targets),
                            image=thumbnail(path.read_bytes()) if path.is_file() else None)
        return tile


def room_job_ids(runner: Runner, code: str, limit: int = MAX_TILES) -> tuple[list[str], set[str]]:
    """The room's jobs for the wall: every active one, then the newest finished, up to ``limit``;
    and those of them the instructor hid (from the gallery or the wall)."""
    recs = runner.store.list(limit * 2, room=code)
    active = [r for r in recs if r["status"] in ACTIVE]
    done = [r for r in recs if r["status"] not in ACTIVE]
    shown = (active + done)[:limit]
    return [r["id"] for r in shown], {r["id"] for r in shown if r["hidden"]}
