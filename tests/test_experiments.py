"""Experiments run on quick settings and write their numbers and plots (the numbers' values are
science, checked in docs; here: that they are computed). They run in this process, as the command
line runs them (its own path is tested in test_cli.py and below)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from app.settings import ROOT


def experiment(name: str, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "experiment", name, "--seed", "0", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["logistic", "volume", "smoothing", "blackbox", "neurons", "transfer", "ensemble",
                                  "retrain"])
def test_quick_experiment_writes_numbers_and_plots(tmp_path, name):
    from app.experiments import catalog

    returned = catalog.run(name, 0, tmp_path, quick=True)
    result = json.loads((tmp_path / "results.json").read_text())
    assert result == json.loads(json.dumps(returned))
    assert result["experiment"] == name and result["seed"] == 0 and result["quick"] is True
    assert result["plots"] and all((tmp_path / f).stat().st_size > 1000 for f in result["plots"])
    if name == "logistic":
        assert round(result["p_x"], 4) == 0.0474 and round(result["p_y"], 2) == 0.88
    if name == "volume":
        rows = result["rows"]
        assert [r["radius"] for r in rows] == sorted(r["radius"] for r in rows)
        assert all(0 <= r["fooling"] <= 1 and 0 <= r["real"] <= 1 for r in rows)
    if name == "blackbox":
        assert result["onnx_matches_pytorch"] == 1.0 and "black box" in result["gradient_refused_on_black_box"]
        assert result["black_box_evolution"]["evaluations"] > 0 and result["white_box_gradient"]["queries"] > 0
    if name == "transfer":
        n = len(result["networks"])
        assert n >= 2 and len(result["mean_target_confidence"]) == n
        assert all(len(row) == n and all(0 <= v <= 1 for v in row) for row in result["mean_target_confidence"])
    if name == "ensemble":
        assert len(result["ensemble_images_scored_by_each_member"]) == len(result["members"]) >= 2
        assert result["evolution_ensemble"]["evaluations"] > 0 and result["gradient_ensemble"]["steps"] > 0
    if name == "retrain":
        rows = result["rows"]
        assert [r["iteration"] for r in rows] == list(range(result["iterations"] + 1))
        assert all(0 <= r["test_accuracy"] <= 1 and 0 <= r["at_9999"] <= r["evolved"] for r in rows)
    if name == "neurons":
        assert {layer["layer"] for layer in result["layers"]} >= {"conv1", "conv2"}
    if name == "smoothing":
        blur = result["filters"]["gaussian blur (sigma)"]
        assert blur[0]["strength"] == 0 and all(0 <= r["test_accuracy"] <= 1 for r in blur)
        assert result["evolution_against_blur_sigma_1"]["evaluations"] > 0


def test_unknown_experiment_is_a_clear_error(tmp_path):
    p = experiment("astrology", tmp_path)
    assert p.returncode == 2 and "unknown experiment" in p.stderr


def test_experiment_from_the_app_has_a_results_page(client):
    r = client.post("/api/v1/experiments", json={"name": "logistic", "quick": True, "seed": 0})
    assert r.status_code == 201
    exp_id = r.json()["id"]
    t0 = time.time()
    while (st := client.get(f"/api/v1/experiments/{exp_id}").json())["status"] not in ("done", "failed"):
        assert time.time() - t0 < 120
        time.sleep(0.1)
    assert st["status"] == "done" and round(st["results"]["p_x"], 4) == 0.0474
    page = client.get(f"/experiments/{exp_id}")
    assert page.status_code == 200 and "logistic.png" in page.text and 'data-status="done"' in page.text
    plot = client.get(f"/api/v1/experiments/{exp_id}/logistic.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    again = client.get(f"/api/v1/experiments/{exp_id}/logistic.png", headers={"If-None-Match": plot.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/api/v1/experiments/{exp_id}/secret.png").status_code == 404
    assert client.post("/api/v1/experiments", json={"name": "astrology"}).json()["field"] == "name"
    assert client.get("/experiments").status_code == 200
