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
