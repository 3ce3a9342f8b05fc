"""Benchmark the fooling engines on this machine and print Markdown tables (for docs/benchmarks.md).

    .venv/bin/python bench/fooling.py [--seeds 5] [--json bench/results/fooling.json]

1. Engine throughput: evaluations per second of each engine beside the model's raw batched
   forward pass at the same batch size (overhead = 1 - engine / raw).
2. Time and evaluations until all 10 MNIST digits reach 99.99%, per method, over several seeds.
3. The same direct MAP-Elites run with pyribs (PyPI ``ribs``): its archive and scheduler, our
   model, budget and mutation (polynomial, rate 0.1, eta 15, parents uniform from the archive).
4. Targeted PGD (100 MNIST digits, eps 0.3, 40 steps) against torchattacks at equal steps.
5. Runtimes (``--only runtimes``): raw forward in PyTorch eager and in ONNX Runtime, each at its
   best batch, for LeNet and EfficientNet-Lite0.
6. The ImageNet showcase (``--only showcase``): CPPN MAP-Elites on EfficientNet-Lite0 over the ten
   showcase classes, 32 offspring a generation, single-crop fitness, for ``--showcase-seconds``:
   evaluations per second and the median of the ten best confidences, in PyTorch and in the auto
   runtime, with and without every class as a stepping stone.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.data import mnist  # noqa: E402
from app.fooling.attacks import AttackParams, pgd  # noqa: E402
from app.fooling.base import SUCCESS, evaluate, model_score_fn  # noqa: E402
from app.fooling.baseline import random_images  # noqa: E402
from app.fooling.cppn import CppnEncoding  # noqa: E402
from app.fooling.direct import DirectEncoding, polynomial_mutation  # noqa: E402
from app.fooling.evolution import EvolutionParams, evolve, map_elites  # noqa: E402
from app.fooling.methods import build  # noqa: E402
from app.models.registry import Registry  # noqa: E402
from app.settings import Settings  # noqa: E402

SHAPE = (1, 28, 28)


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_for(gen, seconds: float | None = None, steps: int | None = None):
    """Drive a method; return (snapshot, seconds, first time all targets >= 99.99% or None)."""
    t0 = time.perf_counter()
    snap, reached = None, None
    for snap in gen:
        now = time.perf_counter() - t0
        if reached is None and bool((snap.confidence >= SUCCESS).all()):
            reached = (now, snap.evaluations, snap.step)
        if (seconds is not None and now >= seconds) or (steps is not None and snap.step >= steps):
            break
    return snap, time.perf_counter() - t0, reached


def throughput(lenet, pop: int = 200, seconds: float = 4.0) -> list[dict]:
    score = model_score_fn(lenet)
    x = torch.rand((pop, *SHAPE))
    raw = pop / timed(lambda: score(x), repeat=20)
    direct, cppn = DirectEncoding(SHAPE, "cpu"), CppnEncoding(SHAPE, "cpu")
    rows = []
    no_stop = {"stop_at": None, "generations": 10**9, "population": pop}
    for name, gen in [
        ("map-elites, direct", map_elites(score, direct, list(range(10)), 10, EvolutionParams(**no_stop))),
        ("map-elites, cppn", map_elites(score, cppn, list(range(10)), 10, EvolutionParams(**no_stop))),
        ("evolve, direct (20 per target)", evolve(score, direct, list(range(10)), 10,
                                                 EvolutionParams(**{**no_stop, "population": pop // 10}))),
        ("random, direct", random_images(score, direct, list(range(10)), 10, batches=10**9, batch_size=pop)),
    ]:
        snap, secs, _ = run_for(gen, seconds=seconds)
        rows.append({"engine": name, "batch": pop, "evals_per_s": snap.evaluations / secs, "raw_per_s": raw})
    # where the time goes in one direct generation: mutation + quantisation + scoring
    g = torch.Generator().manual_seed(0)
    mut = timed(lambda: polynomial_mutation(x, 0.1, 15.0, g), repeat=20)
    ev = timed(lambda: evaluate(score, x), repeat=20)
    rows.append({"engine": "(direct generation parts)", "batch": pop,
                 "mutate_ms": mut * 1e3, "quantise_and_score_ms": ev * 1e3, "raw_ms": pop / raw * 1e3})
    genomes = cppn.init(pop, g)
    for _ in range(30):
        genomes = cppn.mutate(genomes, g)
    rows.append({"engine": "(cppn generation parts, 30 mutations deep)", "batch": pop,
                 "mutate_ms": timed(lambda: cppn.mutate(genomes, g)) * 1e3,
                 "render_ms": timed(lambda: cppn.render(genomes)) * 1e3, "raw_ms": pop / raw * 1e3})
    return rows


def to_all_digits(entry, lenet, seeds: int) -> list[dict]:
    score = model_score_fn(lenet)
    configs = [
        ("map-elites", "direct", {"population": 100, "generations": 5000}),
        ("map-elites", "direct", {"population": 100, "generations": 5000, "parents": "uniform"}),
        ("map-elites", "direct", {"population": 200, "generations": 5000}),
        ("map-elites", "cppn", {"population": 100, "generations": 5000}),
        ("map-elites", "cppn", {"population": 100, "generations": 5000, "parents": "uniform"}),
        ("evolve", "direct", {"population": 20, "generations": 5000}),
        ("evolve", "cppn", {"population": 20, "generations": 5000}),
        ("gradient", "direct", {"steps": 2000}),
        ("gradient", "cppn", {"steps": 2000}),
    ]
    rows = []
    for method, encoding, opts in configs:
        runs = []
        for seed in range(seeds):
            gen = build(method, entry, lenet, score, list(range(10)), encoding, seed, dict(opts))
            snap, secs, reached = run_for(gen, seconds=120)
            runs.append({"seed": seed, "reached": reached is not None,
                         "seconds": reached[0] if reached else secs,
                         "evaluations": reached[1] if reached else snap.evaluations,
                         "min_confidence": float(snap.confidence.min())})
        ok = [r for r in runs if r["reached"]]
        rows.append({"method": method, "encoding": encoding, "options": opts, "runs": runs,
                     "reached": len(ok), "seeds": seeds,
                     "median_s": statistics.median(r["seconds"] for r in ok) if ok else None,
                     "worst_s": max(r["seconds"] for r in ok) if ok else None,
                     "median_evals": statistics.median(r["evaluations"] for r in ok) if ok else None})
    return rows


def pyribs_map_elites(lenet, seed: int, budget: int, batch: int = 200, max_seconds: float = 120) -> dict:
    """pyribs MAP-Elites on the same LeNet: GridArchive with one cell per predicted class (its design:
    each image lands in one cell only), our polynomial mutation inside a pyribs emitter."""
    import numpy as np
    from ribs.archives import GridArchive
    from ribs.emitters import EmitterBase
    from ribs.schedulers import Scheduler

    score = model_score_fn(lenet)
    gen = torch.Generator().manual_seed(seed)
    archive = GridArchive(solution_dim=784, dims=[10], ranges=[(0, 10)], seed=seed)

    class PolynomialEmitter(EmitterBase):
        def __init__(self, archive):
            super().__init__(archive, solution_dim=784, bounds=None, lower_bounds=None, upper_bounds=None)

        def ask(self):
            if archive.empty:
                x = torch.rand((batch, 784), generator=gen)
            else:
                parents = torch.from_numpy(archive.sample_elites(batch)["solution"]).float()
                x = polynomial_mutation(parents, 0.1, 15.0, gen)
            return (torch.round(x * 255) / 255).numpy()

    scheduler = Scheduler(archive, [PolynomialEmitter(archive)])
    t0 = time.perf_counter()
    evaluations, reached, best = 0, None, np.zeros(10)
    while evaluations < budget and time.perf_counter() - t0 < max_seconds:
        sols = scheduler.ask()
        probs = score(torch.from_numpy(sols).float().view(-1, *SHAPE)).numpy()
        cls = probs.argmax(1)
        scheduler.tell(probs.max(1), (cls + 0.5)[:, None])
        evaluations += len(sols)
        np.maximum.at(best, cls, probs.max(1))  # best confidence per class among images placed there
        if (best >= SUCCESS).all():
            reached = (time.perf_counter() - t0, evaluations)
            break
    return {"seed": seed, "evaluations": evaluations, "seconds": time.perf_counter() - t0,
            "digits_at_9999": int((best >= SUCCESS).sum()), "cells_filled": int((best > 0).sum()),
            "reached": reached}


def ours_map_elites(lenet, seed: int, budget: int, batch: int = 200) -> dict:
    gen = map_elites(model_score_fn(lenet), DirectEncoding(SHAPE, "cpu"), list(range(10)), 10,
                     EvolutionParams(population=batch, generations=budget // batch, seed=seed))
    snap, secs, reached = run_for(gen)
    return {"seed": seed, "evaluations": snap.evaluations, "seconds": secs,
            "digits_at_9999": int((snap.confidence >= SUCCESS).sum()),
            "reached": None if reached is None else reached[:2]}


def pgd_vs_torchattacks(lenet, data_dir: Path) -> dict:
    import torchattacks

    x, y = mnist.load(data_dir, train=False)
    with torch.no_grad():
        ok = (lenet(x[:300]).argmax(1) == y[:300]).nonzero().squeeze(1)[:100]
    xs, target = x[ok], (y[ok] + 1) % 10

    def ours():
        snap = None
        for s in pgd(lenet, xs, target, AttackParams(epsilon=0.3, step_size=0.01, steps=40, seed=0)):
            snap = s
        return snap

    atk = torchattacks.PGD(lenet, eps=0.3, alpha=0.01, steps=40, random_start=True)
    atk.set_mode_targeted_by_label(quiet=True)
    ours(), atk(xs, target)  # warm up both
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(11):  # alternate, so drifts of this shared machine hit both alike
        for name, fn in (("ours", ours), ("theirs", lambda: atk(xs, target))):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    t_ours, t_theirs = statistics.median(times["ours"]), statistics.median(times["theirs"])
    snap = ours()
    adv = atk(xs, target)  # (needs gradients: outside no_grad)
    with torch.no_grad():
        theirs_ok = int((lenet(adv).argmax(1) == target).sum())
    sweep = {}
    for eps in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        last = None
        for s in pgd(lenet, xs, target, AttackParams(epsilon=eps, step_size=0.01, steps=40, seed=0)):
            last = s
        sweep[str(eps)] = sum(last.extra["success"]) / len(xs)
    return {"ours_s": t_ours, "torchattacks_s": t_theirs, "ours_success": sum(snap.extra["success"]),
            "torchattacks_success": theirs_ok, "images": len(xs), "success_over_epsilon": sweep}


SHOWCASE = ["school bus", "computer keyboard", "chainlink fence", "bagel", "paddle", "projector", "king penguin",
            "starfish", "baseball", "electric guitar"]
EFFNET = "efficientnet-lite0-imagenet"


def runtimes(settings: Settings) -> list[dict]:
    """Raw forward rates in both runtimes, best batch of each (best of three windows per batch)."""
    from app.models import runtime

    rows = []
    for model_id, batches in (("lenet-mnist", [64, 256, 1024]), (EFFNET, [1, 2, 4, 8, 16, 32])):
        reg = Registry(Settings(**{**settings.__dict__, "runtime": "onnx", "preload": model_id}))
        entry = reg.load(model_id)
        if entry.forward is None:
            rows.append({"model": model_id, "error": entry.runtime_reason})
            continue
        row = {"model": model_id}
        for name, fn in (("torch", entry.model), ("onnx", entry.forward)):
            rates = {bs: runtime._rate(fn, torch.rand(bs, *entry.input_shape), seconds=1.5) for bs in batches}
            best = max(rates, key=rates.get)
            row[name] = {"best_batch": best, "per_s": rates[best], "by_batch": rates}
        rows.append(row)
    return rows


SHOWCASE_RUNS = (("torch", "targets", "padded"), ("auto", "targets", "padded"), ("auto", "all", "padded"),
                 ("torch", "targets", "grouped"), ("auto", "targets", "grouped"), ("auto", "all", "grouped"))


def showcase(settings: Settings, seconds: float, runs=SHOWCASE_RUNS, keep: list[dict] | None = None) -> list[dict]:
    """CPPN MAP-Elites over the ten showcase classes, as `fooling-lab fool` runs it, per runtime,
    stepping stones and CPPN rendering (padded: every network of a batch computed at the largest
    one's size, as before; grouped: networks of equal size rendered together, the default now).
    Rows of ``keep`` for runs not asked for again are kept."""
    from app.fooling.base import resolve_targets

    out = [r for r in keep or [] if (r["asked"], r["stepping_stones"], r.get("render", "padded")) not in runs]
    for rt, stones, render in runs:
        reg = Registry(Settings(**{**settings.__dict__, "runtime": rt, "preload": EFFNET}))
        entry = reg.load(EFFNET)
        forward = reg.forward_model(EFFNET)
        chunk = 1024 if entry.forward is not None else entry.batch_limit.get("cpu") or 1024
        targets = resolve_targets(SHOWCASE, entry.labels)
        enc = CppnEncoding(entry.input_shape, reg.device, group_render=render == "grouped")
        params = EvolutionParams(population=32, generations=10**9, stop_at=None, stepping_stones=stones)
        gen = map_elites(model_score_fn(forward, chunk), enc, targets, entry.num_classes, params)
        snap, took, _ = run_for(gen, seconds=seconds)
        conf = sorted(snap.confidence.tolist())
        out.append({"runtime": entry.runtime, "asked": rt, "stepping_stones": stones, "render": render,
                    "seconds": took, "evaluations": snap.evaluations, "evals_per_s": snap.evaluations / took,
                    "median": statistics.median(conf), "confidences": dict(zip(SHOWCASE, snap.confidence.tolist(),
                                                                               strict=True)),
                    "occupied": snap.extra.get("occupied")})
        print(f"showcase {rt}/{stones}/{render}: {out[-1]['evals_per_s']:.1f}/s, median {out[-1]['median']:.3f}",
              file=sys.stderr)
    order = {run: i for i, run in enumerate(SHOWCASE_RUNS)}
    return sorted(out, key=lambda r: order.get((r["asked"], r["stepping_stones"], r.get("render", "padded")), 99))


def markdown(res: dict) -> str:
    out = [f"Device: {res['device']}, torch {res['torch']}, {res['date']}.", ""]
    out += ["| engine | batch | evaluations/s | raw forward/s | overhead |", "|---|---|---|---|---|"]
    for r in res["throughput"]:
        if "evals_per_s" in r:
            over = 1 - r["evals_per_s"] / r["raw_per_s"]
            out.append(f"| {r['engine']} | {r['batch']} | {r['evals_per_s']:,.0f} | {r['raw_per_s']:,.0f} "
                       f"| {over:.0%} |")
    for r in res["throughput"]:
        if "evals_per_s" not in r:
            parts = ", ".join(f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in r.items() if k.endswith("_ms"))
            out.append(f"\n{r['engine']}, batch {r['batch']}: {parts}.")
    out += ["", "| method | encoding | settings | seeds reaching all 10 at 99.99% | median s | worst s "
                "| median evals |", "|---|---|---|---|---|---|---|"]
    for r in res["to_all_digits"]:
        s = ", ".join(f"{k} {v}" for k, v in r["options"].items())

        def f(v, fmt="{:.1f}"):
            return "-" if v is None else fmt.format(v)

        out.append(f"| {r['method']} | {r['encoding']} | {s} | {r['reached']}/{r['seeds']} | {f(r['median_s'])} | "
                   f"{f(r['worst_s'])} | {f(r['median_evals'], '{:,.0f}')} |")
    out += ["", "| direct MAP-Elites, LeNet, same budget | seed | evaluations | seconds | digits >= 99.99% "
                "| all 10 reached after |", "|---|---|---|---|---|---|"]
    for name in ("ours", "pyribs"):
        for r in res["pyribs"][name]:
            when = "-" if not r["reached"] else f"{r['reached'][0]:.1f} s / {r['reached'][1]:,} evals"
            out.append(f"| {name} | {r['seed']} | {r['evaluations']:,} | {r['seconds']:.1f} | "
                       f"{r['digits_at_9999']} | {when} |")
    p = res["pgd"]
    out += ["", f"Targeted PGD, {p['images']} MNIST digits, eps 0.3, step 0.01, 40 steps, random start: ours "
            f"{p['ours_s']:.2f} s ({p['ours_success']}/{p['images']} reach the target), torchattacks "
            f"{p['torchattacks_s']:.2f} s ({p['torchattacks_success']}/{p['images']}). Success rate over epsilon "
            "(same attack): " + ", ".join(f"{k}: {v:.0%}" for k, v in p.get("success_over_epsilon", {}).items()) + "."]
    if res.get("runtimes"):
        out += ["", "| model | PyTorch eager, best batch (img/s) | ONNX Runtime, best batch (img/s) | ORT / eager |",
                "|---|---|---|---|"]
        for r in res["runtimes"]:
            if "error" in r:
                out.append(f"| {r['model']} | - | {r['error']} | - |")
                continue
            t, o = r["torch"], r["onnx"]
            out.append(f"| {r['model']} | {t['per_s']:,.0f} @ {t['best_batch']} | {o['per_s']:,.0f} @ "
                       f"{o['best_batch']} | {o['per_s'] / t['per_s']:.2f}x |")
    for key in ("showcase", "showcase_long"):
        if res.get(key):
            rows = res[key]
            out += ["", f"CPPN MAP-Elites, EfficientNet-Lite0, the ten showcase classes, 32 offspring a generation, "
                        f"{rows[0]['seconds']:.0f} s each:", "",
                    "| runtime | stepping stones | CPPN render | evaluations | evaluations/s | median of the ten best "
                    "| lowest | classes holding a cell |", "|---|---|---|---|---|---|---|---|"]
            for r in rows:
                out.append(f"| {r['runtime']} ({r['asked']}) | {r['stepping_stones']} | {r.get('render', 'padded')} "
                           f"| {r['evaluations']:,} | "
                           f"{r['evals_per_s']:.1f} | {r['median']:.1%} | {min(r['confidences'].values()):.1%} | "
                           f"{r['occupied']} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", default="bench/results/fooling.json")
    ap.add_argument("--only", nargs="*", help="re-run only these parts (pgd, throughput, pyribs, to_all_digits, "
                                              "runtimes, showcase, showcase_long), keeping the others from --json")
    ap.add_argument("--showcase-seconds", type=float, default=60.0)
    ap.add_argument("--long-seconds", type=float, default=600.0, help="showcase_long: the 10-minute budget")
    ap.add_argument("--showcase-runs", nargs="*", help="only these showcase runs, as runtime/stones/render "
                                                       "(e.g. auto/all/grouped); the other rows are kept from --json")
    args = ap.parse_args()
    settings = Settings.from_env()
    registry = Registry(settings)
    entry = registry.load("lenet-mnist")
    lenet = registry.model("lenet-mnist")
    out = Path(args.json)
    old = json.loads(out.read_text()) if args.only and out.is_file() else {}
    res = old | {"device": f"{registry.device} ({torch.get_num_threads()} threads, {platform.processor() or 'cpu'})",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = 200_000
    runs = tuple(tuple(r.split("/")) for r in args.showcase_runs) if args.showcase_runs else SHOWCASE_RUNS
    for name, fn in [
        ("pgd", lambda: pgd_vs_torchattacks(lenet, settings.data_dir)),
        ("throughput", lambda: throughput(lenet)),
        ("pyribs", lambda: {"budget": budget, "ours": [ours_map_elites(lenet, s, budget) for s in range(3)],
                            "pyribs": [pyribs_map_elites(lenet, s, budget) for s in range(3)]}),
        ("to_all_digits", lambda: to_all_digits(entry, lenet, args.seeds)),
        ("runtimes", lambda: runtimes(settings)),
        ("showcase", lambda: showcase(settings, args.showcase_seconds, runs, old.get("showcase"))),
        ("showcase_long", lambda: showcase(settings, args.long_seconds, runs, old.get("showcase_long"))),
    ]:
        if (args.only and name not in args.only) or (not args.only and name == "showcase_long"):
            continue  # the 10-minute runs only when asked for
        print(f"{name} ...", file=sys.stderr)
        res[name] = fn()
        out.write_text(json.dumps(res, indent=2) + "\n")  # keep what is done if a later part fails
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
