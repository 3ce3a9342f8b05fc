"""Refusals in the app's own words: what kind of "no" it is, never an HTTP status.

Below the web layer, a request the app will not carry out raises a ``Refused`` (or one of its
kinds of error: a job's, an image's, an experiment's, a full budget). The web layer turns each
kind into its status, headers and JSON body in one place (app/web/errors.py); the command line
prints the detail.
"""

from __future__ import annotations

KINDS = (
    "malformed",  # the input cannot be read (a corrupt image, not a .npy file)
    "not_found",  # no such job, upload, experiment or model
    "conflict",  # not in this state (finished already, not paused, a model not available)
    "too_large",  # over a size limit or a quota
    "unsupported",  # a kind of input not read here (not an image)
    "invalid",  # a value out of bounds or that makes no sense
    "busy",  # a cap on things at once is reached: try again later (retry_after, quota)
    "unavailable",  # the server is stopping, an engine does not answer
    "full",  # a server-wide budget is used up
)


class Refused(Exception):
    """``field``: the request field at fault; ``retry_after``: seconds after which trying again may
    work; ``quota``: for "busy", the cap that was reached, as (name, size)."""

    def __init__(self, kind: str, detail: str, field: str | None = None, *, retry_after: int | None = None,
                 quota: tuple[str, int] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of refusal {kind!r}")
        super().__init__(detail)
        self.kind, self.detail, self.field = kind, detail, field
        self.retry_after, self.quota = retry_after, quota

    def __str__(self) -> str:
        return self.detail
