"""What the registry knows about one model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


class UnknownModel(KeyError):
    pass


class ModelUnavailable(RuntimeError):
    pass


@dataclass
class ModelEntry:
    id: str
    title: str
    task: str
    input_shape: tuple[int, int, int]  # C, H, W of the model's own input space
    labels: list[str]
    # How an arbitrary upload becomes model input: "mnist" (grayscale digit), "center-crop", "stretch".
    preprocess: str
    source: str
    loader: Callable[[], nn.Module] = field(repr=False)
    differentiable: bool = True
    meta: dict = field(default_factory=dict)
    # Largest batch worth forming per device type; past it throughput drops (EfficientNet on CPU).
    batch_limit: dict[str, int] = field(default_factory=dict)
    available: bool = False
    reason: str | None = "not loaded yet"
    model: nn.Module | None = field(default=None, repr=False)
    device: str = "cpu"
    # Forward-only work: "torch" (the module) or "onnx" (``forward``, an ONNX Runtime session), and why.
    runtime: str = "torch"
    runtime_reason: str = "not loaded yet"
    forward: Callable | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def public(self, with_labels: bool = True) -> dict:
        out = {
            "id": self.id,
            "title": self.title,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "device": self.device,
            "available": self.available,
            "reason": None if self.available else self.reason,
            "differentiable": self.differentiable,
            "runtime": self.runtime,
            "runtime_reason": self.runtime_reason,
            "source": self.source,
            "meta": self.meta,
            # a defended model (MODEL+KIND): what it costs on real held-out data
            **{k: self.meta[k] for k in ("clean_accuracy", "false_positive_rate") if k in self.meta},
        }
        if with_labels:
            out["labels"] = self.labels
        return out
