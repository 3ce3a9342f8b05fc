"""REST routers under /api/v1: health, models, scoring, jobs (with SSE events) and experiments."""
