"""The web layer: the FastAPI app, REST routers (web.api), server-rendered pages (web.pages), the JSON
views and SSE plumbing they share, errors and middleware. Reads jobs, experiments and serving; nothing
below imports it."""
