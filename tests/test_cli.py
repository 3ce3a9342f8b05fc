"""The command line: a `fooling-lab` console script with the same commands as `python -m app`,
JSON on stdout with --json, progress bars only on a terminal, clean errors with exit code 2."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from app.cli.main import build_parser
from app.settings import ROOT

SCRIPT = Path(sys.executable).parent / "fooling-lab"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def commands(help_text: str) -> list[str]:
    names = ["serve", "fetch-mnist", "fetch-photos", "fetch-weights", "train-lenet", "fool", "experiment"]
    return [n for n in names if n in help_text]


def test_console_script_has_the_same_commands_as_python_m_app():
    assert SCRIPT.is_file(), "pip install -e . installs the fooling-lab console script"
    script = run("--help")
    module = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert script.returncode == module.returncode == 0
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert set(commands(script.stdout)) == set(commands(module.stdout)) == parser_commands
    assert script.stdout.startswith("usage: fooling-lab") and module.stdout.startswith("usage: python -m app")


def test_fool_json_is_the_summary_and_no_progress_without_a_terminal(tmp_path):
    p = run("fool", "--targets", "1,7", "--generations", "30", "--out", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)  # stdout holds exactly one JSON document
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 30 and [t["label"] for t in summary["targets"]] == ["1", "7"]
    assert "\r" not in p.stderr and "step/s" not in p.stderr  # not a terminal: no bar


def test_progress_bar_on_a_terminal_unless_quiet(tmp_path):
    def on_terminal(*extra: str) -> str:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
        p = subprocess.Popen([str(SCRIPT), "fool", "--targets", "3", "--generations", "40", "--out",
                              str(tmp_path / "-".join(extra or ("bar",))), *extra],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not data:
                break
            chunks.append(data)
        out, _ = p.communicate(timeout=120)
        os.close(master)
        assert p.returncode == 0 and "1 targets" in out
        return b"".join(chunks).decode("utf-8", "replace")

    shown = on_terminal()
    assert "step/s" in shown and "40/40" in shown and "at 99.99%" in shown
    assert "step/s" not in on_terminal("--quiet")


def test_errors_are_one_line_and_exit_2(tmp_path):
    p = run("fool", "--model", "no-such-model", "--out", str(tmp_path))
    assert p.returncode == 2 and "unknown model 'no-such-model'" in p.stderr and "Traceback" not in p.stderr
    p = run("fool", "--targets", "12", "--out", str(tmp_path))
    assert p.returncode == 2 and "out of range" in p.stderr and "Traceback" not in p.stderr
    p = run("experiment", "nonsense", "--out", str(tmp_path), "--json")
    assert p.returncode == 2 and "unknown experiment" in p.stderr and p.stdout == ""


def test_fetch_weights_reports_each_model(tmp_path):
    p = run("fetch-weights", "not-a-model", "--json")
    assert p.returncode == 1
    report = json.loads(p.stdout)
    assert report["not-a-model"]["ok"] is False and "not a torchvision model" in report["not-a-model"]["error"]


def test_experiment_json(tmp_path):
    p = run("experiment", "logistic", "--quick", "--out", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result == json.loads((tmp_path / "results.json").read_text())
    assert abs(result["p_x"] - 0.0474) < 1e-4


def test_param_values_are_words_numbers_booleans_or_json():
    from app.cli.fool import parse_params

    got = parse_params(["stepping_stones=all", "quoted=\"all\"", "eta=15", "lr=1e-3", "ten-crop", "stop_at=null",
                        "random_start=False", "targets=[1, 2]", "path=a/b=c"])
    assert got == {"stepping_stones": "all", "quoted": "all", "eta": 15, "lr": 1e-3, "ten_crop": True,
                   "stop_at": None, "random_start": False, "targets": [1, 2], "path": "a/b=c"}
    for bad, says in (("=3", "NAME=VALUE"), ("x=[1", "not valid JSON"), ("x={", "not valid JSON")):
        with pytest.raises(ValueError, match=re.escape(says)):
            parse_params([bad])


def test_a_bad_param_value_is_one_line_naming_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "app", "fool", "--model", "lenet-mnist", "--method", "map-elites",
                        "--generations", "2", "--param", "mutation_rate=lots", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "Traceback" not in r.stderr and last.startswith("error: params.mutation_rate")


def test_the_command_lines_files_are_a_jobs_downloads(client, tmp_path):
    """`fool` drives the same Run as a job: the same files, the same summary.json, and (same seed,
    same device) the same images and confidences. Only the id and the timings differ."""
    from app.cli.main import main
    from tests.helpers import wait

    assert main(["fool", "--targets", "3,8", "--generations", "20", "--population", "40", "--seed", "5",
                 "--param", "stop_at=null", "--out", str(tmp_path), "--quiet"]) == 0
    body = {"model": "lenet-mnist", "method": "map-elites", "targets": [3, 8], "generations": 20, "population": 40,
            "seed": 5, "params": {"stop_at": None}}
    job = wait(client, client.post("/api/v1/jobs", json=body).json()["id"])
    assert {"grid", "curve", "summary"} <= set(job["links"]), job  # (the whole job, should this fail again)
    downloads = {"0.png": job["targets"][0]["image"], "1.png": job["targets"][1]["image"],
                 **{name: job["links"][key] for name, key in (("grid.png", "grid"), ("curve.png", "curve"),
                                                               ("summary.json", "summary"))}}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(downloads)
    got = client.get(downloads["summary.json"]).json()
    mine = json.loads((tmp_path / "summary.json").read_text())
    assert set(mine) == set(got) and mine["settings"] == got["settings"] and mine["id"] is None
    assert [set(t) for t in mine["targets"]] == [set(t) for t in got["targets"]]
    assert [t["file"] for t in got["targets"]] == ["0.png", "1.png"]
    assert [t["confidence"] for t in mine["targets"]] == [t["confidence"] for t in got["targets"]]
    assert (tmp_path / "0.png").read_bytes() == client.get(downloads["0.png"]).content
    assert mine["runtime"] == got["runtime"] and mine["steps"] == got["steps"] == 20


def test_a_run_keeps_its_first_step_however_small_its_budget(lab, tmp_path):
    """The time budget stops a run before a step, never before the first: there is always a best
    image to save (a budget of a microsecond used to leave `fool` with nothing and a traceback)."""
    from app.fooling.base import model_score_fn
    from app.jobs.run import Run
    from app.jobs.spec import JobSpec

    spec = JobSpec(model="lenet-mnist", method="map-elites", targets=[1], generations=50, max_seconds=1e-6)
    entry, model = lab.registry.get("lenet-mnist"), lab.registry.model("lenet-mnist")
    run = Run(spec, entry.labels, [1], options=spec.options())
    run.start(entry, model, model_score_fn(model))
    steps = []
    while (snap := run.step()) is not None:
        steps.append(snap.step)
    assert steps == [0] and run.stop_reason == "time budget (1e-06 s)"
    assert run.save(tmp_path, "done")["stop_reason"] == run.stop_reason and (tmp_path / "0.png").is_file()
