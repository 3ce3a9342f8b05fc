"""Breeding by hand over REST: start or branch a lineage, breed the next generation from chosen
images (or let the network choose), fetch any generation's images."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.classroom import breed
from app.jobs.spec import Integer
from app.serving.imaging import to_png
from app.serving.lab import Lab
from app.web.api import examples
from app.web.deps import available_model, classroom, classroom_compute, identity, lab
from app.web.errors import ApiError, error_responses

router = APIRouter(prefix="/api/v1", tags=["breed"])
LINEAGE_ID = r"^[A-Za-z0-9_-]{8,64}$"
MAX_LINEAGES_PER_CLIENT = 500


class NewLineage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("lenet-mnist", max_length=100, description="whose labels appear under the images")
    size: Literal[9, 12, 16] = Field(breed.DEFAULT_SIZE, description="images per generation: 9, 12 or 16")
    seed: Integer | None = Field(None, ge=0, le=2**31 - 1, description="generation 0; random when left out")
    branch: str | None = Field(None, pattern=LINEAGE_ID, description="continue another lineage (a copy of it)")
    generation: Integer | None = Field(None, ge=0, le=breed.MAX_GENERATIONS,
                                   description="with branch: from this generation (default: its latest)")


class Next(BaseModel):
    model_config = ConfigDict(extra="forbid")
    picks: list[Annotated[Integer, Field(ge=0, le=15)]] | None = Field(
        None, min_length=1, max_length=16, description="positions chosen as parents (below the lineage's size)")
    by: str = Field("person", pattern="^(person|network)$",
                    description="network: the model picks its most confident images instead")


def links(lineage_id: str, generation: int | None = None) -> dict:
    page = f"/breed/{lineage_id}" + (f"?generation={generation}" if generation is not None else "")
    return {"self": f"/api/v1/breed/{lineage_id}", "page": page, "next": f"/api/v1/breed/{lineage_id}/next"}


def lineage_or_404(request: Request, lineage_id: str) -> dict:
    lin = classroom(request).lineage(lineage_id)
    if lin is None:
        raise ApiError(404, f"no lineage {lineage_id!r}", "id")
    return lin


async def generation_view(request: Request, state: Lab, lin: dict, generation: int | None = None) -> dict:
    """A generation's images with the model's top label and confidence under each."""
    latest = len(lin["steps"])
    gen = latest if generation is None else generation
    if not 0 <= gen <= latest:
        raise ApiError(404, f"lineage {lin['id']} has generations 0..{latest}", "generation")
    entry = available_model(state, lin["model"])
    async with classroom_compute(request, "breeding"):
        images = await run_in_threadpool(request.app.state.lineages.images, entry.input_shape, lin, gen)
        probs = await state.scorer.probabilities(entry.id, images)
    conf, idx = probs.max(1)
    picked = set(lin["steps"][gen]["picks"]) if gen < latest else set()
    cells = [{"position": i, "image": f"/api/v1/breed/{lin['id']}/images/{gen}/{i}.png",
              "label": entry.labels[int(k)], "confidence": float(c), "picked": i in picked}
             for i, (c, k) in enumerate(zip(conf.tolist(), idx.tolist(), strict=True))]
    who = identity(request)
    return {"id": lin["id"], "model": lin["model"], "seed": lin["seed"], "size": lin["size"], "generation": gen,
            "generations": latest, "parent": lin["parent"], "steps": lin["steps"], "images": cells,
            "owner": who.owns(lin["client"]), "links": links(lin["id"], gen if gen != latest else None),
            "_probs": probs}


def public(view: dict) -> dict:
    return {k: v for k, v in view.items() if not k.startswith("_")}


@router.post("/breed", status_code=201, summary="Start (or branch) a lineage",
             responses={201: examples.json_example({**examples.LINEAGE, "generation": 0, "generations": 0,
                                                    "steps": []}),
                        **error_responses(404, 409, 422, 429, 507)})
async def new_lineage(request: Request, response: Response,
                      body: NewLineage = Body(default_factory=NewLineage, openapi_examples=examples.LINEAGE_REQUESTS),
                      state: Lab = Depends(lab)) -> dict:
    """Generation 0 is a grid of random small CPPNs. `branch` copies another lineage (up to
    `generation`) so anyone can go on from a shared image without changing the original."""
    lin = await create(request, state, body)
    response.headers["Location"] = f"/api/v1/breed/{lin['id']}"
    return public(await generation_view(request, state, lin))


async def create(request: Request, state: Lab, body: NewLineage) -> dict:
    store, who = classroom(request), identity(request)
    steps, parent, model, size, seed = [], None, body.model, body.size, body.seed
    if body.branch:
        src = lineage_or_404(request, body.branch)
        gen = len(src["steps"]) if body.generation is None else body.generation
        if gen > len(src["steps"]):
            raise ApiError(404, f"lineage {src['id']} has generations 0..{len(src['steps'])}", "generation")
        steps, parent, model, size, seed = src["steps"][:gen], src["id"], src["model"], src["size"], src["seed"]
    if size not in breed.SIZES:
        raise ApiError(422, f"size must be one of {', '.join(map(str, breed.SIZES))}", "size")
    entry = available_model(state, model)
    if entry.input_shape[0] not in (1, 3):
        raise ApiError(422, f"{model} takes {entry.input_shape[0]} channels: CPPNs draw grey or colour", "model")
    if await run_in_threadpool(store.count, "lineages", who.client) >= MAX_LINEAGES_PER_CLIENT:
        raise ApiError(429, f"this browser has {MAX_LINEAGES_PER_CLIENT} lineages; that is the most one may keep")
    most = state.settings.max_lineages_per_address
    if await run_in_threadpool(store.count, "lineages", who.address, "address") >= most:
        raise ApiError(429, f"your network (every browser and script at your address) keeps {most} lineages, the "
                            "most one may (FOOLING_MAX_LINEAGES_PER_ADDRESS)")
    await run_in_threadpool(request.app.state.budgets["lineages"].check)
    lineage_id = secrets.token_urlsafe(9)
    store.create_lineage(lineage_id, who.client, entry.id, secrets.randbelow(2**31) if seed is None else seed, size,
                         steps, parent, who.address)
    return store.lineage(lineage_id)


@router.get("/breed/{lineage_id}", summary="A lineage's generation",
            responses={200: examples.json_example(examples.LINEAGE), **error_responses(404, 409, 422, 429)})
async def get_lineage(request: Request, lineage_id: str = Path(pattern=LINEAGE_ID),
                      generation: int | None = Query(None, ge=0, le=breed.MAX_GENERATIONS),
                      state: Lab = Depends(lab)) -> dict:
    """The latest generation (or `generation`), replayed from the seed and the choices made: the
    same link always shows the same images."""
    return public(await generation_view(request, state, lineage_or_404(request, lineage_id), generation))


async def step(request: Request, state: Lab, lin: dict, picks: list[int] | None, by: str) -> dict:
    if not identity(request).owns(lin["client"]):
        raise ApiError(403, "only the browser that started this lineage (its fl_client cookie) breeds it on; "
                            "branch it to go on yourself")
    if len(lin["steps"]) >= breed.MAX_GENERATIONS:
        raise ApiError(409, f"a lineage has at most {breed.MAX_GENERATIONS} generations; branch it to go on")
    if by == "network":
        current = await generation_view(request, state, lin)
        picks = breed.network_picks(current["_probs"])
    elif not picks:
        raise ApiError(422, "choose at least one image (picks), or let the network choose (by: network)", "picks")
    if any(not 0 <= p < lin["size"] for p in picks):
        raise ApiError(422, f"picks are positions 0..{lin['size'] - 1}", "picks")
    steps = lin["steps"] + [{"picks": sorted(set(picks)), "by": by}]
    if not classroom(request).set_steps(lin["id"], steps):
        raise ApiError(409, "this lineage was bred on meanwhile (another tab?): reload it", "id")
    return {**lin, "steps": steps}


@router.post("/breed/{lineage_id}/next", summary="Breed the next generation", responses={
    200: examples.json_example(examples.LINEAGE),
    **error_responses(403, 404, 409, 422, 429, _403="another browser's lineage (branch it)",
                      _409="the lineage is at its last generation, or was bred on meanwhile")})
async def next_generation(request: Request, body: Next = Body(openapi_examples=examples.NEXT_REQUESTS),
                          lineage_id: str = Path(pattern=LINEAGE_ID),
                          state: Lab = Depends(lab)) -> dict:
    """The chosen images stay; every other place gets a mutated child of one of them. With
    `by: network` the model keeps its most confident images instead, as a person would keep the
    ones they like."""
    lin = await step(request, state, lineage_or_404(request, lineage_id), body.picks, body.by)
    return public(await generation_view(request, state, lin))


@router.get("/breed/{lineage_id}/images/{generation}/{position}.png", response_class=Response,
            summary="One bred image",
            responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409, 422, 429)})
async def lineage_image(request: Request, lineage_id: str = Path(pattern=LINEAGE_ID),
                        generation: int = Path(ge=0, le=breed.MAX_GENERATIONS), position: int = Path(ge=0, le=15),
                        state: Lab = Depends(lab)) -> Response:
    """At the model's input size, exactly the pixels that were scored (a generation never changes)."""
    png = await image_png(request, state, lineage_or_404(request, lineage_id), generation, position)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=31536000, immutable"})


async def image_png(request: Request, state: Lab, lin: dict, generation: int, position: int) -> bytes:
    if generation > len(lin["steps"]) or position >= lin["size"]:
        raise ApiError(404, "no such image in this lineage", "position")
    entry = available_model(state, lin["model"])
    images = request.app.state.lineages.cached_images(entry.input_shape, lin, generation)
    if images is None:  # a link opened cold: render it once, within the classroom's compute bounds
        async with classroom_compute(request, "breeding"):
            images = await run_in_threadpool(request.app.state.lineages.images, entry.input_shape, lin, generation)
    return to_png(images[position])
