"""Bring your own model: ``NAME.model.json`` descriptors in the models directory.

A descriptor names a model file and a labels file beside it::

    {
      "id": "my-cifar-net",              # optional, defaults to NAME
      "title": "My CIFAR-10 ResNet",     # optional
      "file": "my-cifar-net.pt2",        # .pt2 (torch.export), .pt (TorchScript) or .onnx
      "labels": "my-cifar-net.txt",      # one label per line, or a JSON list
      "input_shape": [3, 32, 32],        # C, H, W
      "mean": [0.49, 0.48, 0.45],        # per channel, for inputs scaled to [0, 1]
      "std": [0.25, 0.24, 0.26],
      "preprocess": "stretch"            # or "center-crop" or "mnist"
    }

The model must take a float batch (N, C, H, W) normalised with mean/std and return logits.
Model files are installed by the operator, never uploaded by users. Even so no file may run code
when it loads: a .pt2 archive is checked entry by entry before torch.export.load sees it (see
check_pt2_archive), .pt goes through torch.jit.load (TorchScript's own restricted format), .onnx
through onnxruntime (a black box: scoring and evolution work, gradients do not).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import torch
from torch import nn

from app.models.classifier import Classifier, OnnxClassifier
from app.models.entry import ModelEntry

log = logging.getLogger(__name__)

SUFFIX = ".model.json"
FORMATS = {".pt2": "torch.export", ".pt": "TorchScript", ".onnx": "ONNX"}
PREPROCESS = {"stretch", "center-crop", "mnist"}


class DescriptorError(ValueError):
    pass


def read_labels(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [str(x) for x in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


class ExportedProgramNet(nn.Module):
    """A torch.export program is frozen in the mode it was exported in and refuses train()/eval();
    this wrapper keeps the registry's eval() call from reaching it."""

    def __init__(self, program_module: nn.Module) -> None:
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> ExportedProgramNet:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


PICKLE_PROTO = b"\x80"  # the first byte of a pickle (protocol 2 and later)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format: a zip holding data.pkl
UNSAFE_CONSTANTS = ("/custom_obj", "/opaque")  # torch.export loads these with the full unpickler


def check_pt2_archive(path: Path) -> None:
    """Refuse a torch.export archive that could run code when loaded.

    torch.export.load unpickles some entries with the full unpickler: custom-object and opaque
    constants, weights and constants marked use_pickle (torch.load with weights_only=False), and
    the sample inputs when they fail the restricted load (it then retries unrestricted). So: no
    custom or opaque constants, no raw pickle anywhere, and every torch.save entry must load with
    weights_only=True; then whatever torch unpickles contains only what that allow-list permits."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DescriptorError(f"{path.name}: not a torch.export archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            if any(part in name for part in UNSAFE_CONSTANTS):
                raise DescriptorError(f"{path.name}: refused, {name} is a pickled Python object")
            with archive.open(info) as f:
                head = f.read(4)
            if head.startswith(PICKLE_PROTO):
                raise DescriptorError(f"{path.name}: refused, {name} is a pickle")
            if head == ZIP_MAGIC:
                try:
                    torch.load(io.BytesIO(archive.read(info)), weights_only=True)
                except Exception as exc:
                    raise DescriptorError(f"{path.name}: refused, {name} holds more than tensors "
                                          f"({type(exc).__name__})") from None


def _load_file(path: Path, mean: list[float], std: list[float]) -> nn.Module:
    if path.suffix == ".onnx":
        clf = OnnxClassifier(str(path), mean, std)
        if clf.fixed_batch not in (None, 1):
            raise DescriptorError(f"{path.name}: ONNX batch dimension must be dynamic or 1")
        return clf
    if path.suffix == ".pt2":
        check_pt2_archive(path)
        net = ExportedProgramNet(torch.export.load(str(path)).module())
    else:
        net = torch.jit.load(str(path), map_location="cpu")
    return Classifier(net, mean, std)


def parse(descriptor: Path) -> ModelEntry:
    try:
        spec = json.loads(descriptor.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DescriptorError(f"{descriptor.name}: not readable JSON ({exc})") from exc
    base = descriptor.parent
    name = descriptor.name[: -len(SUFFIX)]
    try:
        model_file = base / spec["file"]
        labels = read_labels(base / spec["labels"])
        shape = tuple(int(v) for v in spec["input_shape"])
    except (KeyError, OSError, TypeError, ValueError) as exc:
        raise DescriptorError(f"{descriptor.name}: needs file, labels and input_shape ({exc})") from exc
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DescriptorError(f"{descriptor.name}: input_shape must be [C, H, W] with C 1 or 3")
    if model_file.suffix not in FORMATS:
        raise DescriptorError(f"{descriptor.name}: model file must end in one of {sorted(FORMATS)}")
    mean = [float(v) for v in spec.get("mean", [0.0] * shape[0])]
    std = [float(v) for v in spec.get("std", [1.0] * shape[0])]
    if len(mean) != shape[0] or len(std) != shape[0]:
        raise DescriptorError(f"{descriptor.name}: mean and std need one value per channel")
    preprocess = spec.get("preprocess", "mnist" if shape == (1, 28, 28) else "stretch")
    if preprocess not in PREPROCESS:
        raise DescriptorError(f"{descriptor.name}: preprocess must be one of {sorted(PREPROCESS)}")
    return ModelEntry(
        id=str(spec.get("id", name)),
        title=str(spec.get("title", name)),
        task=str(spec.get("task", "custom")),
        input_shape=shape,
        labels=labels,
        preprocess=preprocess,
        source=f"{FORMATS[model_file.suffix]} file {model_file.name}",
        loader=lambda: _load_file(model_file, mean, std),
        differentiable=model_file.suffix != ".onnx",
        meta={"format": FORMATS[model_file.suffix]},
    )


def entries(models_dir: Path) -> list[ModelEntry]:
    out = []
    for descriptor in sorted(Path(models_dir).glob(f"*{SUFFIX}")):
        try:
            out.append(parse(descriptor))
        except DescriptorError as exc:
            # A broken descriptor is reported in the log and skipped; it never stops start-up.
            log.warning("skipping %s", exc)
    return out
