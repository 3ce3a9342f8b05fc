"""Path segments that are one of a fixed set of names, as Starlette URL convertors.

Why: ``/jobs/{id}/{action}`` (POST, controls) and ``/experiments/{id}/{name}`` (GET, plots) share
their shapes with other routes (``/jobs/{id}/events``, ``/experiments/{id}/cancel``). With plain
parameters a request with the other method matched the wrong route and answered 422; with the
names in the path pattern it matches none and answers 405 with the right Allow."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

JOB_ACTIONS = ("cancel", "pause", "resume", "step", "hide", "unhide", "pin", "unpin")
PLOT_NAME = r"[a-z0-9-]{1,64}\.png"


class _Names(Convertor):
    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def _names(regex: str) -> _Names:
    conv = _Names()
    conv.regex = regex
    return conv


register_url_convertor("jobaction", _names("|".join(JOB_ACTIONS)))
register_url_convertor("plot", _names(PLOT_NAME))
