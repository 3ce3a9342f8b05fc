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
BLOCKS: dict[str, Callable[[], str]] = {
    "fooling": lambda: _bench("fooling").markdown(load("bench/results/fooling.json")),
    "experiments": lambda: (lambda m: m.markdown(m.kept()))(_bench("experiments")),
}
BLOCK = re.compile(r"(<!-- bench:([a-z0-9-]+) -->\n)(.*?)(\n<!-- /bench:\2 -->)", re.S)


def render_blocks(text: str, problems: list[str], used: set[str]) -> str:
    def fix(m: re.Match) -> str:
        name = m.group(2)
        if name not in BLOCKS:
            return m.group(0)  # a table no JSON can make yet (its script prints it while it measures)
        used.add(f"bench:{name}")
        value = BLOCKS[name]().strip("\n")
        if value != m.group(3).strip("\n"):
            problems.append(f"bench:{name}: the table differs from what bench/{name}.py makes of its JSON")
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
