"""The OpenAPI document is the contract: an independent checker (schemathesis, every check,
stateful phase included) finds no failure against a real server; a client generated from the
document (openapi-python-client) lists models, scores a PNG, runs a job and downloads its grid;
and the server's caps and names are in the document."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.experiments import catalog
from app.settings import ROOT
from tests.conftest import png_bytes
from tests.live_server import LiveServer

BIN = Path(sys.executable).parent
CAPS = dict(FOOLING_MAX_GENERATIONS="5", FOOLING_MAX_STEPS="5", FOOLING_MAX_POPULATION="20",
            FOOLING_MAX_TARGETS="10", FOOLING_WORKERS="1", FOOLING_QUEUE_SIZE="16",
            FOOLING_MAX_JOBS_PER_CLIENT="16", FOOLING_MAX_TENSOR_ROWS="8")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("contract"), **CAPS).start()
    yield srv
    srv.stop()


def test_schemathesis_with_all_checks_and_its_stateful_phase_finds_no_failure(server):
    # schemathesis.toml (read from the project root) lists the refusals a schema cannot express. Every
    # check runs by default; `--checks all` is not passed because it would override the file's
    # per-operation settings.
    cmd = [str(BIN / "schemathesis"), "--config-file", str(ROOT / "schemathesis.toml"), "--no-color", "run",
           f"{server.url}/openapi.json", "--seed", "11", "--max-examples", "6",
           "--phases", "examples,coverage,fuzzing,stateful"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    assert "Stateful" in report and "❌" not in report and "🚫" not in report, report[-4000:]
    log = server.log.read_text()
    assert " 500 " not in log and "Traceback" not in log, log[-3000:]


def test_a_generated_client_lists_scores_runs_and_downloads(server, tmp_path, mnist_test):
    out = tmp_path / "fooling_lab_client"
    gen = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--url", f"{server.url}/openapi.json",
                          "--meta", "none", "--output-path", str(out),
                          "--config", str(ROOT / "docs" / "examples" / "client-config.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert (out / "client.py").is_file(), gen.stdout[-3000:] + gen.stderr[-3000:]
    sys.path[:0] = [str(tmp_path), str(ROOT / "docs" / "examples")]
    try:
        example = importlib.import_module("generated_client")
        from fooling_lab_client import Client

        x, y = mnist_test
        digit = png_bytes(Image.fromarray((x[0, 0].numpy() * 255).round().astype(np.uint8)))
        with Client(base_url=server.url, timeout=60) as client:
            assert "lenet-mnist" in example.available_models(client)
            top = example.score_png(client, digit)
            assert top[0]["index"] == int(y[0]) and len(top) == 3
            job, grid = example.run_job(client, {"model": "lenet-mnist", "method": "map-elites", "targets": [1, 7],
                                                 "generations": 5, "seed": 0}, poll_s=0.05)
        assert job["status"] == "done" and [t["label"] for t in job["targets"]] == ["1", "7"]
        assert Image.open(__import__("io").BytesIO(grid)).format == "PNG"
    finally:
        del sys.path[:2]
        for name in [m for m in sys.modules if m.startswith(("fooling_lab_client", "generated_client"))]:
            del sys.modules[name]


def test_api_md_shows_the_generated_client_example():
    md = (ROOT / "docs" / "api.md").read_text()
    assert (ROOT / "docs" / "examples" / "generated_client.py").read_text() in md
    assert (ROOT / "docs" / "examples" / "client-config.yaml").read_text() in md


def test_the_document_holds_this_servers_caps_and_names(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    job = doc["components"]["schemas"]["JobSpec"]["properties"]
    assert [a["maximum"] for a in job["generations"]["anyOf"] if "maximum" in a] == [5]  # FOOLING_MAX_GENERATIONS
    assert [a["maximum"] for a in job["population"]["anyOf"] if "maximum" in a] == [20]
    assert job["targets"]["anyOf"][0]["maxItems"] == 10
    assert "lenet-mnist" in job["model"]["enum"] and "efficientnet-lite0-imagenet" in job["model"]["enum"]
    assert job["method"]["enum"] == ["evolve", "map-elites", "gradient", "fgsm", "pgd", "random"]
    assert job["params"]["additionalProperties"] is False and job["params"]["properties"]["epsilon"]["maximum"] == 1
    exp = doc["components"]["schemas"]["ExperimentSpec"]["properties"]
    assert exp["name"]["enum"] == list(catalog.EXPERIMENTS)
    control = doc["paths"]["/api/v1/jobs/{job_id}/{action}"]["post"]
    action = next(p for p in control["parameters"] if p["name"] == "action")
    assert set(action["schema"]["enum"]) == {"cancel", "pause", "resume", "step", "hide", "unhide", "pin", "unpin"}
    created = doc["paths"]["/api/v1/jobs"]["post"]["responses"]
    assert {"GetJob", "FollowJob", "DeleteJob"} <= set(created["201"]["links"])
    assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(created["429"]["headers"])
    for path in ("grid.png", "curve.png", "summary.json", "input.png"):
        assert f"/api/v1/jobs/{{job_id}}/{path}" in doc["paths"]
    tensor = doc["paths"]["/api/v1/score/tensor"]["post"]
    top_k = next(p for p in tensor["parameters"] if p["name"] == "top_k")
    assert top_k["schema"]["minimum"] == 1 and top_k["schema"]["maximum"] == 1000
