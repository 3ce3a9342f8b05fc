"""Black box or not: evolution needs only output probabilities. LeNet is exported to ONNX and run
by onnxruntime, which gives the method nothing but answers; evolution fools it anyway. Beside it,
a gradient attack that needs the insides (gradient ascent on the PyTorch model), and the number
of queries each needed."""

from __future__ import annotations

import torch

from app.experiments.common import Context, bars, evolve_fooling
from app.fooling.base import SUCCESS
from app.fooling.gradient import GradientParams, gradient_ascent
from app.fooling.methods import MethodError, build
from app.models.classifier import OnnxClassifier
from app.models.runtime import export


def run(ctx: Context) -> dict:
    model = ctx.model("lenet-mnist")
    entry = ctx.registry.get("lenet-mnist")
    path = ctx.out / "lenet-mnist.onnx"
    ctx.log("exporting LeNet to ONNX")
    export(model, entry.input_shape, path)  # as the registry exports models for ONNX Runtime
    box = OnnxClassifier(str(path), mean=(0.0,), std=(1.0,))
    black = type(entry)(**{**entry.__dict__, "id": "lenet-mnist-onnx", "source": path.name, "differentiable": False})
    try:
        build("gradient", black, box, None, [0])
        refused = None
    except MethodError as exc:
        refused = str(exc)
    targets = list(range(10))
    ctx.log("evolving against the black box")
    _, evo = evolve_fooling(box, targets, ctx.seed, 1000 if ctx.quick else 5000)
    ctx.log("gradient ascent with the insides")
    snap, reached = None, None
    for snap in gradient_ascent(model, targets, (1, 28, 28), 10, GradientParams(steps=2000, seed=ctx.seed)):
        if reached is None and bool((snap.confidence >= SUCCESS).all()):
            reached = snap.evaluations
    with torch.inference_mode():
        x = torch.rand(64, 1, 28, 28)
        agree = float((box(x).argmax(1) == model(x).argmax(1)).float().mean())
    bars(ctx.out / "blackbox.png", "Queries until all 10 digits reach 99.99%", "queries (log scale)",
         {"evolution, black box\n(outputs only)": evo["evaluations_to_all_9999"],
          "gradient ascent, white box\n(forward + backward)": reached}, logy=True)
    return {"onnx_matches_pytorch": agree, "gradient_refused_on_black_box": refused,
            "black_box_evolution": evo,
            "white_box_gradient": {"queries_to_all_9999": reached, "queries": snap.evaluations,
                                   "note": "each query is a forward and a backward pass on one image"},
            "plots": ["blackbox.png"]}
