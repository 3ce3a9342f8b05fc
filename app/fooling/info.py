"""Every method's traits in one table (no torch here: the command line's --help reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    """What the rest of the app needs to know about a method, in one place."""

    name: str
    counts: str  # the length knob it takes: "generations" or "steps" (random: neither)
    encoded: bool  # takes an encoding (direct pixels or a CPPN)
    adversarial: bool  # perturbs a real image the client gives
    gradients: bool  # needs backward passes: runs in PyTorch, each step whole on the compute thread
    fooling: bool  # makes images that fool the model from nothing (the quiz shows these)


INFO = {m.name: m for m in (
    MethodInfo("evolve", "generations", encoded=True, adversarial=False, gradients=False, fooling=True),
    MethodInfo("map-elites", "generations", encoded=True, adversarial=False, gradients=False, fooling=True),
    MethodInfo("gradient", "steps", encoded=True, adversarial=False, gradients=True, fooling=True),
    MethodInfo("fgsm", "steps", encoded=False, adversarial=True, gradients=True, fooling=False),
    MethodInfo("pgd", "steps", encoded=False, adversarial=True, gradients=True, fooling=False),
    MethodInfo("random", "", encoded=True, adversarial=False, gradients=False, fooling=False),
)}
METHODS = tuple(INFO)
ENCODINGS = ("direct", "cppn")
# Views of the table that read as sentences where they are used
ADVERSARIAL = tuple(m.name for m in INFO.values() if m.adversarial)
ENCODED = tuple(m.name for m in INFO.values() if m.encoded)  # methods that take --encoding
EVOLUTIONARY = tuple(m.name for m in INFO.values() if m.counts == "generations")
GRADIENT = tuple(m.name for m in INFO.values() if m.gradients)  # backward passes; the rest only score
FOOLING = tuple(m.name for m in INFO.values() if m.fooling)
