"""docs/figures.py: a figure in the docs that disagrees with its results file is caught."""

from __future__ import annotations

import importlib.util

from app.settings import ROOT

spec = importlib.util.spec_from_file_location("figures", ROOT / "docs" / "figures.py")
figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figures)


def test_a_wrong_or_unknown_figure_is_caught_and_rewritten():
    right = figures.FIGURES["pgd-success"]()
    ok, problems, used = figures.render(f"PGD turns <!-- fig:pgd-success -->{right}<!-- /fig --> digits")
    assert problems == [] and used == {"pgd-success"}
    fixed, problems, _ = figures.render("PGD turns <!-- fig:pgd-success -->99 of 100<!-- /fig --> digits")
    assert problems and "99 of 100" in problems[0] and f"-->{right}<!--" in fixed
    _, problems, _ = figures.render("<!-- fig:no-such-figure -->1<!-- /fig -->")
    assert problems == ["unknown figure 'no-such-figure'"]


def test_a_bench_table_is_what_its_script_makes_of_its_json():
    table = figures.BLOCKS["fooling"]()
    page = f"<!-- bench:fooling -->\n{table}\n<!-- /bench:fooling -->"
    assert figures.render(page)[1] == []
    edited = page.replace("| map-elites, direct |", "| map-elites, direct (edited) |", 1)
    assert edited != page and figures.render(edited)[1]


def test_the_pages_agree_with_the_results(capsys):
    """What `make docs-check` runs: every marked figure in README.md and docs/ equals its JSON."""
    import sys

    argv, sys.argv = sys.argv, ["figures.py", "--check"]
    try:
        code = figures.main()
    finally:
        sys.argv = argv
    assert code == 0, capsys.readouterr().err


def test_a_table_whose_results_are_missing_is_reported_not_a_crash(monkeypatch):
    def missing() -> str:
        return figures.load("bench/results/no-such-results.json")

    monkeypatch.setitem(figures.BLOCKS, "score", missing)
    page = "<!-- bench:score -->\nold table\n<!-- /bench:score -->"
    text, problems, used = figures.render(page)
    assert text == page and used == {"bench:score"}
    assert problems and "no-such-results.json" in problems[0] and "cannot be read" in problems[0]


def test_every_experiment_section_comes_from_its_kept_results():
    experiments = figures._bench("experiments")
    kept = experiments.kept()
    assert set(kept) == set(experiments.NAMES)
    text = experiments.markdown(kept)
    for name, result in kept.items():
        assert result is not None, f"bench/results/experiments/{name}.json is missing: run bench/experiments.py {name}"
        assert f"`python -m app experiment {name} --seed {result['seed']}" in text and result["quick"] is False
