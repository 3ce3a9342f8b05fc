"""Settings read from FOOLING_* environment variables (documented in docs/settings.md)."""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    # "auto" picks CUDA when a GPU is visible, else CPU.
    device: str = "auto"
    data_dir: Path = ROOT / "data"
    models_dir: Path = ROOT / "models"
    # Model ids to load at start ("all" = every registered model whose weights are at hand).
    preload: str = "all"
    # Forward-only work: "auto" (ONNX Runtime on CPU where it is faster), "torch" or "onnx"; exports are cached here
    runtime: str = "auto"
    onnx_dir: Path | None = None  # default: DATA_DIR/onnx
    # Where jobs run: "local" (this process's worker threads) or "ray" (engine actors on a Ray
    # cluster; "auto": Ray when FOOLING_RAY_ADDRESS answers, else local)
    backend: str = "local"
    ray_address: str = ""  # "" with backend=ray: start a local Ray instance
    ray_cpu_engines: int = 1  # engine actors when the cluster has no GPU (one per GPU otherwise)
    ray_engine_jobs: int = 4  # jobs one engine runs at once (their forward passes batched together)
    ray_gpu_memory: float = 0.0  # share of its GPU's memory an engine may take (0: no cap)
    # Where /api/v1/score runs with the ray backend: "engines", "server" (this process), or "auto":
    # engines on a cluster or with GPUs; the server when a local Ray instance shares this machine's CPUs
    ray_scoring: str = "auto"
    # Try to download torchvision weights that are not cached yet (background, never at import).
    download_weights: bool = True
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_files: int = 32
    # POST /api/v1/score/tensor: rows per request, and pixel-images per forward pass (one
    # compute-thread turn; 9.6M is 64 ImageNet images), and requests decoded at once.
    max_tensor_rows: int = 1024
    tensor_chunk_pixels: int = 64 * 3 * 224 * 224
    tensor_concurrency: int = 2
    # Idempotency-Key answers are replayed for this long
    idempotency_ttl_s: float = 86_400.0
    batching: bool = True
    batch_max_size: int = 64
    batch_max_wait_ms: float = 5.0
    torch_threads: int = 0  # 0: leave torch's default (one per core)
    # Jobs (fooling runs started from the API or pages)
    workers: int = 4  # jobs running at once; their forward passes share the model's batcher
    queue_size: int = 64  # jobs waiting beyond the running ones; more get 429
    max_jobs_per_client: int = 4  # queued + running jobs per signed client (browser cookie or job owner)
    max_jobs_per_address: int = 256  # ... and per network address (a class behind one NAT shares one)
    max_generations: int = 20_000
    max_steps: int = 5_000
    max_population: int = 1_000
    max_targets: int = 1_000
    # Work, not single settings: pixel-images scored in one step (x3 with a backward pass), and
    # targets x pixels a job keeps (app/jobs/limits.py). 64M: the paper's 400 ImageNet images a
    # generation; 160M: the paper's 1000-class ImageNet archive (about 600 MB of float32).
    max_step_work: int = 64_000_000
    max_job_pixels: int = 160_000_000
    # Gradient jobs with many targets take turns in slices this big (pixel-images x3), so one turn
    # on the compute thread stays short: 4M is 9 ImageNet images, about a second on a 2-core CPU.
    step_chunk_work: int = 4_000_000
    max_streams_per_client: int = 16  # open event streams per signed client ...
    max_streams_per_address: int = 500  # ... per network address (a class behind one NAT) ...
    max_streams: int = 2_000  # ... and on the whole server; past any of them: 429
    events_per_second: float = 5.0  # SSE frames per job and connection, at most
    job_timeout_s: float = 3_600.0  # a job is stopped (and keeps its best) after this long
    max_experiments_per_client: int = 2  # queued + running experiments per signed client
    experiment_timeout_s: float = 1_800.0  # an experiment's process is stopped after this long
    retention_days: float = 30.0  # finished, unpinned jobs and uploads older than this are deleted
    sweep_interval_s: float = 3_600.0  # how often retention runs (and once at start)
    disk_quota_bytes: int = 200 * 2**20  # what one client's runs and uploads may keep on disk
    # ... and all clients of one network together (a class behind a NAT, or one script that takes a
    # new cookie for every request): a fresh cookie gets a fresh client quota, not a fresh network
    disk_quota_per_address_bytes: int = 2000 * 2**20
    max_lineages_per_address: int = 5_000
    max_quiz_items_per_address: int = 20_000
    # What the whole server may keep in its data directory (0: what it keeps at start plus half the
    # volume's free space then, so that a restart never lets it fill the disk); past it: 507
    disk_budget_bytes: int = 0
    # Rows the classroom keeps on the whole server (past one: 507 saying which, and what frees it)
    max_lineages: int = 20_000
    max_quiz_items: int = 200_000  # images shown in "Can you tell?" (each holds at most one answer)
    max_members: int = 20_000  # room memberships
    max_members_per_room: int = 500
    max_rooms_per_client: int = 20  # rooms one browser may join
    max_experiments: int = 500  # experiment folders kept
    max_studies: int = 200  # human studies kept (each holds up to 120 images)
    max_study_trials: int = 200_000  # their trials, answered or not
    max_studies_per_address: int = 50  # studies made from one network (every browser and script at it)
    max_study_trials_per_address: int = 50_000  # trials shown at one network: a quarter of all, a class's many times
    # Request bodies: JSON and form bodies get this; routes that take images or arrays their own
    max_json_bytes: int = 1 * 2**20
    instructor_session_s: float = 12 * 3600.0  # an instructor sign-in lasts this long
    max_pause_s: float = 600.0  # a job paused longer is cancelled (and keeps its best)
    # Trust: cookie signing key (generated once into the data dir when empty) and the instructor's token
    secret_key: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.onnx_dir is None:  # frozen: set once, here
            object.__setattr__(self, "onnx_dir", Path(self.data_dir) / "onnx")
        if self.runtime not in ("auto", "torch", "onnx"):
            raise ValueError(f"FOOLING_RUNTIME must be auto, torch or onnx, not {self.runtime!r}")
        if self.backend not in ("local", "ray", "auto"):
            raise ValueError(f"FOOLING_BACKEND must be local, ray or auto, not {self.backend!r}")
        if self.ray_scoring not in ("auto", "engines", "server"):
            raise ValueError(f"FOOLING_RAY_SCORING must be auto, engines or server, not {self.ray_scoring!r}")
        if not 0.0 <= self.ray_gpu_memory <= 1.0:
            raise ValueError(f"FOOLING_RAY_GPU_MEMORY is a share of a GPU's memory, 0 to 1, not {self.ray_gpu_memory}")

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from FOOLING_<FIELD NAME> where that is set (sizes in bytes from FOOLING_*_MB)."""
        values = {}
        for f in fields(cls):
            name = MEGABYTES.get(f.name, f.name.upper())
            raw = os.environ.get(f"FOOLING_{name}")
            if raw is None:
                continue
            try:
                values[f.name] = _parse(f, raw)
            except ValueError:
                raise ValueError(f"FOOLING_{name}={raw!r} is not a valid {f.type}") from None
        return cls(**values)


# Sizes set in megabytes: field -> its environment name
MEGABYTES = {"disk_quota_bytes": "DISK_QUOTA_MB", "disk_quota_per_address_bytes": "DISK_QUOTA_PER_ADDRESS_MB",
             "disk_budget_bytes": "DISK_BUDGET_MB"}
CHOICES = {"runtime", "backend", "ray_scoring"}  # read as lower-case words


def _parse(f: Field, raw: str):
    if f.name in MEGABYTES:
        return int(float(raw) * 2**20)
    kind = f.type
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return _bool(raw)
    if kind == "Path":
        return Path(raw)
    if kind == "Path | None":
        return Path(raw) if raw else None
    return raw.strip().lower() if f.name in CHOICES else raw


def resolve_device(name: str) -> str:
    """Map "auto" to the best device present; validate explicit names early."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"FOOLING_DEVICE={name} but no CUDA device is visible")
    return name
