"""Settings read from FOOLING_* environment variables (documented in README.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(f"FOOLING_{name}", default)


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
        d = cls()
        return cls(
            host=_env("HOST", d.host),
            port=int(_env("PORT", str(d.port))),
            device=_env("DEVICE", d.device),
            data_dir=Path(_env("DATA_DIR", str(d.data_dir))),
            models_dir=Path(_env("MODELS_DIR", str(d.models_dir))),
            preload=_env("PRELOAD", d.preload),
            runtime=_env("RUNTIME", d.runtime).strip().lower(),
            backend=_env("BACKEND", d.backend).strip().lower(),
            ray_address=_env("RAY_ADDRESS", d.ray_address),
            ray_cpu_engines=int(_env("RAY_CPU_ENGINES", str(d.ray_cpu_engines))),
            ray_engine_jobs=int(_env("RAY_ENGINE_JOBS", str(d.ray_engine_jobs))),
            ray_gpu_memory=float(_env("RAY_GPU_MEMORY", str(d.ray_gpu_memory))),
            ray_scoring=_env("RAY_SCORING", d.ray_scoring).strip().lower(),
            onnx_dir=Path(_env("ONNX_DIR", "")) if _env("ONNX_DIR", "") else None,
            download_weights=_bool(_env("DOWNLOAD_WEIGHTS", "1")),
            max_upload_bytes=int(_env("MAX_UPLOAD_BYTES", str(d.max_upload_bytes))),
            max_image_pixels=int(_env("MAX_IMAGE_PIXELS", str(d.max_image_pixels))),
            max_files=int(_env("MAX_FILES", str(d.max_files))),
            max_tensor_rows=int(_env("MAX_TENSOR_ROWS", str(d.max_tensor_rows))),
            tensor_chunk_pixels=int(_env("TENSOR_CHUNK_PIXELS", str(d.tensor_chunk_pixels))),
            tensor_concurrency=int(_env("TENSOR_CONCURRENCY", str(d.tensor_concurrency))),
            idempotency_ttl_s=float(_env("IDEMPOTENCY_TTL_S", str(d.idempotency_ttl_s))),
            batching=_bool(_env("BATCHING", "1")),
            batch_max_size=int(_env("BATCH_MAX_SIZE", str(d.batch_max_size))),
            batch_max_wait_ms=float(_env("BATCH_MAX_WAIT_MS", str(d.batch_max_wait_ms))),
            torch_threads=int(_env("TORCH_THREADS", "0")),
            workers=int(_env("WORKERS", str(d.workers))),
            queue_size=int(_env("QUEUE_SIZE", str(d.queue_size))),
            max_jobs_per_client=int(_env("MAX_JOBS_PER_CLIENT", str(d.max_jobs_per_client))),
            max_jobs_per_address=int(_env("MAX_JOBS_PER_ADDRESS", str(d.max_jobs_per_address))),
            max_generations=int(_env("MAX_GENERATIONS", str(d.max_generations))),
            max_steps=int(_env("MAX_STEPS", str(d.max_steps))),
            max_population=int(_env("MAX_POPULATION", str(d.max_population))),
            max_targets=int(_env("MAX_TARGETS", str(d.max_targets))),
            max_step_work=int(_env("MAX_STEP_WORK", str(d.max_step_work))),
            max_job_pixels=int(_env("MAX_JOB_PIXELS", str(d.max_job_pixels))),
            step_chunk_work=int(_env("STEP_CHUNK_WORK", str(d.step_chunk_work))),
            max_streams_per_client=int(_env("MAX_STREAMS_PER_CLIENT", str(d.max_streams_per_client))),
            max_streams_per_address=int(_env("MAX_STREAMS_PER_ADDRESS", str(d.max_streams_per_address))),
            max_streams=int(_env("MAX_STREAMS", str(d.max_streams))),
            events_per_second=float(_env("EVENTS_PER_SECOND", str(d.events_per_second))),
            job_timeout_s=float(_env("JOB_TIMEOUT_S", str(d.job_timeout_s))),
            max_experiments_per_client=int(_env("MAX_EXPERIMENTS_PER_CLIENT", str(d.max_experiments_per_client))),
            experiment_timeout_s=float(_env("EXPERIMENT_TIMEOUT_S", str(d.experiment_timeout_s))),
            retention_days=float(_env("RETENTION_DAYS", str(d.retention_days))),
            sweep_interval_s=float(_env("SWEEP_INTERVAL_S", str(d.sweep_interval_s))),
            disk_quota_bytes=int(float(_env("DISK_QUOTA_MB", str(d.disk_quota_bytes / 2**20))) * 2**20),
            disk_budget_bytes=int(float(_env("DISK_BUDGET_MB", "0")) * 2**20),
            disk_quota_per_address_bytes=int(float(_env("DISK_QUOTA_PER_ADDRESS_MB", str(
                d.disk_quota_per_address_bytes / 2**20))) * 2**20),
            max_lineages_per_address=int(_env("MAX_LINEAGES_PER_ADDRESS", str(d.max_lineages_per_address))),
            max_quiz_items_per_address=int(_env("MAX_QUIZ_ITEMS_PER_ADDRESS", str(d.max_quiz_items_per_address))),
            max_lineages=int(_env("MAX_LINEAGES", str(d.max_lineages))),
            max_quiz_items=int(_env("MAX_QUIZ_ITEMS", str(d.max_quiz_items))),
            max_members=int(_env("MAX_MEMBERS", str(d.max_members))),
            max_members_per_room=int(_env("MAX_MEMBERS_PER_ROOM", str(d.max_members_per_room))),
            max_rooms_per_client=int(_env("MAX_ROOMS_PER_CLIENT", str(d.max_rooms_per_client))),
            max_experiments=int(_env("MAX_EXPERIMENTS", str(d.max_experiments))),
            max_json_bytes=int(_env("MAX_JSON_BYTES", str(d.max_json_bytes))),
            instructor_session_s=float(_env("INSTRUCTOR_SESSION_S", str(d.instructor_session_s))),
            max_pause_s=float(_env("MAX_PAUSE_S", str(d.max_pause_s))),
            secret_key=_env("SECRET_KEY", ""),
            admin_token=_env("ADMIN_TOKEN", ""),
        )


def resolve_device(name: str) -> str:
    """Map "auto" to the best device present; validate explicit names early."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"FOOLING_DEVICE={name} but no CUDA device is visible")
    return name
