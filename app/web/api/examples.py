"""Example requests and answers for the OpenAPI document (shown in /docs and /redoc), taken from a
real server and shortened. Kept apart so the routers stay readable."""

from __future__ import annotations

JOB = "AbCdEfGh12345678"
BASE = f"/api/v1/jobs/{JOB}"
LIVE_LINKS = {"self": BASE, "events": f"{BASE}/events", "page": f"/jobs/{JOB}", "cancel": f"{BASE}/cancel",
              "pause": f"{BASE}/pause", "resume": f"{BASE}/resume", "step": f"{BASE}/step"}
# A finished job's links also name its files (only once they exist)
LINKS = {**LIVE_LINKS, "grid": f"{BASE}/grid.png", "curve": f"{BASE}/curve.png", "summary": f"{BASE}/summary.json"}

TOP = [{"index": 7, "label": "7", "confidence": 0.99996}, {"index": 3, "label": "3", "confidence": 0.00003},
       {"index": 9, "label": "9", "confidence": 0.00001}]

MODEL = {"id": "lenet-mnist", "title": "LeNet (Caffe) on MNIST", "task": "mnist-digits", "input_shape": [1, 28, 28],
         "num_classes": 10, "device": "cpu", "available": True, "reason": None, "differentiable": True,
         "runtime": "torch", "runtime_reason": "auto: torch is faster here (22706 images/s in ONNX Runtime, 24590 "
                                               "in PyTorch, batch 64, measured once on this machine)",
         "source": "models/lenet-mnist.pt",
         "meta": {"test_accuracy": 0.9949, "command": "python -m app train-lenet --seed 0 --epochs 8"},
         "labels": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
MODEL_DETAIL = {**MODEL, "noise_baseline": {"n": 1000, "median": 0.99, "p95": 0.9995, "top_label": "8",
                                             "top_label_share": 1.0, "images": "uniform noise on the 8-bit grid",
                                             "seed": 0}}
UNAVAILABLE = {"id": "alexnet-imagenet", "title": "AlexNet (the paper's ImageNet network) on ImageNet-1k (torchvision)",
               "task": "imagenet-1k", "input_shape": [3, 224, 224], "num_classes": 1000, "device": "cpu",
               "available": False, "differentiable": True, "source": "torchvision alexnet IMAGENET1K_V1",
               "runtime": "torch", "runtime_reason": "not loaded yet",
               "reason": "torchvision weights are not cached and download failed; run "
                         "`fooling-lab fetch-weights alexnet-imagenet` on a machine with internet",
               "meta": {"downloadable": True}}
MODELS = {"models": [MODEL, UNAVAILABLE]}

SCORE = {"model": "lenet-mnist", "elapsed_ms": 3.2,
         "results": [{"filename": "seven.png", "top": TOP}]}

JOB_CREATED = {"id": JOB, "status": "queued", "control_token": "q8V0c3K1Yw2m5eXr7tZpN4bLh6sJd9Ga",
               "links": LIVE_LINKS}

TARGET = {"position": 7, "index": 7, "label": "7", "confidence": 0.99996, "image": f"{BASE}/images/7.png",
          "reached_9999": {"step": 212, "evaluations": 42600, "seconds": 2.41}, "top": TOP}
JOB_VIEW = {"id": JOB, "status": "done", "created": 1795626094.2, "updated": 1795626099.1,
            "settings": {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
                         "generations": 500, "steps": None, "population": None, "seed": 0, "params": {},
                         "upload": None, "max_seconds": None, "title": None},
            "error": None, "links": LINKS, "progress": {"step": 500, "evaluations": 100200, "elapsed": 4.9},
            "targets": [TARGET], "version": 88, "min_confidence": 0.99991, "at_9999": 10, "ten_crop": False,
            "stop_reason": None, "extra": {"occupied": 10},
            "history": [{"step": 500, "evaluations": 100200, "seconds": 4.9, "min": 0.99991, "median": 0.99997,
                         "max": 0.99999, "mean": 0.99996, "at_9999": 10}]}
JOB_LIST = {"jobs": [{k: v for k, v in JOB_VIEW.items() if k != "history"}], "total": 1, "limit": 20, "offset": 0}
CONTROLLED = {"id": JOB, "status": "paused"}
UPLOADED = {"id": "Up1oadId0123abcd", "width": 512, "height": 600}

EVENTS = (f'retry: 2000\n\nid: 3\nevent: state\ndata: {{"id":"{JOB}","status":"running",...}}\n\n'
          f'id: 4\nevent: snapshot\ndata: {{"id":"{JOB}","status":"running","step":40,"evaluations":8200,'
          '"targets":[...]}\n\n'
          f'id: 90\nevent: final\ndata: {{"id":"{JOB}","status":"done",...}}\n\n'
          f'event: close\ndata: {{"id":"{JOB}","status":"done"}}\n\n')

JOB_REQUESTS = {
    "map-elites": {"summary": "MAP-Elites, direct encoding, all ten digits",
                   "value": {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
                             "generations": 500, "seed": 0}},
    "cppn": {"summary": "CPPN evolution of one ImageNet class, 2-minute budget",
             "value": {"model": "efficientnet-lite0-imagenet", "method": "evolve", "encoding": "cppn",
                       "targets": ["school bus"], "max_seconds": 120, "seed": 1}},
    "gradient": {"summary": "Gradient ascent on three digits",
                 "value": {"model": "lenet-mnist", "method": "gradient", "targets": [0, 3, 7], "steps": 100,
                           "params": {"lr": 0.05}}},
    "pgd": {"summary": "Targeted PGD on an uploaded image",
            "value": {"model": "lenet-mnist", "method": "pgd", "targets": [3], "upload": "Up1oadId0123abcd",
                      "steps": 40, "params": {"epsilon": 0.2}}},
}

EXPERIMENT_REQUESTS = {
    "logistic": {"summary": "The 10-D logistic-regression example (under a second)",
                 "value": {"name": "logistic", "quick": True, "seed": 0}},
    "smoothing": {"summary": "Input smoothing as a defence, quick settings (about a minute)",
                  "value": {"name": "smoothing", "quick": True, "seed": 0}},
}
EXPERIMENT_CREATED = {"id": "ExPeRiMeNt012345", "status": "queued",
                      "links": {"self": "/api/v1/experiments/ExPeRiMeNt012345",
                                "page": "/experiments/ExPeRiMeNt012345"}}
EXPERIMENT = {"id": "ExPeRiMeNt012345", "experiment": "logistic", "title": "The 10-D logistic-regression example",
              "quick": True, "seed": 0, "status": "done", "created": 1795626106.4, "finished": 1795626106.5,
              "results": {"experiment": "logistic", "seed": 0, "quick": True, "seconds": 0.09, "p_x": 0.0474,
                          "p_y": 0.8808, "eps": 0.5, "plots": ["logistic.png"]}}


def json_example(example: object, description: str | None = None) -> dict:
    """An OpenAPI response entry with a JSON example."""
    out: dict = {"content": {"application/json": {"example": example}}}
    if description:
        out["description"] = description
    return out


# -- the classroom -------------------------------------------------------------------------------
CODE = "K7QF"
ROOM_LINKS = {"self": f"/api/v1/rooms/{CODE}", "join": f"/r/{CODE}", "wall": f"/r/{CODE}/wall",
              "quiz": f"/r/{CODE}/quiz", "jobs": f"/api/v1/rooms/{CODE}/jobs", "events": f"/api/v1/rooms/{CODE}/events",
              "close": f"/api/v1/rooms/{CODE}/close", "arena": f"/r/{CODE}/arena"}
ROOM = {"code": CODE, "title": "CS 231, Tuesday", "created": 1795626094.2, "closed": None, "spotlight": None,
        "arena": None, "hidden": [], "links": ROOM_LINKS, "members": 28}
ROOM_SEEN = {**ROOM, "you": {"member": True, "nickname": "Ada", "instructor": False}}
ROOMS = {"rooms": [ROOM]}
ROOM_JOINED = {"code": CODE, "nickname": "Ada", "links": ROOM_LINKS}
ROOM_JOBS = {"room": CODE, "jobs": [{**{k: v for k, v in JOB_VIEW.items() if k != "history"}, "room": CODE,
                                     "nickname": "Ada"}]}
ROOM_EVENTS = (f'retry: 2000\n\nevent: room\ndata: {{"code":"{CODE}","closed":null,"spotlight":null,"hidden":[],'
               f'"members":28,...}}\n\nevent: tile\ndata: {{"id":"{JOB}","status":"running","label":"7",'
               '"confidence":0.9871,"image":"data:image/png;base64,iVBORw0...","nickname":"Ada","step":41,...}\n\n'
               f'event: remove\ndata: {{"id":"{JOB}"}}\n\n'
               'event: arena\ndata: {"model":"lenet-mnist","images":120,"rows":[{"id":"lenet-mnist+msp",'
               '"defence":"msp","clean_accuracy":0.941,"false_positive_rate":0.051,"gallery_rejected":0.34,"attacks":[{"id":"...",'
               '"nickname":"Ada","encoding":"direct","status":"running","best":0.97,"at_99":6,"targets":10,...}]},...]}\n\n')
ROOM_CREATE_REQUESTS = {"titled": {"summary": "A room with a title", "value": {"title": "CS 231, Tuesday"}},
                        "plain": {"summary": "No title", "value": {}}}
JOIN_REQUESTS = {"join": {"summary": "Join with a nickname", "value": {"nickname": "Ada"}}}
SPOTLIGHT_REQUESTS = {"show": {"summary": "Spotlight a job", "value": {"job": JOB}},
                      "end": {"summary": "Back to the wall", "value": {"job": None}}}
HIDE_REQUESTS = {"hide": {"summary": "Hide a job from the wall", "value": {"job": JOB, "hidden": True}},
                 "show": {"summary": "Show it again", "value": {"job": JOB, "hidden": False}}}
SPOTLIGHT = {"spotlight": JOB}
ARENA_REQUESTS = {"pin": {"summary": "Pin LeNet's arena to the wall", "value": {"model": "lenet-mnist"}},
                  "unpin": {"summary": "Take it down", "value": {"model": None}}}
ARENA_PINNED = {"arena": "lenet-mnist"}
HIDDEN = {"hidden": [JOB]}

ITEM = "QuIzItEm01234567"
QUIZ_ITEM = {"id": ITEM, "image": f"/api/v1/quiz/items/{ITEM}.png", "options": ["3", "7", "1", "none of these"],
             "seq": 4, "room": CODE}
ANSWER_REQUESTS = {"label": {"summary": "Name a label", "value": {"item": ITEM, "answer": "7"}},
                   "none": {"summary": "None of these", "value": {"item": ITEM, "answer": "none of these"}}}
QUIZ_REVEAL = {"item": ITEM, "answer": "7", "agreed": True, "network_label": "7", "network_confidence": 0.99993,
               "kind": "fooling", "encoding": "cppn", "ms": 2310}
_BLOCK = {"answers": 40, "agreed": 13, "agreement": 0.325, "none": 19, "chance": 0.25, "median_ms": 2650}
QUIZ_RESULTS = {"overall": _BLOCK, "conditions": {"fooling · cppn · mnist": _BLOCK},
                "images": [{**_BLOCK, "source": f"job:{JOB}:7", "condition": "fooling · cppn · mnist", "label": "7",
                            "confidence": 0.99993, "item": ITEM}]}

LINEAGE_ID = "LiNeAgE01"
LINEAGE = {"id": LINEAGE_ID, "model": "lenet-mnist", "seed": 11, "size": 12, "generation": 1, "generations": 1,
           "parent": None, "steps": [{"picks": [0, 5], "by": "person"}],
           "images": [{"position": 0, "image": f"/api/v1/breed/{LINEAGE_ID}/images/1/0.png", "label": "8",
                       "confidence": 0.998, "picked": False}],
           "owner": True, "links": {"self": f"/api/v1/breed/{LINEAGE_ID}", "page": f"/breed/{LINEAGE_ID}",
                                    "next": f"/api/v1/breed/{LINEAGE_ID}/next"}}
LINEAGE_REQUESTS = {"new": {"summary": "A new lineage", "value": {"model": "lenet-mnist", "size": 12, "seed": 11}},
                    "branch": {"summary": "Branch another lineage at generation 3",
                               "value": {"branch": LINEAGE_ID, "generation": 3}}}
NEXT_REQUESTS = {"person": {"summary": "Breed from the images I picked", "value": {"picks": [0, 5]}},
                 "network": {"summary": "Let the network choose", "value": {"by": "network"}}}

# -- studies ---------------------------------------------------------------------------------------
STUDY = "Qm3v8Hq2Lx0a"
TRIAL = "tR9x2b4KcQ1mZ8pW"
_STUDY_LINKS = {"page": f"/studies/{STUDY}", "next": f"/api/v1/studies/{STUDY}/next",
                "answers": f"/api/v1/studies/{STUDY}/answers", "results": f"/api/v1/studies/{STUDY}/results",
                "trials_csv": f"/api/v1/studies/{STUDY}/trials.csv", "sheet": f"/api/v1/studies/{STUDY}/sheet.json"}
_BLOCKS = [{"block": 0, "task": "forced_choice", "chance": 0.5,
            "instruction": "Which of the two labels fits this image better? Pick one, even if you are unsure."},
           {"block": 1, "task": "options", "chance": 0.25,
            "instruction": "Which label fits this image best? Pick one, or \"none of these\"."}]
STUDY_REQUESTS = {
    "class": {"summary": "Both tasks, LeNet, 10 images a part",
              "value": {"models": ["lenet-mnist"], "tasks": ["forced_choice", "options"], "trials_per_block": 10,
                        "title": "Can you tell?"}},
    "cppn-brief": {"summary": "CPPN images only, shown for one second, the paper's 99.6% floor",
                   "value": {"models": ["lenet-mnist"], "conditions": ["evolution-cppn"], "min_confidence": 0.996,
                             "exposure_ms": 1000, "tasks": ["forced_choice"]}}}
STUDY_CREATED = {"id": STUDY, "links": _STUDY_LINKS, "stimuli": 40, "blocks": _BLOCKS}
STUDY_INFO = {"id": STUDY, "title": "Can you tell?", "created": 1764770000.0, "links": _STUDY_LINKS,
              "blocks": _BLOCKS, "trials_per_block": 10, "exposure_ms": None,
              "consent": "Taking part is voluntary and anonymous: ...", "stimuli": 40}
STUDY_TRIAL = {"trial": TRIAL, "block": 0, "task": "forced_choice", "instruction": _BLOCKS[0]["instruction"],
               "position": 3, "of": 10, "blocks": 2, "image": f"/api/v1/studies/{STUDY}/trials/{TRIAL}.png",
               "options": ["7", "1"], "exposure_ms": None}
STUDY_ANSWER_REQUESTS = {"label": {"summary": "Pick an option", "value": {"trial": TRIAL, "answer": "7"}}}
STUDY_ANSWERED = {"recorded": True, "block": 0, "block_complete": False, "feedback": None}
_AGREE = {"chance": 0.5, "participants": 24, "trials": 240, "agreement": 0.71, "ci95": [0.63, 0.79],
          "above_chance": True, "agreement_among_named": 0.71}
STUDY_RESULTS = {"id": STUDY, "title": "Can you tell?", "blocks": [
    {"block": 0, "task": "forced_choice", **_AGREE,
     "per_participant": [{"participant": "3f9a0c1d2e", "trials": 10, "agreed": 8, "agreement": 0.8,
                          "ci95": [0.4902, 0.9433], "none": 0}],
     "conditions": {"evolution-cppn": _AGREE},
     "images": [{"stimulus": 4, "condition": "evolution-cppn", "model": "lenet-mnist", "label": "7",
                 "confidence": 0.99991, "trials": 6, "agreement": 0.8333}]}]}
STUDY_SHEET = {"id": STUDY, "title": "Can you tell?", "created": "2026-12-03T15:00:00Z",
               "design": {"models": ["lenet-mnist"], "tasks": ["forced_choice", "options"],
                          "conditions": ["gradient", "evolution-direct", "evolution-cppn"], "controls": True,
                          "min_confidence": 0.99, "trials_per_block": 10, "exposure_ms": None, "room": None,
                          "blocks": _BLOCKS},
               "consent": "Taking part is voluntary and anonymous: ...",
               "stimuli": [{"id": 0, "kind": "fooling", "condition": "evolution-cppn", "model": "lenet-mnist",
                            "source": f"job:{JOB}:7", "label": "7", "confidence": 0.99991, "runner_up": "1",
                            "sha256": "9f2c" + "0" * 60}],
               "software": "Fooling Lab 0.1.0", "results": _STUDY_LINKS["results"]}
CONTROLS = {"model": "lenet-mnist", "controls": [
    {"url": "/api/v1/controls/mnist/0.png", "label": "7", "licence": "MNIST (LeCun, Cortes & Burges), CC BY-SA 3.0",
     "source": "MNIST test set, image 0", "confidence": 0.99998}]}
