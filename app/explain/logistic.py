"""The 10-dimensional logistic-regression example from the discussion of the paper: a tiny linear
model, and how a small step on every input, each in the direction of its weight's sign, moves
the output a long way. This is the fast gradient sign method in its simplest setting."""

from __future__ import annotations

import math

W = (-1, -1, 1, -1, 1, -1, 1, 1, -1, 1)
X = (2, -1, 3, -2, 2, 2, 1, -4, 5, 1)
STEP = 0.5


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def sign(v: float) -> int:
    return (v > 0) - (v < 0)


def perturb(x: tuple[float, ...], eps: float) -> list[float]:
    """Move each input by eps in the direction of sign(w): the gradient of w.x with respect to x is
    w, so this is the step that raises the score most for a given largest change per input."""
    return [xi + eps * sign(wi) for xi, wi in zip(x, W, strict=True)]


def state(eps: float = 0.0) -> dict:
    y = perturb(X, eps)
    wx = sum(w * x for w, x in zip(W, X, strict=True))
    wy = sum(w * v for w, v in zip(W, y, strict=True))
    return {"w": list(W), "x": list(X), "eps": eps, "y": y, "wx": wx, "wy": wy,
            "p_x": sigmoid(wx), "p_y": sigmoid(wy), "gain_per_eps": sum(abs(w) for w in W)}
