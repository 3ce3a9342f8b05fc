"""Human studies over REST: design one (frozen stimuli), run its trials, read its results, export it."""

from __future__ import annotations

import hashlib
import io
import random
import secrets
import time
from typing import Literal

import torch
from fastapi import APIRouter, Body, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.classroom import studies
from app.classroom.quiz import Candidate
from app.classroom.store import CODE_PATTERN
from app.models.defences import rejected_index
from app.serving.imaging import to_png
from app.serving.lab import Lab
from app.web.api import examples
from app.web.deps import (
    available_model_soon,
    classroom_compute,
    identity,
    lab,
    open_room,
    require_member,
)
from app.web.errors import ApiError, error_responses

router = APIRouter(prefix="/api/v1", tags=["studies"])
STUDY_ID = r"^[A-Za-z0-9_-]{8,32}$"
TRIAL_ID = r"^[A-Za-z0-9_-]{8,64}$"
MAX_STUDIES_PER_CLIENT = 20
MAX_PARTICIPANTS = 1000  # per study: each has at most trials_per_block x blocks rows


class StudyDesign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(min_length=1, max_length=4, json_schema_extra={"uniqueItems": True},
                              description="model ids whose fooling images are shown (each once)")
    tasks: list[Literal["forced_choice", "options"]] = Field(
        ["forced_choice", "options"], min_length=1, max_length=2,
        description="one block per task, in this order: forced_choice (Zhou & Firestone: the network's label "
                    "against another fooling image's label; chance 1/2), options (Dujmovic et al.: the "
                    "network's label, its runner-up, a random label, none of these; chance 1/4)")
    conditions: list[Literal["gradient", "evolution-direct", "evolution-cppn"]] = Field(
        ["gradient", "evolution-direct", "evolution-cppn"], min_length=1, max_length=3,
        description="which fooling images, kept apart: gradient ascent, evolution with the direct or the CPPN "
                    "encoding")
    controls: bool = Field(True, description="add real images the network classifies correctly (a control)")
    min_confidence: float = Field(0.99, ge=0.5, le=1.0, description="only images the network gives at least this")
    trials_per_block: int = Field(10, ge=1, le=studies.MAX_TRIALS_PER_BLOCK)
    exposure_ms: int | None = Field(None, ge=100, le=10_000,
                                    description="show each image this long, then hide it (null: until answered)")
    room: str | None = Field(None, pattern=CODE_PATTERN, description="draw the images from this room's runs, and "
                                                                      "let only its members take part")
    title: str = Field("", max_length=200)


class TrialAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial: str = Field(pattern=TRIAL_ID)
    answer: str = Field(max_length=200, description="one of the trial's options")


def _store(request: Request) -> studies.StudyStore:
    return request.app.state.studies


def _participant(request: Request) -> str:
    who = identity(request)
    if who.anonymous:
        raise ApiError(403, "taking part in a study needs this browser's cookie (fl_client): every script "
                            "without one at your address would count as one participant", "cookie")
    return who.client


def _study(request: Request, study_id: str) -> dict:
    study = _store(request).get(study_id)
    if study is None:
        raise ApiError(404, f"no study {study_id!r}", "study_id")
    return study


def _owner_only(request: Request, study: dict, what: str) -> None:
    who = identity(request)
    if not (who.instructor or who.owns(study["owner"])):
        raise ApiError(403, f"{what} of a study are for the one who made it and the instructor (participants "
                            "see their own agreement when a block ends)", "study_id")


def _salt(request: Request) -> str:
    """Participants appear under a per-server, per-study pseudonym, never their cookie id."""
    return hashlib.sha256(request.app.state.gatekeeper.signer.key).hexdigest()


def _links(study_id: str) -> dict:
    base = f"/api/v1/studies/{study_id}"
    return {"page": f"/studies/{study_id}", "next": f"{base}/next", "answers": f"{base}/answers",
            "results": f"{base}/results", "trials_csv": f"{base}/trials.csv", "sheet": f"{base}/sheet.json"}


async def _controls(request: Request, state: Lab, design: studies.Design, want: int) -> list[dict]:
    """Real images for the design's models: MNIST test digits (LeNet) and the control photos (ImageNet)."""
    pool = request.app.state.quiz
    out: list[dict] = []
    for model in design.models:
        entry = state.registry.get(model)
        if entry.num_classes == 10 and entry.input_shape == (1, 28, 28):
            data = await run_in_threadpool(pool.mnist)
            if data is not None:
                for i in range(min(want * 2, len(data[1]))):
                    out.append({"kind": "control", "condition": studies.CONTROL, "model": model,
                                "source": f"mnist:{i}", "truth": entry.labels[int(data[1][i])], "x": data[0][i]})
        elif entry.num_classes == 1000:
            for photo in await run_in_threadpool(pool.photos):
                if photo["label"] in entry.labels:
                    x = await run_in_threadpool(pool.image, Candidate(f"photo:{photo['key']}", "real", "photo", ""))
                    if x is not None:
                        out.append({"kind": "control", "condition": studies.CONTROL, "model": model,
                                    "source": f"photo:{photo['key']}", "truth": photo["label"], "x": x})
    return out


def _read_png(path) -> tuple[bytes, torch.Tensor]:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        channels = len(img.getbands())
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, channels)
    return data, x.permute(2, 0, 1).float() / 255


@router.post("/studies", status_code=201, summary="Design a study (its stimuli are frozen now)",
             responses={201: examples.json_example(examples.STUDY_CREATED),
                        **error_responses(403, 409, 422, 429, 507, _409="the design's stimuli do not exist yet: "
                                                                        "`runs` names the runs to make"),
                        })
async def create_study(request: Request, design: StudyDesign = Body(openapi_examples=examples.STUDY_REQUESTS),
                       state: Lab = Depends(lab)) -> dict:
    """Freeze a study: its design, and the images it shows (copied, with their sha256). Every
    (model, condition) of the design needs finished runs with images at `min_confidence` or above,
    and enough images for every block without showing one twice: otherwise 409, with the runs to
    make in `runs`."""
    who = identity(request)
    owner = who.client if who.instructor else _participant(request)  # the instructor may sign in by token alone
    store = _store(request)
    for model in design.models:
        try:
            await available_model_soon(state, model, "models")
        except ApiError as exc:  # an unknown id is a bad design (422); an unavailable model, 409
            raise ApiError(422 if exc.status_code == 404 else exc.status_code, exc.detail, "models") from None
    if design.room:
        require_member(request, open_room(request, design.room), "studies", "room")
    if len(set(design.models)) != len(design.models):
        raise ApiError(422, "models: each model once", "models")
    if not who.instructor:
        if await run_in_threadpool(store.count, owner) >= MAX_STUDIES_PER_CLIENT:
            raise ApiError(429, f"a browser may make at most {MAX_STUDIES_PER_CLIENT} studies: delete one first",
                           "studies")
        most = state.settings.max_studies_per_address
        if await run_in_threadpool(store.count, None, who.address) >= most:
            raise ApiError(429, f"your network (every browser and script at your address) has made {most} studies, "
                                "the most this server takes from one (FOOLING_MAX_STUDIES_PER_ADDRESS)", "studies")
    await run_in_threadpool(request.app.state.budgets["studies"].check)
    d = studies.Design(**design.model_dump(exclude={"title"}))
    candidates = await run_in_threadpool(studies.fooling_candidates, request.app.state.runner.store, d)
    need = d.trials_per_block * len(d.tasks)
    missing = studies.missing_runs(candidates, d)
    if missing:
        raise ApiError(409, "the design needs images that do not exist yet: make these runs (to "
                            f"{d.min_confidence:.0%} or more), then design the study again", "models",
                       extra={"runs": missing})
    # A defended model's own "rejected" is no answer to offer people: its real classes only
    refused = {m: rejected_index(state.registry.get(m).labels) for m in d.models}
    labels = {m: state.registry.get(m).labels[:refused[m]] for m in d.models}
    # Other available networks with the same classes and input (e.g. LeNets of other seeds), at most 4
    peers = {m: [e.id for e in state.registry.list() if e.available and e.id != m and e.labels == labels[m]
                 and e.input_shape == state.registry.get(m).input_shape][:4] for m in d.models}
    async with classroom_compute(request, "study"):
        controls = await _controls(request, state, d, need) if d.controls else []
        chosen = studies.pick_stimuli(candidates, controls, d, seed=int(time.time()))
        stimuli, pngs, hashes = [], [], set()
        for c in chosen:
            if c["kind"] == "fooling":
                png, x = await run_in_threadpool(_read_png, c["path"])
            else:
                x = c["x"]
                png = await run_in_threadpool(to_png, x)
            digest = hashlib.sha256(png).hexdigest()
            if digest in hashes:
                continue  # the same image twice (runs with equal seeds, a control for two models): once
            probs = (await state.scorer.probabilities(c["model"], x[None]))[0]
            if refused[c["model"]] is not None:
                if int(probs.argmax()) == refused[c["model"]]:
                    continue  # the defence rejects it: an image it stops shows nothing it was fooled by
                probs = probs[: refused[c["model"]]]
            conf, top = probs.topk(2)
            label = labels[c["model"]][int(top[0])]
            if c["kind"] == "fooling" and float(conf[0]) < d.min_confidence:
                continue  # scored again as saved: below the floor after all
            if c["kind"] == "control" and label != c["truth"]:
                continue  # controls are images the network gets right
            transfer = {}
            for other in peers[c["model"]]:  # how far the image fools the other networks of its kind
                p_other = (await state.scorer.probabilities(other, x[None]))[0]
                transfer[other] = round(float(p_other[int(top[0])]), 6)
            stimuli.append({"id": len(stimuli), "kind": c["kind"], "condition": c["condition"], "model": c["model"],
                            "source": c["source"], "label": label, "confidence": round(float(conf[0]), 6),
                            "runner_up": labels[c["model"]][int(top[1])], "transfer": transfer,
                            "sha256": digest})
            pngs.append(png)
            hashes.add(digest)
    if sum(s["kind"] == "fooling" for s in stimuli) == 0 or len(stimuli) < need:
        raise ApiError(409, f"the design shows {need} images to each participant ({d.trials_per_block} per block), "
                            f"and only {len(stimuli)} qualify: make more runs like these", "trials_per_block",
                       extra={"runs": studies.missing_runs([], d)})
    studies.freeze_options(stimuli, labels, random.Random(secrets.randbits(64)))
    await run_in_threadpool(request.app.state.budgets["disk"].check, sum(len(p) for p in pngs))
    study = await run_in_threadpool(store.create, owner, who.address, design.title, d, stimuli, pngs)
    return {"id": study["id"], "links": _links(study["id"]), "stimuli": len(stimuli),
            "blocks": study["design"]["blocks"]}


@router.get("/studies/{study_id}", summary="A study's design (for anyone who has its link)",
            responses={200: examples.json_example(examples.STUDY_INFO), **error_responses(404, 422)})
async def get_study(request: Request, study_id: str = Path(pattern=STUDY_ID)) -> dict:
    """What a participant may know before taking part: the title, the parts with their tasks,
    instructions and chance, the number of images per part, the exposure time and the consent line."""
    study = _study(request, study_id)
    d = study["design"]
    return {"id": study["id"], "title": study["title"], "created": study["created"], "links": _links(study["id"]),
            "blocks": d["blocks"], "trials_per_block": d["trials_per_block"], "exposure_ms": d["exposure_ms"],
            "consent": studies.CONSENT, "stimuli": len(study["stimuli"])}


def _trial_view(study: dict, t: dict) -> dict:
    """What a participant sees: never the network's answer, nor where the image came from."""
    d = study["design"]
    block = d["blocks"][t["block"]]
    return {"trial": t["id"], "block": t["block"], "task": block["task"], "instruction": block["instruction"],
            "position": t["position"] + 1, "of": d["trials_per_block"], "blocks": len(d["blocks"]),
            "image": f"/api/v1/studies/{study['id']}/trials/{t['id']}.png", "options": t["options"],
            "exposure_ms": d["exposure_ms"]}


def _may_take_part(request: Request, study: dict) -> str:
    participant = _participant(request)
    room = study["design"].get("room")
    if room:
        require_member(request, open_room(request, room), "the trials", "study_id")
    return participant


async def open_trial(request: Request, study: dict) -> dict | None:
    """This browser's open or next trial of the study (None when it is done): the checks and caps of
    taking part, then one atomic read-or-add in the store."""
    participant = _may_take_part(request, study)
    address = identity(request).address
    store = _store(request)
    started = await run_in_threadpool(store.participants, study["id"])
    if participant not in started:
        if len(started) >= MAX_PARTICIPANTS:
            raise ApiError(429, f"this study has its {MAX_PARTICIPANTS} participants", "study_id")
        needs = study["design"]["trials_per_block"] * len(study["design"]["blocks"])
        most = request.app.state.lab.settings.max_study_trials_per_address
        if await run_in_threadpool(store.count_trials, address) + needs > most:
            raise ApiError(429, f"your network (every browser and script at your address) has been shown {most} "
                                "study trials, the most this server shows one (FOOLING_MAX_STUDY_TRIALS_PER_ADDRESS)",
                           "studies")
        await run_in_threadpool(request.app.state.budgets["study_trials"].check, needs)
    return await run_in_threadpool(studies.next_trial, store, study, participant, address)


@router.get("/studies/{study_id}/next", summary="This browser's next trial (204 when it is done)",
            responses={200: examples.json_example(examples.STUDY_TRIAL), 204: {"description": "every block is done"},
                       **error_responses(403, 404, 422, 429, 507)})
async def next_trial(request: Request, study_id: str = Path(pattern=STUDY_ID)) -> Response:
    """The open trial again, or a new one: an image this browser has not seen in this study, and the
    options of its block's task. No feedback until a block is done."""
    study = _study(request, study_id)
    t = await open_trial(request, study)
    if t is None:
        return Response(status_code=204)
    return JSONResponse(_trial_view(study, t), headers={"Cache-Control": "no-store"})


@router.delete("/studies/{study_id}", status_code=204, summary="Delete a study, its images and its trials",
               responses={204: {"description": "deleted"}, **error_responses(403, 404, 422)})
async def delete_study(request: Request, study_id: str = Path(pattern=STUDY_ID)) -> Response:
    """For the study's maker and the instructor. Export the trials first: nothing of it is kept."""
    study = _study(request, study_id)
    _owner_only(request, study, "deleting")
    await run_in_threadpool(_store(request).delete, study_id)
    return Response(status_code=204)


@router.get("/studies/{study_id}/trials/{trial_id}.png", response_class=Response, summary="A trial's image",
            responses={200: {"content": {"image/png": {}}}, **error_responses(403, 404, 422)})
async def trial_image(request: Request, study_id: str = Path(pattern=STUDY_ID),
                      trial_id: str = Path(pattern=TRIAL_ID)) -> Response:
    """The image of one of this browser's trials. Its URL names the trial, not the image: it says
    nothing of where the image came from."""
    _study(request, study_id)  # 404 for an unknown study
    participant = _participant(request)
    mine = {t["id"]: t for t in await run_in_threadpool(_store(request).trials, study_id, participant)}
    if trial_id not in mine:
        raise ApiError(404, f"no trial {trial_id!r} of yours in this study", "trial_id")
    path = _store(request).root / study_id / f"{mine[trial_id]['stimulus']}.png"
    return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.post("/studies/{study_id}/answers", status_code=201, summary="Answer a trial",
             responses={201: examples.json_example(examples.STUDY_ANSWERED),
                        **error_responses(403, 404, 409, 422, _409="that trial is already answered")})
async def answer(request: Request, body: TrialAnswer = Body(openapi_examples=examples.STUDY_ANSWER_REQUESTS),
                 study_id: str = Path(pattern=STUDY_ID)) -> dict:
    """Record the answer. Until the block's last trial is answered the reply says nothing of the
    network's label; then `feedback` holds this participant's agreement in that block."""
    study = _study(request, study_id)
    participant = _participant(request)
    store = _store(request)
    mine = await run_in_threadpool(store.trials, study_id, participant)
    trial = next((t for t in mine if t["id"] == body.trial), None)
    if trial is None:
        raise ApiError(404, f"no trial {body.trial!r} of yours in this study", "trial")
    if body.answer not in trial["options"]:
        raise ApiError(422, f"answer must be one of {trial['options']}", "answer")
    ms = int(max(0.0, time.time() - trial["shown"]) * 1000)
    if not await run_in_threadpool(store.answer, body.trial, body.answer, ms):
        raise ApiError(409, "that trial is already answered", "trial")
    trial["answer"] = body.answer  # as now stored: the block's feedback needs no second read
    feedback = studies.block_feedback(study, mine, trial["block"])
    return {"recorded": True, "block": trial["block"], "block_complete": feedback is not None, "feedback": feedback}


@router.get("/studies/{study_id}/results", summary="Agreement per block, participant, condition and image",
            responses={200: examples.json_example(examples.STUDY_RESULTS), **error_responses(403, 404, 422)})
async def study_results(request: Request, study_id: str = Path(pattern=STUDY_ID)) -> dict:
    """Per block: `task`, `chance`, `participants`, `trials`, `agreement` and `ci95` ([low, high])
    on the fooling images: the mean of the participants' agreement, with an interval covering both
    a t interval across them and a Wilson interval over all trials; `controls` the same for the
    real images; per participant (Wilson), per condition and per image beside the network's
    confidence and its transfer. For the study's maker and the instructor."""
    study = _study(request, study_id)
    _owner_only(request, study, "the results")
    rows = await run_in_threadpool(_store(request).trials, study_id)
    salt = _salt(request)
    for r in rows:
        r["participant"] = studies.pseudonym(salt, study_id, r["participant"])
    return studies.results(study, studies.scored(study, rows))


@router.get("/studies/{study_id}/trials.csv", response_class=Response, summary="Every answered trial as CSV",
            responses={200: {"content": {"text/csv": {}}}, **error_responses(403, 404, 422)})
async def trials_csv(request: Request, study_id: str = Path(pattern=STUDY_ID)) -> Response:
    """One row per answered trial: block, task, the image's condition, model, the network's label and
    confidence, the options in the order shown, the answer, agreement and response time.
    Participants appear as per-study pseudonyms. For the study's maker and the instructor."""
    study = _study(request, study_id)
    _owner_only(request, study, "the trials")
    rows = studies.scored(study, await run_in_threadpool(_store(request).trials, study_id))
    salt = _salt(request)
    return Response(studies.trials_csv(study, rows, salt), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="study-{study_id}-trials.csv"'})


@router.get("/studies/{study_id}/sheet.json", summary="The study sheet: design, stimuli and their hashes, dates",
            responses={200: examples.json_example(examples.STUDY_SHEET), **error_responses(403, 404, 422)})
async def sheet(request: Request, study_id: str = Path(pattern=STUDY_ID)) -> dict:
    """Everything needed to run the study again and cite it: the design, each block's task, chance,
    instruction, the consent line, and every stimulus with its condition, model, the network's label
    and confidence, its source run and the sha256 of the PNG shown."""
    study = _study(request, study_id)
    _owner_only(request, study, "the sheet")
    return {"id": study["id"], "title": study["title"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(study["created"])),
            "design": study["design"], "consent": studies.CONSENT, "stimuli": study["stimuli"],
            "software": f"Fooling Lab {request.app.version}", "results": _links(study_id)["results"]}

