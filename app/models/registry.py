"""The model registry: the one place that knows every model, loads it once and keeps it resident.

Built-in entries (LeNet, EfficientNet-Lite0, torchvision's ImageNet classifiers) and
bring-your-own descriptors (``*.model.json`` in the models directory) become ModelEntry
objects. An entry whose weights cannot be had stays listed with ``available=False`` and the
reason, instead of failing start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import torch
from torch import nn

from app.errors import Refused
from app.models import builtin, custom, defences, runtime
from app.models.entry import ModelEntry, ModelUnavailable, UnknownModel
from app.settings import Settings, resolve_device

log = logging.getLogger(__name__)

MAX_DEFENDED = 64  # defended models kept built (least recently used first out; rebuilt from their kept numbers)
DEFENDED_PER_MINUTE = 30  # new ones built a minute, server-wide: each is a calibration's worth of compute
FAILED_TTL = 60.0  # seconds a defended id that failed to build answers with the same error, not a new try


class Registry:
    def __init__(self, settings: Settings, real_dir: Path | None = None) -> None:
        self.settings = settings
        # Where real data (MNIST, for detectors and held-out costs) and kept calibrations are read:
        # the data dir, or the server's own where this registry works in a scratch one (a Ray engine).
        self.real_dir = Path(real_dir or settings.data_dir)
        self.device = resolve_device(settings.device)
        self.entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self._defended: OrderedDict[str, ModelEntry] = OrderedDict()
        self._defence_lock = threading.Lock()
        self._built_at: list[float] = []
        self._building: dict[str, Future] = {}
        self._ever_built: set[str] = set()
        self._failed: OrderedDict[str, tuple[float, defences.DefenceError]] = OrderedDict()  # name -> (when, why)
        self._mnist: tuple | None = None
        for entry in builtin.entries(settings) + custom.entries(settings.models_dir):
            if entry.id in self.entries:
                log.warning("model id %s defined twice; keeping the first", entry.id)
                continue
            entry.device = self.device
            self.entries[entry.id] = entry

    # -- lookup ---------------------------------------------------------------------------------
    def get(self, model_id: str) -> ModelEntry:
        """A registered model, or a defended one (``MODEL+KIND(args)``, built and calibrated on
        first use); UnknownModel for an unknown model, DefenceError for a bad composition."""
        entry = self.entries.get(model_id)
        if entry is not None:
            return entry
        if defences.is_defended(model_id):
            return self._defended_entry(model_id)
        raise UnknownModel(model_id)

    # -- defended models ------------------------------------------------------------------------
    def _real_mnist(self) -> tuple:
        if self._mnist is None:
            from app.data import mnist

            self._mnist = (*mnist.load(self.real_dir, train=True), *mnist.load(self.real_dir,
                                                                                         train=False))
        return self._mnist

    def peek(self, model_id: str) -> ModelEntry | None:
        """A defended model if it is built (None: not yet), without building it; DefenceError when
        its build failed in the last FAILED_TTL seconds. For callers that must not start builds."""
        name = defences.canonical(model_id)
        with self._defence_lock:
            entry = self._defended.get(name)
            if entry is None:
                self._raise_if_failed_lately(name)
        return entry

    def _raise_if_failed_lately(self, name: str) -> None:
        """(Under _defence_lock.) The same DefenceError again while FAILED_TTL has not passed."""
        failed = self._failed.get(name)
        if failed is not None and time.monotonic() - failed[0] < FAILED_TTL:
            raise failed[1]

    def _defended_entry(self, model_id: str) -> ModelEntry:
        """Built once per id (kept: the MAX_DEFENDED used last). The lock guards only the cache and
        the count: a build (a calibration, seconds) runs outside it, once, whoever else asks meanwhile."""
        name = defences.canonical(model_id)
        base_id = defences.base_of(name)
        base = self.get(base_id)  # an unknown base is an unknown model
        with self._defence_lock:
            entry = self._defended.get(name)
            if entry is not None:
                self._defended.move_to_end(name)
                return entry
            self._raise_if_failed_lately(name)  # asked again at once (an arena, a script): not worked out again
            pending = self._building.get(name)
            if pending is None:
                now = time.monotonic()
                self._built_at = [t for t in self._built_at if now - t < 60]
                # Ones built before (dropped from the cache since) come back from their kept numbers
                # and do not count: a running job's model must not be refused.
                if name not in self._ever_built and len(self._built_at) >= DEFENDED_PER_MINUTE:
                    raise Refused("busy", f"this server builds at most {DEFENDED_PER_MINUTE} new defended models "
                                          "a minute (each is calibrated on real data): use one already built, or wait",
                                  "model", retry_after=int(60 - (now - self._built_at[0])) + 1,
                                  quota=("defended-models-per-minute", DEFENDED_PER_MINUTE))
                pending = self._building[name] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return pending.result(timeout=300)
        try:
            entry = self._build_defended(name, base_id, base)
        except BaseException as exc:
            if isinstance(exc, defences.DefenceError):
                with self._defence_lock:
                    self._failed[name] = (time.monotonic(), exc)
                    self._failed.move_to_end(name)
                    while len(self._failed) > MAX_DEFENDED * 4:
                        self._failed.popitem(last=False)
            pending.set_exception(exc)
            raise
        finally:
            with self._defence_lock:
                self._building.pop(name, None)
        with self._defence_lock:
            if name not in self._ever_built:
                self._built_at.append(time.monotonic())  # only what was built counts, not what failed
                if len(self._ever_built) < 100_000:
                    self._ever_built.add(name)
            self._defended[name] = entry
            while len(self._defended) > MAX_DEFENDED:
                self._defended.popitem(last=False)
        pending.set_result(entry)
        return entry

    def held_out_accuracy(self, model_id: str) -> float | None:
        """An undefended MNIST model's accuracy on the held-out half of the test digits, where the
        defended ones are measured (so the arena compares like with like); kept in its meta."""
        from app.data import mnist

        entry = self.load(model_id)
        if entry.task != "mnist-digits" or not entry.available or not mnist.verified(self.real_dir):
            return None
        if "held_out_accuracy" not in entry.meta:
            x, y = defences.held_out(self._real_mnist)
            with torch.no_grad():
                top = torch.cat([entry.model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
            entry.meta["held_out_accuracy"] = float((top == y).float().mean())
        return entry.meta["held_out_accuracy"]

    def _build_defended(self, name: str, base_id: str, base: ModelEntry) -> ModelEntry:
        from app.data import mnist

        def resident(i: str) -> nn.Module:
            e = self.load(i)
            if not e.available:
                raise defences.DefenceError(f"model {i!r} is not available: {e.reason}")
            return e.model

        def same_kind(i: str) -> bool:
            e = self.entries[i]
            return (e.task, e.input_shape, e.labels) == (base.task, base.input_shape, base.labels)

        def fingerprint(i: str) -> str:  # the weights themselves: a retrained model gets new numbers
            e = self.load(i)
            return runtime.weights_digest(e.model) if e.model is not None else e.source

        _, parts = defences.parse(name)
        real, why = None, f"this server has them for MNIST models only ({base_id} is {base.task})"
        if base.task == "mnist-digits":
            real = self._real_mnist if mnist.verified(self.real_dir) else None
            why = "this server has no MNIST digits yet (`fooling-lab fetch-mnist`, or `make data`)"
        built = defences.build(base_id, parts, resident, set(self.entries), base.labels, real,
                               self.real_dir / "defences", name, why, self.settings.models_dir,
                               fingerprint, same_kind)
        entry = ModelEntry(
            id=name, title=f"{base.title}, defended: {' + '.join(d.spec() for d in parts)}", task=base.task,
            input_shape=base.input_shape, labels=built.labels, preprocess=base.preprocess,
            source=f"{base.source}; defences in app/models/defences.py", loader=lambda: built.module,
            differentiable=built.differentiable and base.differentiable, batch_limit=base.batch_limit,
            meta={"base": base_id, "defences": [d.spec() for d in parts],
                  "rejects": len(built.labels) > len(base.labels), **built.numbers})
        entry.model = built.module.to(self.device).requires_grad_(False)
        entry.device, entry.available, entry.reason = self.device, True, None
        entry.runtime, entry.runtime_reason = "torch", "a defended model runs in PyTorch (its network and defences)"
        return entry

    def model(self, model_id: str) -> nn.Module:
        """The resident, eval-mode model; raises ModelUnavailable with the reason."""
        entry = self.get(model_id)
        if entry.model is None:
            raise ModelUnavailable(f"model {model_id!r} is not available: {entry.reason}")
        return entry.model

    def forward_model(self, model_id: str):
        """What forward-only work calls: the ONNX Runtime session where the runtime chose it, else the
        module. Gradients always go through model()."""
        entry = self.get(model_id)
        return entry.forward if entry.forward is not None else self.model(model_id)

    def list(self) -> list[ModelEntry]:
        return list(self.entries.values())

    # -- loading --------------------------------------------------------------------------------
    def load(self, model_id: str) -> ModelEntry:
        entry = self.get(model_id)
        with self._lock:
            if entry.model is not None:
                return entry
            try:
                net = entry.loader()
                net.eval().requires_grad_(False)
                entry.model = net.to(self.device)
                self._choose_runtime(entry)
                entry.available, entry.reason = True, None
                log.info("loaded %s on %s (%s)", entry.id, self.device, entry.runtime)
            except Exception as exc:  # a missing or broken model must never stop the server
                entry.available, entry.reason = False, str(exc) or type(exc).__name__
                log.warning("model %s unavailable: %s", entry.id, entry.reason)
        return entry

    def _choose_runtime(self, entry: ModelEntry) -> None:
        if getattr(entry.model, "differentiable", True) is False:  # already an ONNX file (bring your own)
            entry.runtime, entry.runtime_reason = "onnx", "an ONNX model file: ONNX Runtime, forward only"
            return
        threads = self.settings.torch_threads or torch.get_num_threads()
        forward, choice = runtime.prepare(entry.model, entry.id, entry.input_shape, self.settings.runtime,
                                          self.device, self.settings.onnx_dir, threads,
                                          entry.batch_limit.get(self.device.split(":")[0]))
        entry.forward, entry.runtime, entry.runtime_reason = forward, choice.name, choice.reason

    def load_all(self) -> None:
        wanted = self.settings.preload
        ids = list(self.entries) if wanted == "all" else [i.strip() for i in wanted.split(",") if i.strip()]
        for model_id in ids:
            if model_id in self.entries:
                self.load(model_id)
        self.ready.set()

    def start_background_downloads(self, run: Callable[..., object] = lambda fn, *a: fn(*a)
                                   ) -> threading.Thread | None:
        """Fetch torchvision weights that are not cached, without holding up start-up. ``run`` calls
        the loader where model work belongs (the server passes its compute thread)."""
        pending = [e for e in self.entries.values() if not e.available and e.meta.get("downloadable")]
        if not pending or not self.settings.download_weights:
            return None

        def work() -> None:
            for entry in pending:
                entry.reason = "downloading weights"
                try:
                    builtin.download_torchvision_weights(entry)
                except Exception as exc:
                    entry.reason = builtin.unavailable_reason(entry, exc)
                    continue
                run(self.load, entry.id)

        t = threading.Thread(target=work, name="weights-download", daemon=True)
        t.start()
        return t
