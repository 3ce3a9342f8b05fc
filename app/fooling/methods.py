"""Method names (shared by the CLI and the API) -> configured step-wise generators."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace

import torch

from app.fooling.attacks import AttackParams, fgsm, pgd
from app.fooling.base import ScoreFn, Snapshot, interleave, model_device, ten_crop_score
from app.fooling.baseline import random_images
from app.fooling.cppn import CppnEncoding
from app.fooling.cppn_param import CppnImage
from app.fooling.direct import DirectEncoding
from app.fooling.evolution import EvolutionParams, check_crossover, evolve, map_elites
from app.fooling.gradient import GradientParams, gradient_ascent
from app.fooling.info import ADVERSARIAL, ENCODED, ENCODINGS, GRADIENT, METHODS
from app.models.defences import rejected_index
from app.models.entry import ModelEntry


class MethodError(ValueError):
    pass


def method_options(params: dict | None = None, *, generations: int | None = None, steps: int | None = None,
                   population: int | None = None) -> dict:
    """The engine's options from the top-level knobs (as the CLI and the API name them) and any other
    method parameters."""
    opts = dict(params or {})
    for key, value in (("generations", generations), ("steps", steps), ("population", population)):
        if value is not None:
            opts[key] = value
    return opts


def _params(cls, options: dict, seed: int):
    names = {f.name for f in fields(cls)}
    unknown = set(options) - names
    if unknown:
        raise MethodError(f"unknown parameter(s) {sorted(unknown)} for this method; known: {sorted(names)}")
    return cls(**{**options, "seed": seed})


PAPER_GENES = ("color", "cppn_inputs")  # how genes become pixels: evolution and random images only


def _encoding(encoding: str, entry: ModelEntry, device, options: dict):
    """The encoding with its gene options taken out of ``options``: ``color`` (rgb, hsv, hls; a grey
    model has no colour, so it changes nothing there) and, for CPPNs, ``cppn_inputs`` (unit, pixels)."""
    eta = float(options.pop("eta", 15.0))
    try:
        if encoding == "cppn":
            return CppnEncoding(entry.input_shape, device, eta=eta, max_hidden=int(options.pop("max_hidden", 24)),
                                color=options.pop("color", "hls"), inputs=options.pop("cppn_inputs", "unit"))
        if "cppn_inputs" in options:
            raise MethodError("cppn_inputs applies to the cppn encoding (--encoding cppn)")
        return DirectEncoding(entry.input_shape, device, eta=eta, color=options.pop("color", "rgb"))
    except ValueError as exc:
        raise MethodError(str(exc)) from None


def build(method: str, entry: ModelEntry, model: torch.nn.Module, score: ScoreFn, targets: list[int] | None,
          encoding: str = "direct", seed: int = 0, options: dict | None = None,
          image: torch.Tensor | None = None) -> Iterator[Snapshot]:
    options = dict(options or {})
    if options.pop("ten_crop", False):  # fitness averaged over the paper's 10 crops (evolution, random)
        if method in GRADIENT:
            raise MethodError(f"ten_crop applies to {', '.join(m for m in METHODS if m not in GRADIENT)}")
        score = ten_crop_score(score)
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if encoding not in ENCODINGS:
        raise MethodError(f"unknown encoding {encoding!r}; choose direct or cppn")
    if encoding == "cppn" and method not in ENCODED:
        raise MethodError(f"{method} perturbs pixels of a real image; --encoding applies to {', '.join(ENCODED)}")
    device = model_device(model)
    if method in GRADIENT and not entry.differentiable:
        why = (f"its defences ({', '.join(entry.meta['defences'])}) round and take medians: no useful gradient"
               if entry.meta.get("defences") else f"it is a black box ({entry.source})")
        raise MethodError(f"{method} needs gradients, and {entry.id} has none: {why}; use evolve, map-elites or random")
    if method in ADVERSARIAL:
        if image is None:
            raise MethodError(f"{method} perturbs a real image: give one (--image PATH)")
        params = _params(AttackParams, options, seed)
        x = image.to(device)[None]
        target = None
        if targets:
            x = x.expand(len(targets), *x.shape[1:]).clone()
            target = torch.tensor(targets, device=device)
        return (fgsm if method == "fgsm" else pgd)(model, x, target, params, rejected_index(entry.labels))
    if targets is None:
        raise MethodError("targets are required")
    if method == "gradient":
        for key in PAPER_GENES:
            if key in options:
                raise MethodError(f"{key} applies to {', '.join(m for m in ENCODED if m not in GRADIENT)}: "
                                  "gradient ascent has no genes")
        chunk = int(options.pop("chunk", 0) or 0)  # at most this many targets per step (0: all at once)
        cppn = None
        if encoding == "cppn":
            cppn = {k: int(options.pop(k)) for k in ("width", "layers") if k in options}
            if "coord_scale" in options:
                cppn["coord_scale"] = float(options.pop("coord_scale"))
        params = _params(GradientParams, options, seed)

        def part(slice_targets: list[int], part_seed: int) -> Iterator[Snapshot]:
            param = None if cppn is None else CppnImage(len(slice_targets), entry.input_shape, seed=part_seed,
                                                        device=device, **cppn)
            yield from gradient_ascent(model, slice_targets, entry.input_shape, entry.num_classes,
                                       replace(params, seed=part_seed), start_image=image, param=param)

        if not chunk or len(targets) <= chunk:  # the CPPN is built now: bad settings fail at submit
            param = None if cppn is None else CppnImage(len(targets), entry.input_shape, seed=seed, device=device,
                                                         **cppn)
            return gradient_ascent(model, targets, entry.input_shape, entry.num_classes, params, start_image=image,
                                   param=param)
        # Many targets: slices of `chunk` take turns, one slice's step per next() (see interleave).
        slices = [targets[i:i + chunk] for i in range(0, len(targets), chunk)]
        return interleave([part(t, seed + j) for j, t in enumerate(slices)], slices, entry.input_shape,
                          entry.num_classes)
    enc = _encoding(encoding, entry, device, options)
    if method == "random":
        unknown = set(options) - {"batches", "batch_size"}
        if unknown:
            raise MethodError(f"unknown parameter(s) {sorted(unknown)} for random; known: batch_size, batches")
        return random_images(score, enc, targets, entry.num_classes, seed=seed,
                             **{k: int(v) for k, v in options.items()})
    params = _params(EvolutionParams, options, seed)
    try:
        check_crossover(params, enc)
    except ValueError as exc:  # refused at submit, not at the first step
        raise MethodError(str(exc)) from None
    if method == "evolve" and params.stepping_stones != "targets":  # refused at submit, not at the first step
        raise MethodError("stepping_stones applies to map-elites (evolve keeps one population per target)")
    if method == "evolve" and "parents" in options:
        raise MethodError("parents applies to map-elites (evolve keeps one population per target)")
    return (map_elites if method == "map-elites" else evolve)(score, enc, targets, entry.num_classes, params)
