"""What one job may cost: bounds on every method parameter, and on the work of one step.

Caps on single settings (generations, population, ...) are not enough: work is their product. A
step's work is counted as images x pixels scored in it (x3 where a backward pass comes too, x10
for ten-crop fitness), and the archive a job keeps as targets x pixels. Both are bounded by
settings, so no request can make the compute thread stall or the server run out of memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.fooling.color import COLORS
from app.fooling.cppn import CPPN_INPUTS
from app.fooling.evolution import EvolutionParams

# name: (lowest, highest), inclusive. Names not listed are refused by the method itself.
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "mutation_rate": (0.0, 1.0), "eta": (0.1, 1000.0), "halve_every": (0, 1_000_000), "stop_at": (0.0, 1.0),
    "lr": (1e-6, 10.0), "l2": (0.0, 1000.0), "jitter": (0, 64), "blur_every": (0, 100_000),
    "blur_sigma": (0.0, 20.0), "epsilon": (0.0, 1.0), "step_size": (0.0, 1.0),
    "width": (1, 64), "layers": (1, 16), "coord_scale": (0.01, 1000.0), "max_hidden": (0, 64),
    "batches": (1, 10_000), "batch_size": (1, 10_000), "chunk": (1, 10_000),
}
INTEGER_PARAMS = {"halve_every", "jitter", "blur_every", "width", "layers", "max_hidden", "batches", "batch_size",
                  "chunk"}
NULLABLE_PARAMS = {"stop_at", "lr"}  # null: the method's default (stop_at: never stop early)
FLAG_PARAMS = {"ten_crop", "random_start"}
CHOICE_PARAMS = {"start": ("noise", "grey", "image"), "stepping_stones": ("targets", "all"),
                 "parents": ("unfinished", "uniform"), "cppn_inputs": CPPN_INPUTS, "color": COLORS,
                 "crossover": ("none", "sbx")}
BACKWARD = 3  # a forward and a backward pass cost about three forwards
TEN_CROP = 10


@dataclass
class LimitError(ValueError):
    detail: str
    field: str

    def __str__(self) -> str:
        return self.detail


def check_params(params: dict) -> None:
    """Each known parameter's type and range (names a method does not take are refused by the method)."""
    for name, value in params.items():
        field = f"params.{name}"
        if value is None:
            if name in NULLABLE_PARAMS:
                continue
            raise LimitError(f"{field} may not be null", field)
        if name in FLAG_PARAMS and not isinstance(value, bool):
            raise LimitError(f"{field} must be true or false", field)
        if name in CHOICE_PARAMS and value not in CHOICE_PARAMS[name]:
            raise LimitError(f"{field} must be one of {', '.join(CHOICE_PARAMS[name])}", field)
        if name not in PARAM_BOUNDS:
            continue
        lo, hi = PARAM_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise LimitError(f"{field} must be a number from {lo:g} to {hi:g}", field)
        if name in INTEGER_PARAMS and not isinstance(value, int):
            raise LimitError(f"{field} must be a whole number", field)


def step_work(method: str, options: dict, n_targets: int, pixels: int) -> tuple[int, str]:
    """(work of one step, the field that drives it) for a job's settings."""
    crops = TEN_CROP if options.get("ten_crop") else 1
    if method == "map-elites":
        return options.get("population", EvolutionParams.population) * pixels * crops, "population"
    if method == "evolve":
        return n_targets * options.get("population", EvolutionParams.population) * pixels * crops, "population"
    if method == "random":
        return int(options.get("batch_size", 1000)) * pixels * crops, "params.batch_size"
    if method == "gradient" and options.get("chunk"):  # slices of targets take turns (one per step)
        return min(n_targets, int(options["chunk"])) * pixels * BACKWARD, "params.chunk"
    return max(n_targets, 1) * pixels * BACKWARD, "targets"  # gradient, fgsm, pgd: one image per target


def check_work(method: str, options: dict, n_targets: int, shape: tuple[int, int, int], max_step_work: int,
               max_job_pixels: int, num_classes: int | None = None) -> None:
    pixels = math.prod(shape)
    every = method == "map-elites" and options.get("stepping_stones") == "all" and num_classes
    if every and num_classes * pixels > max_job_pixels:  # a cell, and its image, for every class of the model
        raise LimitError(f"stepping_stones=all keeps {num_classes} images of {'x'.join(map(str, shape))} "
                         f"here; the limit is {max_job_pixels:,} pixels (FOOLING_MAX_JOB_PIXELS)",
                         "params.stepping_stones")
    if n_targets * pixels > max_job_pixels:
        most = max(1, max_job_pixels // pixels)
        raise LimitError(f"a job on this model may have at most {most} targets here (each keeps a "
                         f"{'x'.join(map(str, shape))} image)", "targets")
    work, field = step_work(method, options, n_targets, pixels)
    if work > max_step_work:
        raise LimitError(f"one step of this job would score {work:,} pixel-images (images x pixels"
                         f"{' x targets' if method == 'evolve' else ''}); the limit here is {max_step_work:,}: "
                         f"lower {field}{' or the number of targets' if field != 'targets' else ''}", field)
