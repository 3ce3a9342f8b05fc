"""The discussion's 10-D logistic-regression example, with a plot of p against the step size."""

from __future__ import annotations

from app.experiments.common import Context, plot
from app.explain import logistic


def run(ctx: Context) -> dict:
    steps = [i / 20 for i in range(21)]
    states = [logistic.state(e) for e in steps]
    start = logistic.state(logistic.STEP)
    plot(ctx.out / "logistic.png", "sigmoid(w . (x + eps sign(w)))", "step size eps per input", "probability",
         {"p(y)": (steps, [s["p_y"] for s in states])})
    return {"w": start["w"], "x": start["x"], "p_x": start["p_x"], "y": start["y"], "p_y": start["p_y"],
            "eps": logistic.STEP, "curve": {"eps": steps, "p": [s["p_y"] for s in states]},
            "plots": ["logistic.png"]}
