"""Defended models: a model id followed by defences is a model id too.

    lenet-mnist+smooth(sigma=2)            Gaussian blur in front of the network
    lenet-mnist+ensemble(s1,s2,s3,s4)      averaged softmax with lenet-mnist-s1 ... -s4
    lenet-mnist+msp                        a detector: maximum softmax probability (Hendrycks & Gimpel 2017)
    lenet-mnist+smooth(sigma=1)+energy     defences compose left to right; a detector comes last

A defended model answers like any model (images in [0, 1] in, log-probabilities out), so scoring,
jobs, MAP-Elites and studies take it unchanged. A detector adds one class, "rejected": an input
it flags gets all its probability there, so a rejected image scores (almost exactly) zero for
every real class and a search must get past the detector to score at all. Its threshold is
calibrated on real held-out data to a stated false-positive rate (``fpr``, default 5%).

For gradients a detector's hard gate is replaced by a steep sigmoid of the same score (a
straight-through estimate): the value is the hard gate, the gradient pushes the score under the
threshold. Feature squeezing rounds and takes medians, so it has no useful gradient and says so.

The scores come from pytorch-ood where it has the detector (MSP, energy, Mahalanobis fitted by
it; the Mahalanobis score is recomputed here from its fitted means and precision so that it is
differentiable, and a test checks the two agree); feature squeezing (Xu, Evans & Qi 2018) is
written here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from app.errors import Refused
from app.files import write_whole
from app.models import filters

REJECTED = "rejected"
MAX_DEFENCES = 3
SPEC = re.compile(r"^([a-z]+)(?:\(([^()]*)\))?$")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CALIBRATION = 5000  # MNIST test digits (a seeded random half) set a detector's threshold; the other half measure it
VERSION = 1  # of how defences are built and calibrated: kept numbers from another version are made again
SHARPNESS = 50.0  # gradient gate: sigmoid((threshold - score) * SHARPNESS / spread of real scores)


def is_defended(model_id: str) -> bool:
    """A defended model's id (MODEL+KIND...), as opposed to a registered model's."""
    return "+" in model_id


def base_of(model_id: str) -> str:
    """The registered model a (defended) id starts from: lenet-mnist+msp -> lenet-mnist."""
    return model_id.split("+", 1)[0]


def rejected_index(labels: list[str]) -> int | None:
    """The class a defence answers for what it refuses (its last, "rejected"), or None."""
    return len(labels) - 1 if labels and labels[-1] == REJECTED else None


class DefenceError(Refused, ValueError):
    """A composition that cannot be built: its detail says why (a 422 on the API)."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid", detail, "model")


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    default: float
    doc: str


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    detector: bool
    differentiable: bool
    doc: str
    paper: str
    params: tuple[Param, ...] = ()
    members: bool = False  # takes model ids (an ensemble) instead of named values
    rejects: bool = False  # has a class of its own for what it refuses (a detector, the n+1 network)


FPR = Param("fpr", 0.01, 0.5, 0.05, "share of real held-out images it may reject (its threshold is set so)")
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("smooth", "Gaussian blur in front of the network", False, True,
         "blurs every input; a strong blur also blurs real digits", "input smoothing (the seed's discussion)",
         (Param("sigma", 0.25, 4.0, 1.0, "the blur's standard deviation in pixels"),)),
    Kind("ensemble", "averaged softmax of several networks", False, True,
         "the model and its members vote; members are ids, or suffixes of the model's id (s1 = lenet-mnist-s1)",
         "ensembles (the paper's discussion)", members=True),
    Kind("retrained", "the n+1 network: retrained with fooling images as an eleventh class", False, True,
         "the network after n rounds of the retraining experiment; its 'fooling' class answers rejected",
         "the paper's retraining experiment (its Section 3.5)",
         (Param("n", 1, 15, 1, "rounds of retraining (a model file per round: models/MODEL-retrained-nN.pt)"),),
         rejects=True),
    Kind("msp", "maximum softmax probability detector", True, True,
         "rejects an input whose top softmax probability is low", "Hendrycks & Gimpel, ICLR 2017", (FPR,)),
    Kind("energy", "energy-score detector", True, True,
         "rejects an input whose logits' log-sum-exp is low", "Liu et al., NeurIPS 2020", (FPR,)),
    Kind("mahalanobis", "Mahalanobis detector on the penultimate features", True, True,
         "rejects an input far from every class's mean feature (shared covariance, fitted on training data)",
         "Lee et al., NeurIPS 2018", (FPR,)),
    Kind("squeeze", "feature-squeezing detector", True, False,
         "rejects an input whose prediction moves when squeezed (1-bit depth, 2x2 median)",
         "Xu, Evans & Qi, NDSS 2018", (FPR,)),
)}


@dataclass(frozen=True)
class Defence:
    kind: str
    values: tuple[tuple[str, float], ...] = ()
    members: tuple[str, ...] = ()

    def spec(self) -> str:
        if self.kind == "retrained":
            return f"retrained(n{int(self.value('n'))})"
        if self.members:
            return f"{self.kind}({','.join(self.members)})"
        shown = [f"{k}={_number(v)}" for k, v in self.values if v != _param(self.kind, k).default]
        return f"{self.kind}({','.join(shown)})" if shown else self.kind

    def value(self, name: str) -> float:
        return dict(self.values).get(name, _param(self.kind, name).default)


def _param(kind: str, name: str) -> Param:
    return next(p for p in KINDS[kind].params if p.name == name)


def _number(v: float) -> str:
    return f"{v:g}"


def parse(model_id: str) -> tuple[str, list[Defence]]:
    """``base+kind(args)+...`` -> (base id, defences), checked; DefenceError says what is wrong."""
    base, *specs = model_id.split("+")
    if not specs:
        raise DefenceError(f"{model_id!r} has no defence: write MODEL+KIND, e.g. {model_id}+msp")
    if len(specs) > MAX_DEFENCES:
        raise DefenceError(f"at most {MAX_DEFENCES} defences on one model ({len(specs)} given)")
    out: list[Defence] = []
    for i, spec in enumerate(specs):
        m = SPEC.match(spec.strip())
        if not m or m.group(1) not in KINDS:
            raise DefenceError(f"unknown defence {spec!r}; known: {', '.join(KINDS)} (GET /api/v1/defences)")
        kind = KINDS[m.group(1)]
        args = [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]
        if kind.members:
            if i != 0:
                raise DefenceError("an ensemble comes first, right after the model (MODEL+ensemble(...)+...)")
            if not args or len(args) > 8 or not all(NAME.match(a) for a in args):
                raise DefenceError("ensemble(...) takes 1 to 8 member ids or suffixes, e.g. ensemble(s1,s2)")
            out.append(Defence(kind.name, members=tuple(args)))
            continue
        if kind.name == "retrained":  # retrained(n1): the round, written as in the examples
            if i != 0 or len(specs) > 1:
                raise DefenceError("retrained(nN) replaces the network itself: it stands alone (MODEL+retrained(n1))")
            rounds = re.fullmatch(r"n?(\d{1,2})", args[0]) if len(args) == 1 else None
            if not rounds or not 1 <= int(rounds.group(1)) <= 15:
                raise DefenceError("retrained takes the round of retraining, n1 to n15: MODEL+retrained(n1)")
            out.append(Defence(kind.name, (("n", float(rounds.group(1))),)))
            continue
        values = {}
        for a in args:
            name, eq, raw = a.partition("=")
            p = next((p for p in kind.params if p.name == name.strip()), None)
            if not eq or p is None:
                known = ", ".join(f"{p.name}=" for p in kind.params) or "no arguments"
                raise DefenceError(f"{kind.name}: {a!r} is not an argument it takes ({known})")
            try:
                v = float(raw)
            except ValueError:
                raise DefenceError(f"{kind.name}: {p.name} must be a number, not {raw.strip()!r}") from None
            if not (p.low <= v <= p.high) or math.isnan(v):
                raise DefenceError(f"{kind.name}: {p.name} must be between {_number(p.low)} and {_number(p.high)}")
            values[p.name] = round(v, 2)  # a bounded set of distinct defences (each is calibrated once)
        out.append(Defence(kind.name, tuple(sorted(values.items()))))
    if out[-1].kind == "mahalanobis" and any(d.kind == "ensemble" for d in out):
        raise DefenceError("mahalanobis models one network's features: not an ensemble's")
    detectors = [i for i, d in enumerate(out) if KINDS[d.kind].detector]
    if len(detectors) > 1 or (detectors and detectors[0] != len(out) - 1):
        raise DefenceError("one detector at most, and last: a detector's answer (rejected or not) is final")
    return base, out


def canonical(model_id: str) -> str:
    base, defences = parse(model_id)
    return "+".join([base, *(d.spec() for d in defences)])


def catalogue() -> list[dict]:
    """Every kind of defence, for GET /api/v1/defences."""
    return [{"kind": k.name, "title": k.title, "detector": k.detector, "differentiable": k.differentiable,
             "doc": k.doc, "paper": k.paper,
             "params": [{"name": p.name, "min": p.low, "max": p.high, "default": p.default, "doc": p.doc}
                        for p in k.params] + ([{"name": "members", "doc": "model ids or suffixes of the model's id"}]
                                              if k.members else []),
             "rejects": k.detector or k.rejects,
             "example": f"lenet-mnist+{k.name}" + ("(s1,s2,s3,s4)" if k.members else "(sigma=2)" if k.name == "smooth"
                                                   else "(n1)" if k.name == "retrained" else "")}
            for k in KINDS.values()]


# -- the modules ------------------------------------------------------------------------------------
class Smoothed(nn.Module):
    def __init__(self, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(filters.blur(x, self.sigma))


class Ensemble(nn.Module):
    """Averaged softmax of several networks, returned as log-probabilities (logits of the average)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), -1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


def _penultimate(net: nn.Module) -> nn.Module:
    """The last Linear layer: its input is the feature vector the Mahalanobis detector models."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise DefenceError("mahalanobis needs a network whose last layer is linear (its input are the features)")
    return linear[-1]


class Detector(nn.Module):
    """The wrapped network's classes plus "rejected": log-probabilities whose last column takes
    everything for an input the detector flags (score > threshold)."""

    def __init__(self, net: nn.Module, kind: str, squeeze_bits: int = 1, squeeze_median: int = 2) -> None:
        super().__init__()
        self.net, self.kind = net, kind
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("spread", torch.tensor(1.0))
        self.squeeze = (squeeze_bits, squeeze_median)
        if kind == "mahalanobis":
            self.register_buffer("mu", torch.zeros(1, 1))
            self.register_buffer("precision", torch.zeros(1, 1))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's logits and its penultimate features, read by a hook that lives for this call
        only and keeps only this thread's (the network is shared with every other user of the model)."""
        got: list[torch.Tensor] = []
        me = threading.get_ident()
        handle = _penultimate(self.net).register_forward_hook(
            lambda _m, inp, _out: got.append(inp[0]) if threading.get_ident() == me else None)
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        return logits, got[-1].flatten(1)

    def logits_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The wrapped network's logits and the detector's score (higher = more likely not real)."""
        if self.kind == "mahalanobis":
            logits, z = self.logits_and_features(x)
            d = z[:, None, :] - self.mu[None]  # (N, classes, D)
            return logits, (0.5 * torch.einsum("ncd,de,nce->nc", d, self.precision, d)).min(1).values
        logits = self.net(x)
        if self.kind == "msp":
            from pytorch_ood.detector import MaxSoftmax

            return logits, MaxSoftmax.score(logits)
        if self.kind == "energy":
            from pytorch_ood.detector import EnergyBased

            return logits, EnergyBased.score(logits)
        bits, k = self.squeeze  # squeeze: the largest L1 change of the prediction under either squeezer
        p = torch.softmax(logits, -1)
        moved = [(torch.softmax(self.net(s), -1) - p).abs().sum(1)
                 for s in (filters.bit_depth(x, bits), filters.median(x, k))]
        return logits, torch.stack(moved).max(0).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, score = self.logits_and_score(x)
        accept = (score <= self.threshold).float()
        # The value is the hard gate; the gradient is that of a steep sigmoid of the same score.
        z = (self.threshold - score) * (SHARPNESS / self.spread)
        soft_in, soft_out = F.logsigmoid(z), F.logsigmoid(-z)
        log_in = accept.clamp_min(1e-12).log() + (soft_in - soft_in.detach())
        log_out = (1 - accept).clamp_min(1e-12).log() + (soft_out - soft_out.detach())
        return torch.cat([torch.log_softmax(logits, -1) + log_in[:, None], log_out[:, None]], 1)


# -- building and calibrating -----------------------------------------------------------------------
@dataclass
class Built:
    module: nn.Module
    labels: list[str]
    differentiable: bool
    numbers: dict = field(default_factory=dict)


def build(base_id: str, defences: list[Defence], model: Callable[[str], nn.Module], known: set[str],
          labels: list[str], real: Callable[[], tuple] | None, cache: Path | None, canonical_id: str,
          why_no_real: str = "", models_dir: Path | None = None, fingerprint: Callable[[str], str] = str,
          same_kind: Callable[[str], bool] = lambda _i: True) -> Built:
    """The defended module for ``base_id`` (``model(id)`` gives a resident network), calibrated on
    ``real()`` = (train x, train y, test x, test y) where a detector needs it (None: ``why_no_real``).
    ``fingerprint(id)`` names a network's weights, so kept numbers are never those of other weights."""
    if real is None and any(KINDS[d.kind].detector for d in defences):  # before loading anything
        raise DefenceError(f"a detector is calibrated on real held-out images of its task: {why_no_real}")
    net, differentiable = model(base_id), True
    printed = [base_id]  # the networks whose weights name the kept numbers: hashed once every check passed
    prints: list[str] = []
    for d in defences:
        kind = KINDS[d.kind]
        differentiable = differentiable and kind.differentiable
        if d.kind == "retrained":
            path = (models_dir or Path(".")) / f"{base_id}-retrained-n{int(d.value('n'))}.pt"
            net = _retrained(net, path)
            prints.append(hashlib.sha256(path.read_bytes()).hexdigest())
        elif d.kind == "smooth":
            net = Smoothed(net, d.value("sigma"))
        elif d.kind == "ensemble":
            ids = [m if m in known else f"{base_id}-{m}" for m in d.members]
            missing = [m for m, i in zip(d.members, ids, strict=True) if i not in known]
            if missing:
                raise DefenceError(f"ensemble: no model {', '.join(map(repr, missing))} (neither an id nor "
                                   f"{base_id}-{missing[0]})")
            if len(set(ids)) != len(ids) or base_id in ids:
                raise DefenceError("ensemble: each member once, and not the model itself")
            if other := [i for i in ids if not same_kind(i)]:
                raise DefenceError(f"ensemble: {', '.join(other)} does not take {base_id}'s input or give its classes")
            nets = [model(i) for i in ids]
            printed += ids
            net = Ensemble([net, *nets])
        else:
            net = Detector(net, d.kind)
    rejects = any(KINDS[d.kind].detector or KINDS[d.kind].rejects for d in defences)
    built = Built(net.eval(), labels + ([REJECTED] if rejects else []), differentiable)
    if real is not None:
        prints = [fingerprint(i) for i in printed] + prints
        built.numbers = calibrate(built.module, defences[-1], real, cache,
                                  f"{canonical_id}|v{VERSION}|{CALIBRATION}|" + "|".join(prints),
                                  rejected_index(built.labels))
    return built


def _retrained(base: nn.Module, path: Path) -> nn.Module:
    """The n+1 LeNet of the retraining experiment, with the base network's input normalisation."""
    from app.models.classifier import Classifier
    from app.models.lenet import LeNet

    if not isinstance(base, Classifier) or not isinstance(base.net, LeNet):
        raise DefenceError("retrained(nN) exists for the LeNets only (the retraining experiment's network)")
    if not path.is_file():
        raise DefenceError(f"no retrained network at {path.name}: make it with `python -m app experiment retrain "
                           f"--seed 0 --out runs/retrain` and copy runs/retrain/{path.name} into the models folder")
    net = LeNet(num_classes=11)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return Classifier(net, base.mean.clone(), tuple(base.std.flatten().tolist()), channels_last=True).to(
        base.mean.device)


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def calibrate(module: nn.Module, last: Defence, real: Callable[[], tuple], cache: Path | None,
              key: str, rejected_index: int | None) -> dict:
    """A detector's threshold at its ``fpr`` on a random half of the test digits; then, on the other
    half (held out), the defended model's clean accuracy (a rejected digit counts as wrong) and the share it
    rejects. Kept in ``cache`` (a JSON file per defended id) and read from there next time."""
    path = cache / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json") if cache else None
    if path and path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("id") == key and isinstance(module, Detector) == ("threshold" in kept):
            if isinstance(module, Detector):
                _fit(module, real)
                module.threshold.fill_(kept["threshold"])
                module.spread.fill_(kept["spread"])
            return kept["numbers"]
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = real()
    # A random half, not the first: MNIST's test set was put together in two halves that differ.
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))
    x_test, y_test = x_test[order], y_test[order]
    kept: dict = {"id": key}
    if isinstance(module, Detector):
        _fit(module, real)
        fpr = last.value("fpr")
        scores = _batched(lambda b: module.logits_and_score(b)[1], x_test[:CALIBRATION])
        threshold = float(torch.quantile(scores.double(), 1 - fpr))
        module.threshold.fill_(threshold)
        spread = float(scores.std()) or 1.0
        module.spread.fill_(spread)
        kept |= {"threshold": threshold, "spread": spread}
    held_x, held_y = x_test[CALIBRATION:], y_test[CALIBRATION:]
    top = _batched(lambda b: module(b).argmax(1), held_x)
    rejected = top == (-1 if rejected_index is None else rejected_index)
    numbers = {"clean_accuracy": float((top == held_y).float().mean()),
               "false_positive_rate": float(rejected.float().mean()),
               "target_fpr": last.value("fpr") if KINDS[last.kind].detector else None,
               "held_out": len(held_x), "calibrated_on": CALIBRATION if isinstance(module, Detector) else 0,
               "data": f"MNIST test digits: a random half ({CALIBRATION}, seed 0) sets the threshold, the other "
                       "half is measured",
               "seconds": round(time.perf_counter() - t0, 2)}
    kept["numbers"] = numbers
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, json.dumps(kept, indent=2))
    return numbers


def held_out(real: Callable[[], tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """The half of the test digits no threshold was set on (the same seeded split as calibrate)."""
    _, _, x, y = real()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[CALIBRATION:]
    return x[order], y[order]


def _fit(module: Detector, real: Callable[[], tuple]) -> None:
    """What a detector learns from training data: the Mahalanobis class means and shared precision
    (pytorch-ood fits them on 10,000 training digits' penultimate features)."""
    if module.kind != "mahalanobis":
        return
    from pytorch_ood.detector import Mahalanobis

    x_train, y_train, _, _ = real()
    with torch.no_grad():
        feats = [module.logits_and_features(x_train[i : i + 1000])[1] for i in range(0, 10_000, 1000)]
    maha = Mahalanobis(None).fit_features(torch.cat(feats), y_train[:10_000])
    module.mu = maha.mu.detach().clone()
    module.precision = maha.precision.detach().clone()
