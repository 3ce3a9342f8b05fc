"""Experiments on why fooling works and what helps (issue: defences, transfer, explainers).

Each experiment is a function ``run(ctx) -> dict`` that computes its numbers, saves PNG plots in
ctx.out and returns a JSON-able result. ``python -m app experiment NAME --seed S --out DIR
[--quick]`` runs one; ``--quick`` picks small settings that finish in about a minute on a CPU.
"""
