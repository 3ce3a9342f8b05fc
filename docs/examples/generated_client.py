"""The typed client that openapi-python-client generates from the server's own OpenAPI document:
list the models, score a PNG, start a job, wait for it and download its grid.

    openapi-python-client generate --url http://127.0.0.1:8000/openapi.json --meta none \\
        --output-path fooling_lab_client --config docs/examples/client-config.yaml
    python docs/examples/generated_client.py digit.png [--url http://127.0.0.1:8000] [--out grid.png]
"""

from __future__ import annotations

import argparse
import io
import time
import uuid
from pathlib import Path

from fooling_lab_client import Client
from fooling_lab_client.api.jobs import create_job, get_job, job_grid
from fooling_lab_client.api.models import list_models
from fooling_lab_client.api.scoring import score
from fooling_lab_client.models import BodyScore, BodyScoreModel, ErrorBody, JobSpec
from fooling_lab_client.types import File

FINISHED = ("done", "cancelled", "failed", "interrupted")


def available_models(client: Client) -> list[str]:
    return [m.id for m in list_models.sync(client=client).models if m.available]


def score_png(client: Client, png: bytes, model: str = "lenet-mnist", top_k: int = 3) -> list[dict]:
    body = BodyScore(file=[File(payload=io.BytesIO(png), file_name="image.png", mime_type="image/png")],
                     model=BodyScoreModel(model), top_k=top_k)
    answer = score.sync(client=client, body=body)
    if isinstance(answer, ErrorBody):
        raise SystemExit(f"{answer.error}: {answer.detail}")
    return [p.to_dict() for p in answer.results[0].top]


def run_job(client: Client, spec: dict, poll_s: float = 0.2) -> tuple[dict, bytes]:
    """Start a job (safe to retry: the same Idempotency-Key gives the same job), wait for its end,
    and return it with its grid PNG."""
    made = create_job.sync(client=client, body=JobSpec.from_dict(spec), idempotency_key=str(uuid.uuid4()))
    if isinstance(made, ErrorBody):
        raise SystemExit(f"{made.error}: {made.detail}")
    job_id = made["id"]
    while (job := get_job.sync(client=client, job_id=job_id).to_dict())["status"] not in FINISHED:
        time.sleep(poll_s)
    grid = job_grid.sync_detailed(client=client, job_id=job_id)
    return job, grid.content


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("png", type=Path)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--out", type=Path, default=Path("grid.png"))
    args = ap.parse_args()
    with Client(base_url=args.url, timeout=60) as client:
        print("models:", ", ".join(available_models(client)))
        print("scores:", score_png(client, args.png.read_bytes()))
        job, grid = run_job(client, {"model": "lenet-mnist", "method": "map-elites", "targets": [1, 7],
                                     "generations": 100, "seed": 0})
        print(job["status"], [(t["label"], round(t["confidence"], 4)) for t in job["targets"]])
        args.out.write_bytes(grid)


if __name__ == "__main__":
    main()
