"""The README's pictures, made from real runs (`make docs-images`): a server of its own, real jobs,
and Debian's Chromium for the pages. Writes small PNGs into docs/images/ and, beside them,
docs/images/runs.json: each picture's job settings, seed and result, so every picture is
reproducible and every number under it comes from a file.

    .venv/bin/python docs/make_images.py
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.jobs.presets import SHOWCASE  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

OUT = ROOT / "docs" / "images"
ADMIN = "docs-images-token"
TEACHER = {"Authorization": f"Bearer {ADMIN}"}
CHROMIUM = "/usr/bin/chromium"

MNIST_DIRECT = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
                "population": 100, "generations": 5000, "seed": 0, "title": "every digit from noise"}
MNIST_CPPN = {**MNIST_DIRECT, "encoding": "cppn", "title": "digits as regular patterns"}
IMAGENET = {"model": "efficientnet-lite0-imagenet", "method": "gradient", "encoding": "direct", "targets": SHOWCASE,
            "steps": 100, "seed": 0, "params": {"stop_at": 0.99}, "title": "ten ImageNet classes, by gradient"}


def wait(c: httpx.Client, job_id: str, timeout: float = 900) -> dict:
    t0 = time.time()
    while (job := c.get(f"/api/v1/jobs/{job_id}").json())["status"] in ("queued", "running", "paused"):
        assert time.time() - t0 < timeout, job["status"]
        time.sleep(0.2)
    assert job["status"] == "done", job
    return job


def small_png(data: bytes, path: Path, width: int) -> None:
    """Scaled to ``width`` (never up), nearest-neighbour for pixel art, as an optimised 8-bit PNG."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def record(job: dict) -> dict:
    return {"settings": job["settings"], "steps": job["progress"]["step"],
            "evaluations": job["progress"]["evaluations"], "seconds": job["progress"]["elapsed"],
            "targets": {t["label"]: round(t["confidence"], 6) for t in job["targets"]}}


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    runs: dict = {"made": time.strftime("%Y-%m-%d"), "pictures": {}}
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp), preload="lenet-mnist,efficientnet-lite0-imagenet",
                            FOOLING_ADMIN_TOKEN=ADMIN, FOOLING_WORKERS="4").start(timeout=600)
        try:
            with httpx.Client(base_url=server.url, timeout=120, headers=TEACHER) as c:
                made = {}
                for name, spec in (("mnist-grid", MNIST_DIRECT), ("mnist-cppn-grid", MNIST_CPPN),
                                   ("imagenet-grid", IMAGENET)):
                    job = wait(c, c.post("/api/v1/jobs", json=spec).json()["id"])
                    made[name] = job
                    small_png(c.get(job["links"]["grid"]).content, OUT / f"{name}.png", 720)
                    runs["pictures"][f"{name}.png"] = record(job)
                # A class: a room, eight students each running a job of their own, the wall on the projector
                code = c.post("/api/v1/rooms", json={"title": "Fooling Lab demo"}).json()["code"]
                students = []
                for i, (encoding, target) in enumerate([(e, t) for e in ("direct", "cppn") for t in (0, 3, 5, 7)]):
                    s = httpx.Client(base_url=server.url, timeout=120)
                    s.get("/")
                    s.post(f"/api/v1/rooms/{code}/join", json={"nickname": f"student{i + 1}"}).raise_for_status()
                    spec = {**MNIST_DIRECT, "encoding": encoding, "targets": [target], "seed": i, "title": None}
                    students.append((s, s.post("/api/v1/jobs", json=spec).json()["id"]))
                for s, job_id in students:
                    wait(s, job_id)
                    s.close()
                runs["pictures"]["wall.png"] = {"room": "8 students, LeNet MAP-Elites on one digit each, seeds 0-7"}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                desk = browser.new_context(viewport={"width": 1280, "height": 800}, extra_http_headers=TEACHER)
                page = desk.new_page()
                page.goto(f"{server.url}/jobs/{made['mnist-grid']['id']}", wait_until="networkidle")
                small_png(page.screenshot(), OUT / "run-page.png", 1024)
                runs["pictures"]["run-page.png"] = {"job": "mnist-grid.png's"}
                page.goto(f"{server.url}/r/{code}/wall", wait_until="load")
                page.wait_for_selector(".tile img", timeout=30_000)
                page.wait_for_timeout(1500)
                small_png(page.screenshot(), OUT / "wall.png", 1024)
                phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                            is_mobile=True, extra_http_headers=TEACHER).new_page()
                phone.goto(f"{server.url}/jobs/{made['imagenet-grid']['id']}", wait_until="networkidle")
                small_png(phone.screenshot(), OUT / "run-page-phone.png", 390)
                runs["pictures"]["run-page-phone.png"] = {"job": "imagenet-grid.png's"}
                browser.close()
        finally:
            server.stop()
    (OUT / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
    for path in sorted(OUT.glob("*.png")):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
