"""The ASGI application: ``uvicorn app.main:app`` (built by app.web.app.create_app)."""

from app.web.app import create_app

__all__ = ["app", "create_app"]

app = create_app()
