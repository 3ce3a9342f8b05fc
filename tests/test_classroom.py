"""The classroom over REST: rooms (create, join, jobs carry the room, close), the wall's one
multiplexed stream, "Can you tell?" (items, answers, results, CSV) and breeding by hand."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from app.classroom.breed import Lineages
from app.main import create_app
from app.settings import ROOT
from tests.conftest import make_settings, wait_ready
from tests.helpers import browser, wait

ADMIN = "teacher-token-for-classroom-tests"
QUICK = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": [1, 7], "generations": 30,
         "population": 50, "seed": 1}
LONG = {**QUICK, "generations": 20000, "params": {"stop_at": None}}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("classroom")
    (data / "MNIST").symlink_to(ROOT / "data" / "MNIST")  # real digits for the quiz, read-only
    settings = make_settings(preload="lenet-mnist", data_dir=data, admin_token=ADMIN, workers=3)
    application = create_app(settings)
    with TestClient(application) as c:
        wait_ready(c)
        yield application


def teacher(app) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"})


def new_room(app) -> str:
    r = teacher(app).post("/api/v1/rooms", json={"title": "Tuesday"})
    assert r.status_code == 201, r.text
    return r.json()["code"]


def test_rooms_are_created_by_the_instructor_only_and_jobs_carry_them(app):
    assert browser(app).post("/api/v1/rooms", json={}).status_code == 403
    r = teacher(app).post("/api/v1/rooms", json={"title": "Tuesday"})
    assert r.status_code == 201 and r.headers["location"] == f"/api/v1/rooms/{r.json()['code']}"
    room = r.json()
    code = room["code"]
    assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}", code), code
    assert {"join", "wall", "quiz", "jobs", "events"} <= set(room["links"]) and room["links"]["join"] == f"/r/{code}"

    alice, bob = browser(app), browser(app)
    assert alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Alice"}).status_code == 200
    assert alice.get(f"/api/v1/rooms/{code.lower()}").json()["you"] == {"member": True, "nickname": "Alice",
                                                                       "instructor": False}
    for bad in ("", "x" * 25, "<b>", "a\nb"):
        assert alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": bad}).status_code == 422
    assert alice.post("/api/v1/rooms/ZZZZ9/join", json={"nickname": "A"}).status_code == 404
    assert alice.get("/api/v1/rooms/no!").status_code in (404, 422) and alice.get("/api/v1/rooms/AB").status_code == 422
    assert alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": "A", "admin": True}).status_code == 422
    assert alice.get("/api/v1/rooms").status_code == 403  # the list is the instructor's
    assert alice.post(f"/api/v1/rooms/{code}/hide", json={"job": "x" * 12}).status_code == 403

    a_job = alice.post("/api/v1/jobs", json=QUICK).json()["id"]
    b_job = bob.post("/api/v1/jobs", json=QUICK).json()["id"]  # not a member: no room
    assert alice.get(f"/api/v1/jobs/{a_job}").json()["room"] == code
    assert bob.get(f"/api/v1/jobs/{b_job}").json()["room"] is None
    # the room cookie is bound to its browser: copied into another, it means nothing
    stolen = TestClient(app, cookies={"fl_room": alice.cookies.get("fl_room")})
    stolen.get("/")
    c_job = stolen.post("/api/v1/jobs", json=QUICK).json()["id"]
    assert stolen.get(f"/api/v1/jobs/{c_job}").json()["room"] is None
    assert browser(app).get(f"/api/v1/rooms/{code}/jobs").status_code == 403  # nicknames are for members
    for member in (alice, teacher(app)):
        listed = member.get(f"/api/v1/rooms/{code}/jobs").json()["jobs"]
        assert [(j["id"], j["nickname"]) for j in listed] == [(a_job, "Alice")]

    # closing: Alice's running job runs on to its end; no new jobs or members
    long_job = alice.post("/api/v1/jobs", json={**QUICK, "generations": 400}).json()["id"]
    assert alice.post(f"/api/v1/rooms/{code}/close").status_code == 403
    assert teacher(app).post(f"/api/v1/rooms/{code}/close").json()["closed"]
    r = alice.post("/api/v1/jobs", json=QUICK)
    assert r.status_code == 409 and r.json()["field"] == "room", r.text
    assert browser(app).post(f"/api/v1/rooms/{code}/join", json={"nickname": "Late"}).status_code == 409
    assert wait(alice, long_job, ("done",))["progress"]["step"] > 0
    assert alice.post(f"/r/{code}/leave", follow_redirects=False).status_code == 303
    assert alice.post("/api/v1/jobs", json=QUICK).status_code == 201  # on her own again


def test_the_wall_stream_multiplexes_the_rooms_jobs_at_most_twice_a_second(app):
    code = new_room(app)
    students = [browser(app) for _ in range(3)]
    jobs = []
    for i, s in enumerate(students):
        assert s.post(f"/api/v1/rooms/{code}/join", json={"nickname": f"S{i}"}).status_code == 200
        jobs.append(s.post("/api/v1/jobs", json={**LONG, "seed": i}).json()["id"])
    outsider = browser(app).post("/api/v1/jobs", json=LONG).json()["id"]
    tiles: dict[str, list[dict]] = {}
    events = []
    t0 = time.monotonic()
    assert browser(app).get(f"/api/v1/rooms/{code}/events").status_code == 403  # not a member
    with students[0].stream("GET", f"/api/v1/rooms/{code}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                events.append(event)
            elif line.startswith("data: ") and event == "tile":
                t = json.loads(line[6:])
                tiles.setdefault(t["id"], []).append({**t, "at": time.monotonic()})
            if time.monotonic() - t0 > 4:
                break
    took = time.monotonic() - t0
    assert events[0] == "room"
    assert set(tiles) == set(jobs), "every job of the room, no other"
    for job_id, frames in tiles.items():
        assert len(frames) <= 2 * took + 1, (job_id, len(frames))
        gaps = [b["at"] - a["at"] for a, b in zip(frames, frames[1:], strict=False)]
        assert all(g > 0.4 for g in gaps), gaps
        assert len({f["image"] for f in frames}) >= 2, "the tile's image changes as the job runs"
        last = frames[-1]
        assert last["image"].startswith("data:image/png;base64,") and last["nickname"] in {"S0", "S1", "S2"}
        assert "client" not in last and 0 <= last["confidence"] <= 1 and last["label"] in {"1", "7"}
    gate = teacher(app)
    assert browser(app).post(f"/api/v1/rooms/{code}/spotlight", json={"job": jobs[0]}).status_code == 403
    assert gate.post(f"/api/v1/rooms/{code}/spotlight", json={"job": outsider}).status_code == 404
    assert gate.post(f"/api/v1/rooms/{code}/spotlight", json={"job": jobs[0]}).json() == {"spotlight": jobs[0]}
    assert gate.post(f"/api/v1/rooms/{code}/hide", json={"job": jobs[1]}).json() == {"hidden": [jobs[1]]}
    assert gate.post(f"/api/v1/rooms/{code}/hide", json={"job": jobs[2], "hidden": "yes"}).status_code == 422
    room = students[0].get(f"/api/v1/rooms/{code}").json()
    assert room["spotlight"] == jobs[0] and room["hidden"] == []  # which jobs are hidden: the instructor's to know
    assert gate.get(f"/api/v1/rooms/{code}").json()["hidden"] == [jobs[1]]
    assert jobs[1] not in [j["id"] for j in students[0].get(f"/api/v1/rooms/{code}/jobs").json()["jobs"]]
    assert jobs[1] in [j["id"] for j in gate.get(f"/api/v1/rooms/{code}/jobs").json()["jobs"]]
    for j in jobs + [outsider]:
        gate.post(f"/api/v1/jobs/{j}/cancel")


def test_quiz_items_answers_results_and_csv(app):
    owner = browser(app)
    done = wait(owner, owner.post("/api/v1/jobs", json={**QUICK, "encoding": "cppn"}).json()["id"], ("done",))
    assert min(t["confidence"] for t in done["targets"]) >= 0.5, "fooling images the quiz may show"
    alice, bob = browser(app), browser(app)
    kinds, reveals = set(), []
    while len(reveals) < 12 or len(kinds) < 2:  # both kinds come up (about 40% are real), seen to the end
        assert len(reveals) < 40, kinds
        item = alice.get("/api/v1/quiz/next").json()
        assert item["options"][-1] == "none of these" and len(item["options"]) == 4
        assert len(set(item["options"])) == 4 and "label" not in item and "confidence" not in item
        png = alice.get(item["image"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert bob.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": item["options"][0]}
                        ).status_code == 403
        assert alice.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": "a cat"}).status_code == 422
        r = alice.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": item["options"][0]})
        assert r.status_code == 201, r.text
        reveal = r.json()
        assert reveal["network_label"] in item["options"] and reveal["agreed"] == (item["options"][0] ==
                                                                                  reveal["network_label"])
        kinds.add(reveal["kind"])
        reveals.append(reveal)
        assert alice.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": "none of these"}
                          ).status_code == 409
    assert kinds == {"fooling", "real"}, kinds
    n = len(reveals)
    res = alice.get("/api/v1/quiz/results").json()
    assert res["overall"]["answers"] == n and res["overall"]["agreed"] == sum(r["agreed"] for r in reveals)
    assert res["overall"]["chance"] == pytest.approx(0.25)
    assert sum(c["answers"] for c in res["conditions"].values()) == n
    assert "real · mnist" in res["conditions"]
    assert {k for k in res["conditions"] if k.startswith("fooling")} <= {"fooling · cppn · mnist",
                                                                         "fooling · direct · mnist"}
    assert any(k.startswith("fooling") for k in res["conditions"])
    got = alice.get("/api/v1/quiz/results.csv")
    assert got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert len(rows) == n and {r["agreed"] for r in rows} <= {"0", "1"}
    assert alice.cookies.get("fl_client").split(".")[0] not in got.text  # pseudonyms, never client ids
    assert len(rows[0]["options"].split("|")) == 4 and float(rows[0]["network_confidence"]) > 0


def test_lineage_steps_are_append_only(tmp_path):
    from app.classroom.store import ClassroomStore

    store = ClassroomStore(tmp_path)
    store.create_lineage("lin123456", "c", "lenet-mnist", 1, 12)
    assert store.set_steps("lin123456", [{"picks": [0], "by": "person"}])
    # a second request that read the lineage before the first wrote loses, rather than rewriting history
    assert not store.set_steps("lin123456", [{"picks": [5], "by": "person"}])
    assert store.lineage("lin123456")["steps"] == [{"picks": [0], "by": "person"}]
    store.close()


def test_breeding_keeps_picks_replays_exactly_and_branches(app):
    alice, bob = browser(app), browser(app)
    r = alice.post("/api/v1/breed", json={"model": "lenet-mnist", "size": 12, "seed": 5})
    assert r.status_code == 201, r.text
    lin = r.json()
    assert len(lin["images"]) == 12 and lin["generation"] == 0
    gen0 = [alice.get(c["image"]).content for c in lin["images"]]
    assert len(set(gen0)) > 6, "generation 0 is varied"
    one = alice.post(f"/api/v1/breed/{lin['id']}/next", json={"picks": [3, 0]}).json()
    gen1 = [alice.get(c["image"]).content for c in one["images"]]
    assert one["generation"] == 1 and gen1[:2] == [gen0[0], gen0[3]], "the picked images stay"
    assert len(set(gen1[2:]) - set(gen0)) >= 5, "the rest are new children"
    net = alice.post(f"/api/v1/breed/{lin['id']}/next", json={"by": "network"}).json()
    conf = [c["confidence"] for c in one["images"]]
    assert net["steps"][-1]["by"] == "network"
    assert sorted(net["steps"][-1]["picks"]) == sorted(sorted(range(12), key=lambda i: -conf[i])[:3])
    for bad in ({"picks": [12]}, {"picks": []}, {"picks": None}, {"by": "cat"}, {"picks": [True]}, {"picks": ["1"]}):
        assert alice.post(f"/api/v1/breed/{lin['id']}/next", json=bad).status_code == 422, bad
    assert bob.post(f"/api/v1/breed/{lin['id']}/next", json={"picks": [1]}).status_code == 403
    # JSON integers only: true is not 1 and "5" is not 5 (schemathesis found `generation: true` taken)
    for bad in ({"size": 10}, {"seed": "5"}, {"seed": True}, {"branch": lin["id"], "generation": True}):
        r = alice.post("/api/v1/breed", json=bad)
        assert r.status_code == 422 and r.json()["field"] in ("size", "seed", "generation"), (bad, r.text)

    # the link reproduces it: replayed from the seed and the choices, not from memory
    latest = [alice.get(c["image"]).content for c in net["images"]]
    app.state.lineages = Lineages()
    again = bob.get(f"/api/v1/breed/{lin['id']}").json()
    assert [bob.get(c["image"]).content for c in again["images"]] == latest
    assert [bob.get(c["image"]).content for c in bob.get(f"/api/v1/breed/{lin['id']}?generation=1").json()["images"]
            ] == gen1
    branch = bob.post("/api/v1/breed", json={"branch": lin["id"], "generation": 1}).json()
    assert branch["parent"] == lin["id"] and branch["generation"] == 1
    assert [bob.get(c["image"]).content for c in branch["images"]] == gen1
    assert bob.post(f"/api/v1/breed/{branch['id']}/next", json={"picks": [2]}).status_code == 200
    assert alice.get(f"/api/v1/breed/{lin['id']}").json()["generations"] == 2  # the original is untouched


def test_the_breeding_pages_forms_start_and_branch_lineages(app):
    """The page's forms send text ("7"), which the page turns into the numbers the API takes."""
    carol = browser(app)
    r = carol.post("/breed", data={"model": "lenet-mnist", "size": "9", "seed": "7"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    lin = carol.get("/api/v1" + r.headers["location"]).json()
    assert lin["seed"] == 7 and lin["size"] == 9
    assert carol.post(f"/breed/{lin['id']}/next", data={"pick": ["0", "4"]}).status_code == 200
    for bad in ("x", "²", "-1"):
        r = carol.post(f"/breed/{lin['id']}/next", data={"pick": ["0", bad]})
        assert r.status_code == 422 and r.json()["field"] == "pick", (bad, r.text)
    r = carol.post("/breed", data={"branch": lin["id"], "generation": "1"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    branch = carol.get("/api/v1" + r.headers["location"]).json()
    assert branch["parent"] == lin["id"] and branch["generation"] == 1
    assert carol.post("/breed", data={"seed": ""}, follow_redirects=False).status_code == 303  # empty: random
    for bad in ("seven", "²", "-1", "9" * 5000):  # "²" is a digit to str.isdigit, not to int(); nor are 5000 digits
        r = carol.post("/breed", data={"seed": bad})
        assert r.status_code == 422 and r.json()["field"] == "seed", (bad, r.text)


def test_a_bred_image_goes_to_score_or_starts_a_run(app):
    alice = browser(app)
    lin = alice.post("/api/v1/breed", json={"seed": 9}).json()
    png = alice.get(lin["images"][4]["image"]).content
    r = alice.post(f"/breed/{lin['id']}/use/0/4?to=score", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/score?upload=")
    page = alice.get(r.headers["location"])
    top = re.search(r'<span class="label">([^<]+)</span>\s*<meter min="0" max="1" value="([0-9.e-]+)"', page.text)
    assert page.status_code == 200 and top, page.text[:500]
    assert top.group(1) == lin["images"][4]["label"]  # scored as the breeding page said
    assert float(top.group(2)) == pytest.approx(lin["images"][4]["confidence"], abs=1e-5)
    r = alice.post(f"/breed/{lin['id']}/use/0/4?to=job", follow_redirects=False)
    upload = re.search(r"upload=([A-Za-z0-9_-]+)", r.headers["location"]).group(1)
    assert "data-upload" in alice.get(r.headers["location"]).text  # the Lab form carries it
    job = alice.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "gradient", "targets": [3],
                                           "steps": 5, "upload": upload, "params": {"start": "image"}}).json()
    assert alice.get(f"/api/v1/jobs/{job['id']}/input.png").content == png  # the bred pixels, exactly
    assert browser(app).post(f"/breed/{lin['id']}/use/0/99?to=score").status_code == 422


def test_imagenet_controls_are_shipped_photos_the_network_gets_right(tmp_path):
    """For ImageNet models the real images are the photos the project ships (static/samples/photos.json),
    shown only when the network gets them right."""
    import asyncio

    import torch

    from app.classroom import quiz
    from app.jobs.store import JobStore

    pool = quiz.QuizPool(JobStore(tmp_path), tmp_path, ROOT / "static" / "samples")
    photos = pool.photos()
    assert photos and all((ROOT / "static" / "samples" / p["file"]).is_file() for p in photos)
    names = [f"class {i}" for i in range(1000)]
    names[652] = photos[0]["label"]

    def scorer(right: bool):
        async def score(model, x):
            assert x.shape == (1, 3, 224, 224)
            p = torch.full((1, 1000), 1e-4)
            p[0, 652 if right else 3] = 0.9
            return p
        return score

    item = asyncio.run(quiz.make_item(pool, scorer(True), {"net": names}, "c", None, 1, set()))
    assert item["kind"] == "real" and item["dataset"] == "imagenet"
    assert item["source"] == f"photo:{photos[0]['key']}" == "photo:samples/grace-hopper.jpg"
    assert item["label"] == photos[0]["label"] and pool.png(item["source"])[:4] == b"\x89PNG"
    assert asyncio.run(quiz.make_item(pool, scorer(False), {"net": names}, "c", None, 1, set())) is None
