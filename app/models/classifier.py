"""One calling convention for every model: images in [0, 1] in, logits out.

Normalisation lives inside the wrapper (the attack-library convention), so search methods
never see mean/std and a saved PNG is exactly what was scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float],
        channels_last: bool = False,
    ) -> None:
        """``mean``: one value per channel, or a whole (1, C, H, W) mean image (Caffe's LeNet)."""
        super().__init__()
        self.net = net
        c = len(std)
        if isinstance(mean, torch.Tensor):
            self.register_buffer("mean", mean.detach().float().reshape(1, c, *mean.shape[-2:]).clone())
        else:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))
        # channels_last roughly doubles conv throughput on CPU (measured: LeNet, EfficientNet-Lite0).
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


class OnnxClassifier(nn.Module):
    """A black box: onnxruntime computes the logits; no gradients flow through it."""

    differentiable = False

    def __init__(self, path: str, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, providers=ort.get_available_providers())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        # A model exported with a fixed batch of 1 is run one image at a time.
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        c = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device
        z = ((x.detach() - self.mean) / self.std).float().cpu().numpy()
        if self.fixed_batch:
            chunks = [z[i : i + self.fixed_batch] for i in range(0, len(z), self.fixed_batch)]
            out = np.concatenate([self.session.run(None, {self.input_name: ch})[0] for ch in chunks])
        else:
            out = self.session.run(None, {self.input_name: z})[0]
        return torch.from_numpy(out).to(device)
