"""Score every image in a folder with Fooling Lab's REST API (plain httpx).

    python docs/examples/score_folder.py FOLDER [--url http://127.0.0.1:8000] [--model lenet-mnist]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx

IMAGES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


def score_folder(client: httpx.Client, folder: Path, model: str = "lenet-mnist", top_k: int = 3,
                 per_request: int = 16) -> dict[str, list[dict]]:
    """filename -> top-k predictions. Sends up to ``per_request`` images in one multipart request."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGES)
    out: dict[str, list[dict]] = {}
    for i in range(0, len(paths), per_request):
        batch = paths[i:i + per_request]
        files = [("file", (p.name, p.read_bytes())) for p in batch]
        r = client.post("/api/v1/score", data={"model": model, "top_k": str(top_k)}, files=files)
        if r.status_code != 200:  # every error is JSON: {"error", "detail", "field"}
            raise SystemExit(f"{r.status_code} {r.json()['detail']}")
        for result in r.json()["results"]:
            out[result["filename"]] = result["top"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="lenet-mnist")
    args = ap.parse_args()
    with httpx.Client(base_url=args.url, timeout=60) as client:
        for name, top in score_folder(client, args.folder, args.model).items():
            best = top[0]
            print(f"{name}: {best['label']} ({best['confidence']:.2%})")


if __name__ == "__main__":
    main()
