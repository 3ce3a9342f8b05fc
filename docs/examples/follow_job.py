"""Start a fooling job and follow its Server-Sent Events to the end (plain httpx).

    python docs/examples/follow_job.py [--url http://127.0.0.1:8000] [--generations 300] [--out grid.png]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import httpx


def events(client: httpx.Client, url: str) -> Iterator[tuple[str, dict]]:
    """(event name, JSON data) pairs from an SSE stream, until the server sends `close`."""
    with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
        r.raise_for_status()
        name, data = "message", []
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:  # a blank line ends one event
                yield name, json.loads("\n".join(data))
                if name == "close":
                    return
                name, data = "message", []


def run_job(client: httpx.Client, spec: dict, on_frame=print) -> dict:
    """Start a job, report each frame, and return the final job."""
    r = client.post("/api/v1/jobs", json=spec)
    if r.status_code != 201:
        raise SystemExit(f"{r.status_code} {r.json()['detail']}")
    job = r.json()
    final: dict = {}
    for name, data in events(client, job["links"]["events"]):
        if name == "snapshot":
            conf = [t["confidence"] for t in data["targets"]]
            on_frame(f"step {data['step']:5d}  evaluations {data['evaluations']:8d}  "
                     f"min {min(conf):.4f}  max {max(conf):.4f}")
        elif name == "final":
            final = data
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("grid.png"))
    args = ap.parse_args()
    spec = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
            "generations": args.generations, "seed": 0}
    with httpx.Client(base_url=args.url, timeout=None) as client:
        final = run_job(client, spec)
        for t in final["targets"]:
            print(f"{t['label']:>12}: {t['confidence']:.4%}")
        args.out.write_bytes(client.get(final["links"]["grid"]).content)
        print(f"{final['status']}: grid -> {args.out}")


if __name__ == "__main__":
    main()
