"""How a model runs forward: PyTorch eager, or ONNX Runtime for forward-only work on CPU.

Evolution, MAP-Elites, the random baseline and scoring only run models forward; on CPU ONNX
Runtime runs EfficientNet-Lite0 about twice as fast as eager PyTorch (bench/fooling.py), while
LeNet is as fast or faster in PyTorch. FOOLING_RUNTIME picks:

- ``torch``: PyTorch for everything;
- ``onnx``: ONNX Runtime for forward-only work wherever the model exports;
- ``auto`` (default): on CPU, export and time both once per machine and keep the faster (the
  timing is cached beside the export); on CUDA, PyTorch.

Gradients (gradient ascent, FGSM, PGD) always use the PyTorch module. The export is made once, at
load (never at import), on the compute thread, and cached under FOOLING_ONNX_DIR keyed by the
weights' sha256 and the torch and onnxruntime versions. A model that does not export falls back
to PyTorch with a log line and the reason in /api/v1/models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.files import replacing

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
ORT_BATCH_PIXELS = 32 * 3 * 224 * 224  # ORT keeps gaining up to 32 ImageNet images a pass (2 cores)


@dataclass
class Choice:
    name: str  # "torch" or "onnx"
    reason: str


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's parameters and buffers (names, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_path(onnx_dir: Path, model_id: str, digest: str) -> Path:
    import onnxruntime as ort

    return Path(onnx_dir) / f"{model_id}-{digest[:16]}-torch{torch.__version__}-ort{ort.__version__}.onnx"


def export(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Export with a dynamic batch axis; written to a temporary name first, so a crash never leaves
    a half file under the cached name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, warnings.catch_warnings():  # the TorchScript exporter announces its own deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, *input_shape, device=_device(model)),),
                          str(tmp), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


class OrtForward:
    """Logits from an ONNX Runtime session, for torch tensors in and out. One session per model,
    made once; called only from the compute thread, which so owns the runtime's thread pool."""

    def __init__(self, path: Path, threads: int, max_rows: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: they share the cores with PyTorch's.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.max_rows = max(1, max_rows)
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = x.detach().float().cpu().numpy()
        if len(z) <= self.max_rows:
            out = self.session.run(None, {"x": z})[0]
        else:
            out = np.concatenate([self.session.run(None, {"x": z[i : i + self.max_rows]})[0]
                                  for i in range(0, len(z), self.max_rows)])
        return torch.from_numpy(out)


AGREEMENT = 1e-4  # largest difference in probability allowed between the two runtimes


def _rate(fn, x: torch.Tensor, seconds: float = 0.6) -> float:
    """Images per second of fn on x (best of three short windows, after a warm-up)."""
    with torch.inference_mode():
        fn(x)
        best = 0.0
        for _ in range(3):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 3:
                fn(x)
                n += len(x)
            best = max(best, n / (time.perf_counter() - t0))
    return best


def prepare(model: nn.Module, model_id: str, input_shape: tuple[int, int, int], wanted: str, device: str,
            onnx_dir: Path, threads: int, torch_batch: int | None = None) -> tuple[object | None, Choice]:
    """(a forward-only callable or None for the PyTorch module itself, the choice and its reason)."""
    if wanted not in RUNTIMES:
        raise ValueError(f"FOOLING_RUNTIME must be one of {', '.join(RUNTIMES)}, not {wanted!r}")
    if wanted == "torch":
        return None, Choice("torch", "FOOLING_RUNTIME=torch")
    if device.startswith("cuda") and wanted == "auto":
        return cuda_choice(model, input_shape, torch_batch)
    try:
        import onnxruntime  # noqa: F401

        digest = weights_digest(model)
        path = export_path(onnx_dir, model_id, digest)
        if not path.is_file():
            t0 = time.perf_counter()
            export(model, input_shape, path)
            log.info("exported %s to ONNX in %.1f s: %s", model_id, time.perf_counter() - t0, path.name)
        rates = _cached_rates(path) if wanted == "auto" else None
        if rates is not None and rates["torch"] > rates["onnx"]:  # decided before: no session to make
            return None, _timed(rates)
        pixels = int(np.prod(input_shape))
        ort_forward = OrtForward(path, threads, max(1, ORT_BATCH_PIXELS // pixels))
        gap = disagreement(model, ort_forward, input_shape, _device(model))
        if gap > AGREEMENT:  # e.g. a Python-side op the tracer froze into a constant
            raise RuntimeError(f"ONNX output differs from PyTorch by {gap:.1e} in probability")
    except Exception as exc:  # a custom op, a missing package: PyTorch does the work, never an error
        log.warning("%s: ONNX export or session failed, using PyTorch: %s", model_id, exc)
        return None, Choice("torch", f"ONNX Runtime unavailable for this model ({type(exc).__name__}: {exc})"[:300])
    if wanted == "onnx":
        return ort_forward, Choice("onnx", "FOOLING_RUNTIME=onnx")
    return _timed_choice(model, ort_forward, path, input_shape, torch_batch)


def _cached_rates(path: Path) -> dict | None:
    try:
        return json.loads(path.with_suffix(".timing.json").read_text())
    except (OSError, ValueError):
        return None


def _timed(rates: dict) -> Choice:
    faster = "onnx" if rates["onnx"] >= rates["torch"] else "torch"
    return Choice(faster, f"auto: {faster} is faster here ({rates['onnx']:.0f} images/s in ONNX Runtime, "
                          f"{rates['torch']:.0f} in PyTorch, batch {rates['batch']}, measured once on this machine)")


def _timed_choice(model: nn.Module, ort_forward: OrtForward, path: Path, input_shape: tuple[int, int, int],
                  torch_batch: int | None) -> tuple[object | None, Choice]:
    """auto on CPU: the faster of the two at a typical population batch, timed once per machine."""
    rates = _cached_rates(path)
    if rates is None:
        batch = max(1, min(64, ORT_BATCH_PIXELS // int(np.prod(input_shape))))
        x = torch.rand(batch, *input_shape)
        tb = torch_batch or batch
        rates = {"batch": batch, "onnx": _rate(ort_forward, x),
                 "torch": _rate(lambda z: torch.cat([model(z[i : i + tb]) for i in range(0, len(z), tb)]), x)}
        with contextlib.suppress(OSError):  # a read-only cache dir: measured again next start
            path.with_suffix(".timing.json").write_text(json.dumps(rates))
    choice = _timed(rates)
    return (ort_forward if choice.name == "onnx" else None), choice


# -- CUDA: PyTorch, plus what pays there, each kept only where it agrees and is faster ---------------
class AutocastForward:
    """Forward under autocast (fp16 or bf16 matmuls and convolutions), logits back in float32."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        self.model, self.device_type, self.dtype = model, device_type, dtype
        self.name = f"autocast {str(dtype).removeprefix('torch.')}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(x).float()


def graph_rows(n: int) -> int:
    """The captured batch size that holds n rows: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and
    one and a half times them), so padding costs at most a third of a batch, not a whole one."""
    if n <= 2:
        return max(1, n)
    power = 1 << (n - 1).bit_length()  # the power of two at or above n
    return power * 3 // 4 if n <= power * 3 // 4 else power


class GraphedForward:
    """CUDA graphs: one captured forward per batch size (see ``graph_rows``, up to ``max_rows``),
    inputs padded up to it. Replaying a graph skips the per-kernel launch cost that dominates small
    models (LeNet) and small batches on a GPU."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], max_rows: int = 1024) -> None:
        self.model, self.input_shape, self.max_rows = model, tuple(input_shape), max_rows
        self.name = "CUDA graphs"
        self._graphs: dict[int, tuple] = {}
        self._eager: set[int] = set()  # sizes whose capture failed after graphs were chosen

    def _capture(self, rows: int) -> tuple:
        """(replay, static input, static output) for a batch of ``rows``."""
        device = _device(self.model)
        static_in = torch.zeros((rows, *self.input_shape), device=device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up outside the graph, as capture requires
                self.model(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        return graph.replay, static_in, static_out

    def _run(self, part: torch.Tensor) -> torch.Tensor:
        rows = graph_rows(len(part))
        if rows not in self._graphs and rows not in self._eager:
            try:
                self._graphs[rows] = self._capture(rows)
            except Exception as exc:
                if not self._graphs:  # never worked: let the chooser see the error and keep float32
                    raise
                # A late capture (a new batch size mid-job) must not fail the job: this size runs eagerly.
                log.warning("CUDA graph capture at batch %d failed, running it eagerly: %s", rows, exc)
                self._eager.add(rows)
        if rows in self._eager:
            return self.model(part).float()
        replay, static_in, static_out = self._graphs[rows]
        static_in[: len(part)].copy_(part)
        replay()
        return static_out[: len(part)].float().clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Inference mode throughout: the static tensors may have been made inside it, and an
        # in-place copy into one from outside it is refused.
        with torch.inference_mode():
            return torch.cat([self._run(x[i : i + self.max_rows]) for i in range(0, len(x), self.max_rows)])


def disagreement(reference, candidate, input_shape: tuple[int, int, int], device: torch.device) -> float:
    """Largest probability difference between two forwards on a few inputs (noise, grey, noise)."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for x in (torch.rand(3, *input_shape, generator=gen), torch.full((1, *input_shape), 0.5),
              torch.rand(5, *input_shape, generator=gen)):
        x = x.to(device)
        with torch.inference_mode():
            a = torch.softmax(reference(x).float().cpu(), 1)
            b = torch.softmax(candidate(x).float().cpu(), 1)
        worst = max(worst, (a - b).abs().max().item())
    return worst


def pick_faster(model: nn.Module, candidates: list, input_shape: tuple[int, int, int], batch: int,
                sync=lambda: None) -> tuple[object | None, Choice, list[dict]]:
    """The fastest of PyTorch as it is and each candidate that agrees with it within AGREEMENT;
    returns (the forward or None for the module itself, the choice, what was measured)."""
    device = _device(model)
    x = torch.rand(batch, *input_shape, device=device)

    def rate(fn) -> float:
        def run(z):
            out = fn(z)
            sync()
            return out
        return _rate(run, x)

    measured = [{"name": "float32", "agrees": True, "gap": 0.0, "per_s": rate(model)}]
    best, best_rate = None, measured[0]["per_s"]
    for cand in candidates:
        try:
            gap = disagreement(model, cand, input_shape, device)
            row = {"name": cand.name, "gap": gap, "agrees": gap <= AGREEMENT}
            row["per_s"] = rate(cand) if row["agrees"] else None
        except Exception as exc:  # e.g. an op that cannot be captured in a graph
            row = {"name": cand.name, "agrees": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
        measured.append(row)
        if row.get("per_s") and row["per_s"] > best_rate:
            best, best_rate = cand, row["per_s"]
    def told(m: dict) -> str:
        if m.get("per_s"):
            return f"{m['name']} {m['per_s']:.0f}/s"
        why = m["error"] if "error" in m else "differs by {:.1e}".format(m["gap"])
        return f"{m['name']} off ({why})"

    parts = ", ".join(told(m) for m in measured)
    name = getattr(best, "name", "float32")
    return best, Choice("torch", f"auto: PyTorch {name} at batch {batch} ({parts})"[:300]), measured


def cuda_choice(model: nn.Module, input_shape: tuple[int, int, int], torch_batch: int | None
                ) -> tuple[object | None, Choice]:
    """auto on CUDA: PyTorch (channels_last where the model is convolutional), plus fp16 or bf16
    autocast and CUDA graphs where each agrees with float32 within AGREEMENT and is faster."""
    candidates = [AutocastForward(model, "cuda", torch.float16), AutocastForward(model, "cuda", torch.bfloat16),
                  GraphedForward(model, input_shape)]
    batch = max(1, min(256, 64 * 3 * 224 * 224 // int(np.prod(input_shape))))
    try:
        forward, choice, _ = pick_faster(model, candidates, input_shape, torch_batch or batch,
                                         sync=torch.cuda.synchronize)
    except Exception as exc:  # measuring must never stop the model from loading
        log.warning("CUDA runtime choice failed, using PyTorch float32: %s", exc)
        return None, Choice("torch", f"CUDA: PyTorch float32 (choosing failed: {exc})"[:300])
    return forward, choice
