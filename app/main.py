"""The ASGI application: ``uvicorn app.main:app``."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from app import pages
from app.api import errors, health, models, score
from app.settings import ROOT, Settings
from app.state import Lab

log = logging.getLogger("app")

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        lab = Lab.create(settings)
        app.state.lab = lab

        # Loading happens beside the server so /healthz answers at once and /readyz tells when done.
        def load() -> None:
            lab.registry.load_all()
            lab.registry.start_background_downloads()

        threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield
        lab.close()

    app = FastAPI(
        title="Fooling Lab",
        version="0.1.0",
        description="Watch deep neural networks get fooled: score images, evolve fooling images.",
        lifespan=lifespan,
    )
    errors.install(app)

    @app.middleware("http")
    async def limits_and_headers(request: Request, call_next):
        # Reject oversized bodies before they are spooled to disk.
        limit = settings.max_upload_bytes * settings.max_files + 1024 * 1024
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return JSONResponse({"error": "too_large", "detail": f"request body over {limit} bytes"},
                                status_code=413)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(score.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app


app = create_app()
