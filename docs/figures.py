"""Figures in README.md and docs/ that come from results files, kept equal to them.

In the Markdown a figure stands between two markers, `<!-- fig:NAME -->61.4%<!-- /fig -->`, and
NAME is defined below: which results file it comes from and how its text is made. Run

    .venv/bin/python docs/figures.py           # rewrite every marked figure from its JSON
    .venv/bin/python docs/figures.py --check   # (make docs-check) fail on any that disagrees

Whole tables stand between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`: those listed in
BLOCKS are what the bench script's markdown() makes of its JSON, checked the same way.

--check also fails on a marker whose name is not defined here, and on a defined figure that no
page uses, so that neither side can drift away from the other.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- fig:([a-z0-9-]+) -->(.*?)<!-- /fig -->", re.S)


def load(name: str) -> dict:
    return json.loads((ROOT / name).read_text())


def picture(name: str) -> dict:
    return load("docs/images/runs.json")["pictures"][name]


def to_all_digits(method: str, encoding: str, **options) -> dict:
    """An entry of bench/fooling.py's to_all_digits: the default options unless more are named."""
    for e in load("bench/results/fooling.json")["to_all_digits"]:
        extra = {k: v for k, v in e["options"].items() if k not in ("population", "generations", "steps")}
        if e["method"] == method and e["encoding"] == encoding and extra == options:
            return e
    raise KeyError((method, encoding, options))


def noise(model: str) -> dict:
    return load("bench/results/noise.json")["models"][model]


def showcase() -> dict:
    return load("bench/results/showcase-seeds.json")


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def fooling() -> dict:
    return load("bench/results/fooling.json")


def showcase_best() -> dict:
    """The ten-minute ImageNet run with every speed-up on (ONNX Runtime, all stones, grouped rendering)."""
    return fooling()["showcase_long"][-1]


def runtime(model: str) -> dict:
    return next(r for r in fooling()["runtimes"] if r["model"] == model)


def speedup(model: str) -> float:
    """ONNX Runtime's images a second over eager PyTorch's, each at its best batch."""
    r = runtime(model)
    return r["onnx"]["per_s"] / r["torch"]["per_s"]


def overheads(prefix: str) -> str:
    o = [1 - r["evals_per_s"] / r["raw_per_s"] for r in fooling()["throughput"]
         if "evals_per_s" in r and r["engine"].split(",")[1].strip().startswith(prefix)]
    return f"{min(o):.0%}–{max(o):.0%}" if min(o) != max(o) else f"{o[0]:.0%}"


def jobs_done(name: str) -> str:
    """'all 60 jobs finished and none was refused', or what did happen, over every row of a load run."""
    rows = load(f"bench/results/{name}.json")
    done, asked, refused = (sum(r[k] for r in rows) for k in ("completed", "students", "rejected"))
    if done == asked and not refused:
        return f"all {done} jobs finished and none was refused"
    return f"{done} of {asked} jobs finished, {refused} refused"


FIGURES: dict[str, Callable[[], str]] = {
    # the README's pictures (docs/images/runs.json, made by make docs-images)
    "mnist-direct-evals": lambda: f"{picture('mnist-grid.png')['evaluations']:,}",
    "mnist-direct-seconds": lambda: f"{picture('mnist-grid.png')['seconds']:.1f} s",
    "mnist-cppn-evals": lambda: f"{picture('mnist-cppn-grid.png')['evaluations']:,}",
    "mnist-cppn-seconds": lambda: f"{picture('mnist-cppn-grid.png')['seconds']:.1f} s",
    "imagenet-gradient-steps": lambda: f"{picture('imagenet-grid.png')['steps']} steps",
    "imagenet-gradient-seconds": lambda: f"{picture('imagenet-grid.png')['seconds']:.0f} s",
    # every digit at 99.99% (bench/results/fooling.json, 5 seeds each)
    "digits-direct-median": lambda: f"{to_all_digits('map-elites', 'direct')['median_s']:.1f} s",
    "digits-direct-seeds": lambda: f"{to_all_digits('map-elites', 'direct')['seeds']} seeds",
    "digits-cppn-median": lambda: f"{to_all_digits('map-elites', 'cppn')['median_s']:.1f} s",
    "digits-cppn-reached": lambda: "{reached} of {seeds} seeds".format(**to_all_digits('map-elites', 'cppn')),
    "digits-direct-worst": lambda: f"{to_all_digits('map-elites', 'direct')['worst_s']:.1f} s",
    "digits-direct-evals": lambda: f"{to_all_digits('map-elites', 'direct')['median_evals']:,}",
    "digits-uniform-evals": lambda: f"{to_all_digits('map-elites', 'direct', parents='uniform')['median_evals']:,}",
    "digits-gradient-worst": lambda: f"{to_all_digits('gradient', 'direct')['worst_s']:.1f} s",
    # random images (bench/results/noise.json)
    "noise-lenet-n": lambda: f"{noise('lenet-mnist')['n']:,}",
    "noise-lenet-label": lambda: noise("lenet-mnist")["top_label"],
    "noise-lenet-share": lambda: pct(noise("lenet-mnist")["top_label_share"], 0),
    "noise-lenet-median": lambda: pct(noise("lenet-mnist")["median"]),
    "noise-mean-share": lambda: pct(noise("lenet-mnist-mean")["top_label_share"]),
    "noise-mean-label": lambda: noise("lenet-mnist-mean")["top_label"],
    "noise-mean-median": lambda: pct(noise("lenet-mnist-mean")["median"]),
    "noise-imagenet-n": lambda: f"{noise('efficientnet-lite0-imagenet')['n']:,}",
    "noise-imagenet-median": lambda: pct(noise("efficientnet-lite0-imagenet")["median"]),
    "noise-imagenet-p95": lambda: pct(noise("efficientnet-lite0-imagenet")["p95"]),
    "noise-imagenet-label": lambda: noise("efficientnet-lite0-imagenet")["top_label"],
    "noise-imagenet-share": lambda: pct(noise("efficientnet-lite0-imagenet")["top_label_share"], 0),
    # ImageNet CPPN evolution over seeds, through the CLI (bench/results/showcase-seeds.json)
    "showcase-median": lambda: pct(showcase()["median_of_medians"]),
    "showcase-range": lambda: f"{pct(showcase()['min_median'])}–{pct(showcase()['max_median'])}",
    "showcase-seeds": lambda: f"seeds {', '.join(map(str, showcase()['seeds']))}",
    "showcase-generations": lambda: f"{showcase()['generations']:,}",
    "showcase-evals": lambda: f"{statistics.median(r['evaluations'] for r in showcase()['runs']):,.0f}",
    # the fooling engines and runtimes (bench/results/fooling.json)
    "gradient-cppn-median": lambda: f"{to_all_digits('gradient', 'cppn')['median_s']:.1f} s",
    "engine-overhead-direct": lambda: overheads("direct"),
    "onnx-effnet-speedup": lambda: f"{speedup('efficientnet-lite0-imagenet'):.1f} times",
    "onnx-lenet-speedup": lambda: f"{speedup('lenet-mnist'):.2f} times",
    "showcase-best-evals": lambda: f"{showcase_best()['evaluations']:,}",
    "showcase-best-rate": lambda: f"{showcase_best()['evals_per_s']:.0f}",
    "showcase-best-median": lambda: pct(showcase_best()["median"]),
    "showcase-best-top": lambda: ", ".join(f"{k} {pct(v, 0)}" for k, v in sorted(
        showcase_best()["confidences"].items(), key=lambda kv: -kv[1])[:3]),
    "showcase-best-bottom": lambda: ", ".join(f"{k} {pct(v)}" for k, v in sorted(
        showcase_best()["confidences"].items(), key=lambda kv: kv[1])[:2]),
    "showcase-torch-median": lambda: pct(fooling()["showcase_long"][0]["median"]),
    "pgd-torchattacks-success": lambda: "{torchattacks_success} of {images}".format(**fooling()["pgd"]),
    "pgd-time-ratio": lambda: f"{fooling()['pgd']['ours_s'] / fooling()['pgd']['torchattacks_s']:.2f}",
    # the classroom load runs (bench/results/load*.json)
    "load-jobs": lambda: jobs_done("load"),
    "load-hostile-jobs": lambda: jobs_done("load-hostile"),
    "load-hostile-healthz-p99": lambda: f"{load('bench/results/load-hostile.json')[0]['healthz_p99_ms']:.0f} ms",
    "load-hostile-disk": lambda: "{peak_data_dir_mb:.1f} MB of its {disk_budget_mb} MB".format(
        **load("bench/results/load-hostile.json")[0]),
    "rss-terms": lambda: (lambda r: f"RSS {r['rss_after_50_jobs_mb']:.0f} MB after 50 jobs, "
                          f"{r['rss_after_500_jobs_mb']:.0f} MB after 500")(load("bench/results/load-rss.json")[0]),
    # one engine, and a cluster's capacity from it (bench/results/engine.json)
    "engine-measured": lambda: (lambda e: f"{e['cores']}-core {e['device'].upper()}: {e['jobs']['jobs_per_min']:.0f} "
                                f"jobs/min, LeNet {lenet_rate(e):,.0f} img/s, "
                                f"{e['jobs']['mirror_cpu_ms_per_frame']:.2f} ms")(engine()),
    "engine-jobs-per-core": lambda: f"{1000 / (5 * engine()['jobs']['mirror_cpu_ms_per_frame']):.0f}",
    "course-one-engine": lambda: f"{300 / engine()['jobs']['jobs_per_min']:.1f} minutes",
    "course-32-engines": lambda: f"{60 * 300 / (32 * engine()['jobs']['jobs_per_min']):.0f} s",
    # scoring (bench/results/score.json)
    "tensor-lenet-share": lambda: tensor_share("lenet-mnist"),
    "tensor-effnet-share": lambda: tensor_share("efficientnet-lite0-imagenet"),
    "tensor-over-png": lambda: f"{tensor_over_png('lenet-mnist'):.0f} times",
    "effnet-batching-16": lambda: "{on:.0f} against {off:.0f}".format(**png_rate("efficientnet-lite0-imagenet", 16)),
    # the bundled LeNets (models/*.meta.json, written by train-lenet)
    "lenet-accuracy": lambda: pct(meta("lenet-mnist")["test_accuracy"], 2),
    "lenet-seeds-accuracy": lambda: "{}-{}".format(*(pct(f(seed_accuracies()), 2) for f in (min, max))),
    "lenet-mean-accuracy": lambda: pct(meta("lenet-mnist-mean")["test_accuracy"], 2),
    "lenet-train-seconds": lambda: f"about {meta('lenet-mnist')['seconds']:.0f} s",
    # the server's baseline takes 100 images at ImageNet size; bench/noise.py timed its 1000
    "noise-imagenet-seconds": lambda: (lambda r: f"about {r['seconds'] * 100 / r['n']:.0f} s")(
        noise("efficientnet-lite0-imagenet")),
    # Ray against the local backend, 50 students on this machine (bench/results/load-*.json)
    "ray-jobs-cost": lambda: pct(1 - ray_vs_local()[0], 0),
    "ray-p99-lower": lambda: pct(1 - ray_vs_local()[1], 0),
    # the class wall (bench/results/wall*.json)
    "wall-per-tile": lambda: f"{load('bench/results/wall.json')['stream']['per_tile_median']:.2f}",
    "wall-single-before": lambda: f"{load('bench/results/wall-single-ec0cea3.json')['stream']['per_tile_median']:.2f}",
    "wall-single-after": lambda: f"{load('bench/results/wall-single.json')['stream']['per_tile_median']:.2f}",
    "wall-idle-cpu": lambda: pct(load("bench/results/wall-idle.json")["cpu_cores_walls_open"]),
    # PGD (bench/results/fooling.json)
    "pgd-success": lambda: "{ours_success} of {images}".format(**load("bench/results/fooling.json")["pgd"]),
}


def _bench(script: str):
    """A bench script as a module, for its markdown() (the tables it prints after a run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{script}", ROOT / "bench" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Whole tables: `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->` hold what the script prints from its JSON.
def ray_table() -> str:
    rows = [("local", "server", load("bench/results/load-local-50.json")[0]),
            ("ray", "server (auto here)", load("bench/results/load-ray.json")[0]),
            ("ray", "engine", load("bench/results/load-ray-engines.json")[0])]
    out = ["| backend | scoring on | students | jobs done | wall s | jobs/minute | score req/s | p50 ms | p99 ms "
           "| slowest / fastest job steps/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {b} | {where} | {r['students']} | {r['completed']} | {r['wall_s']:.1f} | "
            f"{60 * r['completed'] / r['wall_s']:.1f} | {r['score_per_s']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['slowest_steps_per_s']:.1f} / {r['fastest_steps_per_s']:.1f} |"
            for b, where, r in rows]
    return "\n".join(out)


def engine_table() -> str:
    e = load("bench/results/engine.json")
    lenet, effnet = (next(s for s in e["scoring"] if s["model"] == m) for m in ("lenet-mnist",
                                                                                "efficientnet-lite0-imagenet"))
    return "\n".join([
        f"| engine | classroom jobs/min | mirror CPU per frame | LeNet scoring (batches of {lenet['batch']}, "
        f"{lenet['callers']} callers) | EfficientNet-Lite0 scoring (batches of {effnet['batch']}) |",
        "|---|---|---|---|---|",
        f"| {e['device'].upper()}, {e['cores']} cores | {e['jobs']['jobs_per_min']:.1f} | "
        f"{e['jobs']['mirror_cpu_ms_per_frame']:.2f} ms | {lenet['images_per_s']:,.0f} img/s | "
        f"{effnet['images_per_s']:.0f} img/s |"])


def capacity_table() -> str:
    """docs/deploy.md: a cluster's capacity, as multiples of one engine measured here."""
    e = load("bench/results/engine.json")
    jobs, frame_ms = e["jobs"]["jobs_per_min"], e["jobs"]["mirror_cpu_ms_per_frame"]
    lenet = next(s for s in e["scoring"] if s["model"] == "lenet-mnist")["images_per_s"]
    out = ["| machines x GPUs | engines | classroom jobs/min | LeNet scoring img/s | running jobs (4 per engine) "
           "| server cores to follow them |", "|---|---|---|---|---|---|"]
    for n, g in ((1, 1), (1, 4), (4, 8)):
        k = n * g
        out.append(f"| {n} x {g} | {k} | {k * jobs:,.0f} | {k * lenet:,.0f} | {k * e['engine_jobs']} | "
                   f"{k * e['engine_jobs'] * 5 * frame_ms / 1000:.2f} |")
    return "\n".join(out)


def meta(model: str) -> dict:
    return load(f"models/{model}.meta.json")


def seed_accuracies() -> list[float]:
    return [meta(f"lenet-mnist-s{i}")["test_accuracy"] for i in range(1, 5)]


def ray_vs_local() -> tuple[float, float]:
    """Ray's jobs a minute and scoring p99 as fractions of the local backend's."""
    local, ray = (load(f"bench/results/{n}.json")[0] for n in ("load-local-50", "load-ray"))
    rate = (ray["completed"] / ray["wall_s"]) / (local["completed"] / local["wall_s"])
    return rate, ray["p99_ms"] / local["p99_ms"]


def score() -> dict:
    return load("bench/results/score.json")


def tensor_share(model: str) -> str:
    """POST /score/tensor's images a second as a share of the raw forward rate (its range over clients)."""
    res = score()
    best = max(res["raw"][model].values())
    shares = [r["ips"] / best for r in res["tensor"] if r["model"] == model]
    low, high = f"{min(shares):.0%}", f"{max(shares):.0%}"
    return low if low == high else f"{low}–{high}"


def tensor_over_png(model: str) -> float:
    res = score()
    return max(r["ips"] for r in res["tensor"] if r["model"] == model) / \
        max(r["rps"] for r in res["png"] if r["model"] == model)


def png_rate(model: str, clients: int) -> dict:
    rows = [r for r in score()["png"] if r["model"] == model and r["clients"] == clients]
    return {("on" if r["batching"] else "off"): r["rps"] for r in rows}


def engine() -> dict:
    return load("bench/results/engine.json")


def lenet_rate(e: dict) -> float:
    return next(s for s in e["scoring"] if s["model"] == "lenet-mnist")["images_per_s"]


def wall_table() -> str:
    w = load("bench/results/wall.json")
    s, b = w["stream"], w["browser"]
    return "\n".join([
        "| running jobs (tiles) | stream frames/s | per tile (median, max) | worst tile gap | /healthz p50 / max "
        "| server CPU |", "|---|---|---|---|---|---|",
        f"| {s['tiles']} | {s['frames_per_s']:.0f} | {s['per_tile_median']:.2f}, {s['per_tile_max']:.2f} | "
        f"{s['worst_gap_s']:.1f} s | {s['healthz_p50_ms']:.0f} / {s['healthz_max_ms']:.0f} ms | "
        f"{w['server_cpu_cores']:.2f} cores |", "",
        f"Chromium at 1920x1080 ({w['date']}): {b['tiles']} tiles, {b['frames_per_s']:.0f} frames applied a second, "
        f"{b['animation_fps']:.0f} animation frames a second, {b['long_tasks']} long tasks (longest "
        f"{b['longest_task_ms']} ms), JavaScript heap {b['heap_mb']:.0f} MB."])


def wall_idle_table() -> str:
    w = load("bench/results/wall-idle.json")
    return "\n".join([
        "| idle jobs (tiles) | walls open | server CPU, no wall | server CPU, walls open | tiles per wall "
        "| /healthz p50 / p99 / max |", "|---|---|---|---|---|---|",
        f"| {w['jobs']} | {w['walls']} | {pct(w['cpu_cores_no_wall'])} | {pct(w['cpu_cores_walls_open'])} | "
        f"{w['tiles_per_wall_min']}-{w['tiles_per_wall_max']} | {w['healthz_p50_ms']:.1f} / "
        f"{w['healthz_p99_ms']:.1f} / {w['healthz_max_ms']:.0f} ms |"])


BLOCKS: dict[str, Callable[[], str]] = {
    "fooling": lambda: _bench("fooling").markdown(load("bench/results/fooling.json")),
    "load": lambda: _bench("load").markdown(load("bench/results/load.json")),
    "load-hostile": lambda: _bench("load").markdown(load("bench/results/load-hostile.json")),
    "load-ray": ray_table,
    "engine": engine_table,
    "wall": wall_table,
    "wall-idle": wall_idle_table,
    "capacity": capacity_table,
    "arena": lambda: _bench("arena").markdown(load("bench/results/arena.json")),
    "score": lambda: _bench("score").markdown(load("bench/results/score.json")),
    "experiments": lambda: (lambda m: m.markdown(m.kept()))(_bench("experiments")),
}
BLOCK = re.compile(r"(<!-- bench:([a-z0-9-]+) -->\n)(.*?)(\n<!-- /bench:\2 -->)", re.S)


def render_blocks(text: str, problems: list[str], used: set[str]) -> str:
    def fix(m: re.Match) -> str:
        name = m.group(2)
        if name not in BLOCKS:
            return m.group(0)  # a table no JSON can make yet (its script prints it while it measures)
        used.add(f"bench:{name}")
        try:
            value = BLOCKS[name]().strip("\n")
        except (OSError, KeyError, ValueError, StopIteration) as exc:  # a results file or an entry is missing
            problems.append(f"bench:{name}: its results cannot be read ({type(exc).__name__}: {exc})")
            return m.group(0)
        if value != m.group(3).strip("\n"):
            problems.append(f"bench:{name}: the table differs from what its results make (docs/figures.py BLOCKS)")
        return m.group(1) + value + m.group(4)

    return BLOCK.sub(fix, text)


def render(text: str) -> tuple[str, list[str], set[str]]:
    """The text with every figure made again; the problems found; the names used."""
    problems, used = [], set()

    def fix(m: re.Match) -> str:
        name = m.group(1)
        used.add(name)
        if name not in FIGURES:
            problems.append(f"unknown figure {name!r}")
            return m.group(0)
        try:
            value = FIGURES[name]()
        except (OSError, KeyError, ValueError) as exc:  # a results file or an entry in it is missing
            problems.append(f"{name}: its results cannot be read ({type(exc).__name__}: {exc})")
            return m.group(0)
        if value != m.group(2):
            problems.append(f"{name}: the text says {m.group(2)!r}, the results say {value!r}")
        return f"<!-- fig:{name} -->{value}<!-- /fig -->"

    return render_blocks(MARK.sub(fix, text), problems, used), problems, used


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="fail when a figure and its results disagree")
    args = ap.parse_args()
    failed, used = [], set()
    for page in PAGES:
        text = page.read_text()
        new, problems, names = render(text)
        used |= names
        failed += [f"{page.relative_to(ROOT)}: {p}" for p in problems]
        if not args.check and new != text:
            page.write_text(new)
    defined = set(FIGURES) | {f"bench:{name}" for name in BLOCKS}
    failed += [f"figure {name!r} is defined but no page uses it" for name in sorted(defined - used)]
    for line in failed:
        print(line, file=sys.stderr)
    if args.check and failed:
        print(f"{len(failed)} figure(s) disagree with bench/results: run `python docs/figures.py`", file=sys.stderr)
        return 1
    print(f"{len(used)} figures checked in {len(PAGES)} pages" if args.check else "figures written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
