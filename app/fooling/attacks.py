"""Adversarial perturbation of real images: FGSM and L-infinity PGD (BIM with a random start).

Same formulas as torchattacks (inputs in [0, 1], cross-entropy on logits): tests cross-check the
two on the same model and inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from app.fooling.base import Snapshot
from app.serving.imaging import quantize


@dataclass
class AttackParams:
    epsilon: float = 0.3  # L-inf budget on the [0, 1] scale (0.3 is the usual MNIST budget)
    step_size: float = 0.01  # PGD's alpha
    steps: int = 40
    random_start: bool = True
    seed: int = 0


def _grad(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _logits_and_grad(model, x, labels)[1]


def _logits_and_grad(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor):
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    return logits.detach(), torch.autograd.grad(loss, x)[0]


def _snapshot(model, x0, adv, step, targets, labels_before, targeted, probs=None, refused=None) -> Snapshot:
    """``probs`` given: an intermediate PGD step, scored by the forward pass its gradient needed,
    with a light summary; else the final 8-bit image is scored exactly as it will be saved, with
    the full report (perturbation size, predictions before and after, success per image)."""
    adv_q = quantize(adv)  # what is saved (PNG) is what is reported
    final = probs is None
    if final:
        with torch.no_grad():
            probs = torch.softmax(model(adv_q).float(), -1)
    pred = probs.argmax(1)
    # Through a defence with a class of its own for what it refuses, being refused is no success:
    # an untargeted attack is judged by the best real class, and must not land on "rejected".
    real = pred if refused is None else probs[:, :refused].argmax(1)
    idx = targets if targeted else real
    success = (pred == targets) if targeted else (real != labels_before)
    if refused is not None:
        success = success & (pred != refused)
    if final:
        delta = (adv_q - x0).flatten(1)
        extra = {"linf": delta.abs().amax(1).tolist(), "l2": delta.norm(dim=1).tolist(),
                 "pred_before": labels_before.tolist(), "pred_after": pred.tolist(), "success": success.tolist()}
    else:
        extra = {"success_rate": float(success.float().mean())}
    return Snapshot(step=step, evaluations=step * len(x0), targets=idx.tolist(), images=adv_q.detach().cpu(),
                    confidence=probs.gather(1, idx[:, None]).squeeze(1).cpu(), probs=probs.cpu(), extra=extra)


def fgsm(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None,
         params: AttackParams, refused: int | None = None) -> Iterator[Snapshot]:
    """One step of size epsilon along the sign of the gradient. With ``target`` the step lowers
    the loss towards it; without, it raises the loss of the model's own prediction."""
    with torch.no_grad():
        before = model(x).argmax(1)
    targeted = target is not None
    labels = target if targeted else before
    g = _grad(model, x, labels)
    sign = -1.0 if targeted else 1.0
    adv = (x + sign * params.epsilon * g.sign()).clamp(0, 1)
    yield _snapshot(model, x, adv, 1, labels, before, targeted, refused=refused)


def pgd(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None,
        params: AttackParams, refused: int | None = None) -> Iterator[Snapshot]:
    """Iterated signed-gradient steps of ``step_size``, projected onto the epsilon L-inf ball
    around x and onto [0, 1]; optionally from a uniform random start inside the ball."""
    with torch.no_grad():
        before = model(x).argmax(1)
    targeted = target is not None
    labels = target if targeted else before
    sign = -1.0 if targeted else 1.0
    adv = x.clone()
    if params.random_start:
        gen = torch.Generator(device=x.device).manual_seed(params.seed)
        noise = torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1
        adv = (x + params.epsilon * noise).clamp(0, 1)
    # Each step's forward pass scores the previous step's image, so intermediate snapshots cost no
    # extra forward pass; the last one scores the final 8-bit image exactly, as it is saved.
    for step in range(1, params.steps + 1):
        logits, grad = _logits_and_grad(model, adv, labels)
        if step > 1:
            yield _snapshot(model, x, adv, step - 1, labels, before, targeted, torch.softmax(logits.float(), -1),
                            refused=refused)
        adv = adv + sign * params.step_size * grad.sign()
        adv = (x + (adv - x).clamp(-params.epsilon, params.epsilon)).clamp(0, 1).detach()
    yield _snapshot(model, x, adv, params.steps, labels, before, targeted, refused=refused)
