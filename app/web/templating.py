"""The Jinja2 environment every page renders with."""

from fastapi.templating import Jinja2Templates

from app.settings import ROOT

templates = Jinja2Templates(directory=ROOT / "templates")
