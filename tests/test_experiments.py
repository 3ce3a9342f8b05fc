"""Experiments run from the command line on quick settings and write their numbers and plots
(the numbers' values are science, checked in docs; here: that they are computed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.settings import ROOT


def experiment(name: str, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "experiment", name, "--seed", "0", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["logistic", "volume", "smoothing"])
def test_quick_experiment_writes_numbers_and_plots(tmp_path, name):
    p = experiment(name, tmp_path, "--quick")
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["experiment"] == name and result["seed"] == 0 and result["quick"] is True
    assert result["plots"] and all((tmp_path / f).stat().st_size > 1000 for f in result["plots"])
    if name == "logistic":
        assert round(result["p_x"], 4) == 0.0474 and round(result["p_y"], 2) == 0.88
    if name == "volume":
        rows = result["rows"]
        assert [r["radius"] for r in rows] == sorted(r["radius"] for r in rows)
        assert all(0 <= r["fooling"] <= 1 and 0 <= r["real"] <= 1 for r in rows)
    if name == "smoothing":
        blur = result["filters"]["gaussian blur (sigma)"]
        assert blur[0]["strength"] == 0 and all(0 <= r["test_accuracy"] <= 1 for r in blur)
        assert result["evolution_against_blur_sigma_1"]["evaluations"] > 0


def test_unknown_experiment_is_a_clear_error(tmp_path):
    p = experiment("astrology", tmp_path)
    assert p.returncode == 2 and "unknown experiment" in p.stderr
