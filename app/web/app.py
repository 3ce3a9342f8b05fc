"""Builds the FastAPI application: state at start-up, middleware, routers, static files."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.budgets import DiskBudget, Retention, RowBudget, files_bytes
from app.classroom.breed import Lineages
from app.classroom.feed import RoomFeeds
from app.classroom.quiz import QuizPool
from app.classroom.store import ClassroomStore
from app.classroom.studies import StudyStore
from app.classroom.wall import Tiles
from app.experiments.runner import ExperimentRunner
from app.fooling.baseline import NoiseBaselines
from app.jobs.runner import make_runner
from app.jobs.store import JobStore
from app.serving import compute
from app.serving.lab import Lab
from app.settings import ROOT, Settings
from app.web import api_docs, errors, openapi, paths  # noqa: F401 (paths registers URL convertors)
from app.web.api import breed as breed_api
from app.web.api import controls as controls_api
from app.web.api import defences as defences_api
from app.web.api import experiments as experiments_api
from app.web.api import health, models, score
from app.web.api import jobs as jobs_api
from app.web.api import quiz as quiz_api
from app.web.api import rooms as rooms_api
from app.web.api import studies as studies_api
from app.web.arena import Boards
from app.web.identity import Gatekeeper
from app.web.middleware import GuardMiddleware, body_limits
from app.web.pages import arena as arena_pages
from app.web.pages import classroom as classroom_pages
from app.web.pages import experiments as experiment_pages
from app.web.pages import instructor as instructor_pages
from app.web.pages import lab as lab_pages
from app.web.pages import runs as run_pages
from app.web.pages import studies as study_pages
from app.web.pages import tools as tool_pages
from app.web.streams import StreamLimiter

DESCRIPTION = """Watch deep neural networks get fooled, live: score images, evolve fooling images, attack real ones.

* **Score** images on any listed model: `POST /api/v1/score` (PNG, JPEG, ... as multipart), or many
  at once at model speed as one NumPy array: `POST /api/v1/score/tensor`.
* **Jobs** run one method (evolution with a direct or CPPN encoding, MAP-Elites, gradient ascent,
  FGSM, PGD, the random baseline) with a seed: start one with `POST /api/v1/jobs`, follow it with
  Server-Sent Events at its `links.events`, download its images and `summary.json` when it ends.
* **Errors** are JSON of one shape, `{"error", "detail", "field"}` (plus `errors` for a 422); a 429
  says when to retry in `Retry-After` and which quota it hit in `RateLimit-Policy` / `RateLimit`.
* **Classroom**: the instructor creates a room (`POST /api/v1/rooms`); students join at `/r/{code}`
  and their jobs carry the room; the class wall follows every job of a room over one stream
  (`/api/v1/rooms/{code}/events`). "Can you tell?" (`/api/v1/quiz/...`) asks people what they see,
  and `/api/v1/breed` breeds CPPN images by hand.
* **Retries and caching**: `Idempotency-Key` on `POST /api/v1/jobs` and `POST /api/v1/uploads`; a
  finished job's files carry a strong `ETag` and answer 304 to `If-None-Match`.

The same document as a reference page: [/redoc](/redoc). Python clients: docs/api.md in the repository.
"""


def budgets_for(settings: Settings, store: JobStore, rooms: ClassroomStore, experiments: ExperimentRunner,
                reserved: Callable[[], int], studies: StudyStore) -> dict:
    """The server-wide budgets (app.budgets), by name: GET /api/v1/budgets reports them. The disk
    counts saved jobs and uploads, what running jobs may still write (``reserved``), experiment
    folders and the databases."""
    data = Path(settings.data_dir)
    disk = DiskBudget.at_start(settings.disk_budget_bytes, data, [
        store.bytes_used, reserved, lambda: files_bytes(experiments.root.rglob("*")),
        lambda: files_bytes(studies.root.rglob("*")),
        lambda: files_bytes(data.glob("*.sqlite3*"))])
    keep = f"retention removes them after FOOLING_RETENTION_DAYS ({settings.retention_days:g} days)"
    return {"disk": disk,
            "lineages": RowBudget("lineages", "MAX_LINEAGES", settings.max_lineages, lambda: rooms.count("lineages"),
                                  f"{keep}, counted from their last generation"),
            "quiz_items": RowBudget("quiz", "MAX_QUIZ_ITEMS", settings.max_quiz_items,
                                    lambda: rooms.count("quiz_items"), f"{keep}; export the answers first"),
            "members": RowBudget("room members", "MAX_MEMBERS", settings.max_members, lambda: rooms.count("members"),
                                 f"closed rooms' members: {keep} (the instructor closes rooms no longer used)"),
            "experiments": RowBudget("experiments", "MAX_EXPERIMENTS", settings.max_experiments, experiments.count,
                                     keep),
            "studies": RowBudget("studies", "MAX_STUDIES", settings.max_studies, studies.count,
                                 f"{keep} (export their trials first); their makers and the instructor delete them"),
            "study_trials": RowBudget("study trials", "MAX_STUDY_TRIALS", settings.max_study_trials,
                                      studies.count_trials, f"{keep}, with their studies")}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        lab = Lab.create(settings)
        app.state.lab = lab
        app.state.stopping = threading.Event()
        store = JobStore(settings.data_dir)
        app.state.runner = make_runner(lab, store)
        app.state.experiments = ExperimentRunner(settings)
        app.state.classroom = ClassroomStore(settings.data_dir)
        app.state.studies = StudyStore(settings.data_dir)
        app.state.budgets = budgets_for(settings, store, app.state.classroom, app.state.experiments,
                                        app.state.runner.reserved_bytes, app.state.studies)
        app.state.runner.disk = app.state.budgets["disk"]
        sweepers = {"jobs": app.state.runner.expire, "classroom": app.state.classroom.sweep,
                    "experiments": app.state.experiments.sweep, "studies": app.state.studies.sweep}
        app.state.retention = retention = Retention(sweepers, settings.retention_days,
                                                    settings.sweep_interval_s).start()
        app.state.quiz = QuizPool(store, settings.data_dir, ROOT / "static" / "samples")
        app.state.tiles = Tiles(app.state.runner)
        app.state.boards = Boards(lab, app.state.runner)
        app.state.feeds = RoomFeeds(app.state.classroom, app.state.runner, app.state.tiles, app.state.boards.board)
        app.state.lineages = Lineages()
        app.state.noise = NoiseBaselines()

        # Loading happens beside the server so /healthz answers at once and /readyz tells when done.
        def loaded(_) -> None:
            lab.registry.start_background_downloads(compute.run)

        compute.submit(lab.registry.load_all).add_done_callback(loaded)
        yield
        app.state.stopping.set()  # this app's open event streams end now instead of holding the shutdown
        retention.close()
        app.state.runner.close()
        app.state.experiments.close()
        app.state.classroom.close()
        app.state.studies.close()
        store.close()
        lab.close()

    app = FastAPI(
        title="Fooling Lab",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by app.web.api_docs from vendored files (works offline, under our CSP)
        redoc_url=None,
        generate_unique_id_function=lambda route: route.name,  # operationIds: create_job, not create_job_api_v1_..
    )
    errors.install(app)
    openapi.install(app, settings)

    gatekeeper = Gatekeeper(settings.secret_key, settings.admin_token, settings.data_dir,
                            settings.instructor_session_s)
    app.state.gatekeeper = gatekeeper
    app.state.tensor_slots = asyncio.Semaphore(max(1, settings.tensor_concurrency))
    app.state.streams = StreamLimiter(settings.max_streams_per_client, settings.max_streams_per_address,
                                      settings.max_streams)
    limits, default_limit = body_limits(settings.max_upload_bytes, settings.max_files, settings.max_json_bytes)
    app.add_middleware(GuardMiddleware, limits=limits, default_limit=default_limit, gatekeeper=gatekeeper)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(defences_api.router)
    app.include_router(score.router)
    app.include_router(jobs_api.router)
    app.include_router(experiments_api.router)
    app.include_router(rooms_api.router)
    app.include_router(quiz_api.router)
    app.include_router(studies_api.router)
    app.include_router(controls_api.router)
    app.include_router(breed_api.router)
    app.include_router(lab_pages.router)
    app.include_router(run_pages.router)
    app.include_router(study_pages.router)
    app.include_router(arena_pages.router)
    app.include_router(experiment_pages.router)
    app.include_router(tool_pages.router)
    app.include_router(api_docs.router)
    app.include_router(instructor_pages.router)
    app.include_router(classroom_pages.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app



