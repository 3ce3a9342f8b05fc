"""A course server that a script cannot fill or read: cookie-less clients share one bucket per
network, server-wide budgets, body limits per route, instructor sessions that end, rooms for their
members, and one reader per room for all of its walls."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.budgets import DiskBudget
from app.main import create_app
from app.settings import ROOT
from app.web.identity import address_bucket, key_warnings
from tests.conftest import make_settings, wait_ready
from tests.helpers import browser, wait

ADMIN = "teacher-token-for-course-tests"
LONG = {"model": "lenet-mnist", "method": "map-elites", "targets": [5], "generations": 20000, "population": 50,
        "params": {"stop_at": None}}
QUICK = {**LONG, "targets": [1, 7], "generations": 20, "params": {}}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("course")
    (data / "MNIST").symlink_to(ROOT / "data" / "MNIST")  # real digits for the quiz, read-only
    settings = make_settings(preload="lenet-mnist", data_dir=data, admin_token=ADMIN, workers=2,
                             max_rooms_per_client=2, max_lineages=3)
    application = create_app(settings)
    with TestClient(application) as c:
        wait_ready(c)
        yield application


def bare(c: TestClient, method: str, url: str, **kw):
    """A request as a script that keeps no cookies sends it: without fl_client."""
    c.cookies.clear()
    return c.request(method, url, **kw)


def teacher(app) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"})


def new_room(app) -> str:
    return teacher(app).post("/api/v1/rooms", json={"title": "t"}).json()["code"]


# -- identity without cookies -------------------------------------------------------------------

def test_the_anonymous_bucket_is_one_per_ipv4_address_and_ipv6_64():
    assert address_bucket("203.0.113.7") == "203.0.113.7"
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_bucket("testclient") == "testclient"


def test_cookieless_uploads_share_one_quota_that_a_cookie_keeping_browser_does_not(tmp_path, grace_hopper):
    photo = grace_hopper.read_bytes()  # kept as a PNG over the 50 kB quota
    with TestClient(create_app(make_settings(preload="lenet-mnist", data_dir=tmp_path, disk_quota_bytes=50_000))
                    ) as first:
        wait_ready(first)
        assert bare(first, "POST", "/api/v1/uploads", files={"file": ("g.jpg", photo, "image/jpeg")}
                    ).status_code == 201
        # Every cookie-less request from this network is the same bucket, however many clients send them.
        for c in (first, TestClient(first.app)):
            r = bare(c, "POST", "/api/v1/uploads", files={"file": ("g.jpg", photo, "image/jpeg")})
            assert r.status_code == 413 and "quota" in r.json()["detail"]
        assert browser(first.app).post("/api/v1/uploads", files={"file": ("g.jpg", photo, "image/jpeg")}
                                       ).status_code == 201


def test_cookieless_jobs_count_as_one_client_and_own_nothing(app):
    s = app.state.lab.settings
    a, b = TestClient(app), TestClient(app)
    made = []
    for i in range(s.max_jobs_per_client):
        r = bare(a if i % 2 else b, "POST", "/api/v1/jobs", json={**LONG, "seed": i})
        assert r.status_code == 201, r.text
        made.append(r.json())
    over = bare(a, "POST", "/api/v1/jobs", json=LONG)
    assert over.status_code == 429 and "jobs-per-client" in over.headers["RateLimit-Policy"]
    assert browser(app).post("/api/v1/jobs", json=QUICK).status_code == 201  # a browser behind the NAT: unaffected
    # Another cookie-less script on the same network is in the same bucket but owns none of them.
    job = made[0]
    assert bare(b, "POST", f"/api/v1/jobs/{job['id']}/cancel").status_code == 403
    assert bare(b, "DELETE", f"/api/v1/jobs/{job['id']}").status_code == 403
    for j in made:  # its control token is what proves a job is yours without a cookie
        assert bare(a, "POST", f"/api/v1/jobs/{j['id']}/cancel",
                    headers={"Authorization": f"Bearer {j['control_token']}"}).status_code == 200
    for j in made:
        wait(teacher(app), j["id"], ("cancelled",))


def test_cookieless_idempotency_keys_must_be_secrets(app):
    c = TestClient(app)
    short = bare(c, "POST", "/api/v1/jobs", json=QUICK, headers={"Idempotency-Key": "retry-1"})
    assert short.status_code == 422 and short.json()["field"] == "Idempotency-Key"
    assert "UUID" in short.json()["detail"]
    key = str(uuid.uuid4())
    one = bare(c, "POST", "/api/v1/jobs", json=QUICK, headers={"Idempotency-Key": key})
    again = bare(c, "POST", "/api/v1/jobs", json=QUICK, headers={"Idempotency-Key": key})
    assert one.status_code == again.status_code == 201 and one.json()["id"] == again.json()["id"]
    other = bare(c, "POST", "/api/v1/jobs", json=QUICK, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert other.json()["id"] != one.json()["id"]  # another script's key: its own job and token
    b = browser(app)  # a browser's keys are scoped to its cookie: short ones are fine
    assert b.post("/api/v1/jobs", json=QUICK, headers={"Idempotency-Key": "retry-1"}).status_code == 201


# -- body limits --------------------------------------------------------------------------------

def test_json_bodies_over_the_small_limit_are_413_before_parsing(app, grace_hopper):
    big = b"[" + b"0," * 600_000 + b"0]"  # 1.2 MB
    for path in ("/api/v1/quiz/answers", "/api/v1/rooms", "/api/v1/breed", "/api/v1/experiments"):
        r = browser(app).post(path, content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "this route's limit" in r.json()["detail"], (path, r.text)

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 100_000

    r = browser(app).post("/api/v1/quiz/answers", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # Megabytes of numbers take the event loop long to parse: a job's JSON apart from its image is small.
    r = browser(app).post("/api/v1/jobs", content=json.dumps({**QUICK, "targets": [1] * 1_000_000}),
                          headers={"content-type": "application/json"})
    assert r.status_code == 413 and "apart from its image" in r.json()["detail"]
    # The job route takes an image as a data URL, so its limit is that of an upload.
    photo = base64.b64encode(grace_hopper.read_bytes()).decode()
    r = browser(app).post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "fgsm", "targets": [3],
                                                "image": f"data:image/jpeg;base64,{photo}"})
    assert r.status_code == 201, r.text


# -- budgets ------------------------------------------------------------------------------------

def test_a_full_disk_budget_is_507_naming_it_and_reported_to_the_instructor(app, grace_hopper):
    disk = app.state.budgets["disk"]
    assert disk.limit > disk.used(fresh=True)  # the default: what is kept plus half of what was free
    saved = disk.limit
    disk.limit = disk.used(fresh=True) + 10_000
    try:
        r = browser(app).post("/api/v1/uploads", files={"file": ("g.jpg", grace_hopper.read_bytes(), "image/jpeg")})
        assert r.status_code == 507 and r.json()["budget"] == "disk"
        assert "FOOLING_DISK_BUDGET_MB" in r.json()["detail"] and "retention" in r.json()["detail"]
        r = browser(app).post("/api/v1/jobs", json=QUICK)
        assert r.status_code == 507 and "disk budget" in r.json()["detail"]
    finally:
        disk.limit = saved
    assert browser(app).get("/api/v1/budgets").status_code == 403
    report = teacher(app).get("/api/v1/budgets").json()
    assert set(report["budgets"]) == {"disk", "lineages", "quiz_items", "members", "experiments", "studies",
                                      "study_trials"}
    assert report["budgets"]["disk"]["limit"] == saved and report["budgets"]["lineages"]["limit"] == 3
    assert 'data-budget="disk"' in TestClient(app, cookies=_signed_in(app)).get("/instructor").text


def test_disk_budget_default_leaves_half_the_free_space(tmp_path):
    budget = DiskBudget.at_start(0, tmp_path, [lambda: 1234])
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert 1234 + free // 2 - 2**20 <= budget.limit <= 1234 + free // 2 + 2**20
    assert DiskBudget.at_start(5 * 2**20, tmp_path, [lambda: 0]).limit == 5 * 2**20


def test_a_full_row_budget_is_507_naming_it(app):
    store = app.state.classroom
    have = store.count("lineages")
    made = [browser(app).post("/api/v1/breed", json={"seed": i}) for i in range(3 - have)]
    assert all(r.status_code == 201 for r in made)
    r = browser(app).post("/api/v1/breed", json={"seed": 9})
    assert r.status_code == 507 and r.json()["budget"] == "lineages" and "FOOLING_MAX_LINEAGES" in r.json()["detail"]


def test_retention_sweeps_lineages_quiz_rows_closed_rooms_and_experiments(tmp_path):
    data = tmp_path
    (data / "MNIST").symlink_to(ROOT / "data" / "MNIST")
    settings = make_settings(preload="lenet-mnist", data_dir=data, admin_token=ADMIN, retention_days=30)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        a = browser(c.app)
        lin = a.post("/api/v1/breed", json={"seed": 1}).json()["id"]
        item = a.get("/api/v1/quiz/next").json()
        assert a.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": item["options"][0]}
                      ).status_code == 201
        closed, kept = new_room(c.app), new_room(c.app)
        for code in (closed, kept):
            assert a.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Ada"}).status_code == 200
        teacher(c.app).post(f"/api/v1/rooms/{closed}/close")
        old = data / "experiments" / "oldexperiment1"
        old.mkdir(parents=True)
        (old / "status.json").write_text(json.dumps({"id": old.name, "status": "done", "created": time.time(),
                                                     "finished": time.time()}))
        retention = c.app.state.retention
        assert not any(retention.sweep().values())  # nothing is old yet
        swept = retention.sweep(now=time.time() + 31 * 86_400)
        assert swept["classroom"] == {"lineages": 1, "quiz_answers": 1, "quiz_items": 1, "members": 1, "rooms": 1}
        assert swept["experiments"] == 1 and not old.exists()
        assert a.get(f"/api/v1/breed/{lin}").status_code == 404
        assert a.get(f"/api/v1/rooms/{closed}").status_code == 404
        assert a.get(f"/api/v1/rooms/{kept}").json()["you"]["member"]  # an open room keeps its members all term


# -- instructor sessions ------------------------------------------------------------------------

def _signed_in(app) -> dict:
    c = TestClient(app)
    r = c.post("/instructor", data={"token": ADMIN}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return {"fl_instructor": c.cookies.get("fl_instructor")}


def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(app):
    cookie = _signed_in(app)
    tab, copy = TestClient(app, cookies=cookie), TestClient(app, cookies=cookie)
    assert copy.get("/api/v1/rooms").status_code == 200
    tab.post("/instructor/sign-out")
    assert copy.get("/api/v1/rooms").status_code == 403


def test_expiry_and_a_new_admin_token_end_sessions(tmp_path):
    settings = make_settings(preload="lenet-mnist", data_dir=tmp_path, admin_token=ADMIN, instructor_session_s=1.5,
                             secret_key="a-fixed-key-for-this-test")
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        cookie = _signed_in(c.app)
        assert TestClient(c.app, cookies=cookie).get("/api/v1/rooms").status_code == 200
        time.sleep(1.6)
        assert TestClient(c.app, cookies=cookie).get("/api/v1/rooms").status_code == 403
        cookie = _signed_in(c.app)
    changed = settings.__class__(**{**settings.__dict__, "admin_token": "a-new-token", "instructor_session_s": 3600})
    with TestClient(create_app(changed)) as c:  # a restart with another token: same data, same key
        wait_ready(c)
        assert TestClient(c.app, cookies=cookie).get("/api/v1/rooms").status_code == 403


def test_wrong_tokens_are_throttled(tmp_path):
    settings = make_settings(preload="lenet-mnist", data_dir=tmp_path, admin_token=ADMIN)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        for _ in range(5):
            assert c.post("/instructor", data={"token": "guess"}).status_code == 403
        r = c.post("/instructor", data={"token": ADMIN}, follow_redirects=False)  # even the right one, for now
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


# -- rooms --------------------------------------------------------------------------------------

def test_rooms_are_for_their_members(app):
    code = new_room(app)
    alice, bob, stranger = browser(app), browser(app), browser(app)
    assert alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Alice"}).status_code == 200
    taken = bob.post(f"/api/v1/rooms/{code}/join", json={"nickname": "alice"})
    assert taken.status_code == 409 and taken.json()["field"] == "nickname"
    assert alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": "ALICE"}).status_code == 200  # her own name
    assert bare(TestClient(app), "POST", f"/api/v1/rooms/{code}/join", json={"nickname": "Eve"}).status_code == 403
    for path in (f"/api/v1/rooms/{code}/jobs", f"/api/v1/rooms/{code}/events", f"/api/v1/quiz/next?room={code}",
                 f"/api/v1/quiz/results?room={code}"):
        assert stranger.get(path).status_code == 403, path
    assert "data-members-only" in stranger.get(f"/r/{code}/wall").text
    item = alice.get(f"/api/v1/quiz/next?room={code}").json()
    assert stranger.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": item["options"][0]}
                         ).status_code == 403
    teacher(app).post(f"/api/v1/rooms/{code}/close")
    r = alice.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": item["options"][0]})
    assert r.status_code == 409 and "closed" in r.json()["detail"]


def test_joins_are_capped_per_client(app):
    rooms = [new_room(app) for _ in range(3)]
    c = browser(app)
    for code in rooms[:2]:
        assert c.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Kim"}).status_code == 200
    r = c.post(f"/api/v1/rooms/{rooms[2]}/join", json={"nickname": "Kim"})
    assert r.status_code == 429 and "rooms-per-client" in r.headers["RateLimit-Policy"]


def test_a_hidden_job_is_gone_from_every_public_listing(app):
    code = new_room(app)
    alice = browser(app)
    alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Al"})
    job = alice.post("/api/v1/jobs", json={**QUICK, "encoding": "cppn", "title": "rude words"}).json()["id"]
    wait(alice, job, ("done",))
    gate = teacher(app)
    assert gate.post(f"/api/v1/rooms/{code}/hide", json={"job": job}).status_code == 200
    stranger = browser(app)
    listed = stranger.get("/api/v1/jobs?limit=200").json()["jobs"]
    assert job not in [j["id"] for j in listed] and all(j["room"] is None for j in listed)
    assert job in [j["id"] for j in gate.get("/api/v1/jobs?limit=200").json()["jobs"]]
    assert "rude words" not in stranger.get("/gallery").text
    assert job not in [j["id"] for j in alice.get(f"/api/v1/rooms/{code}/jobs").json()["jobs"]]
    pool = app.state.quiz.fooling({"lenet-mnist"}, code)
    assert not any(c.source.startswith(f"job:{job}:") for c in pool)
    assert alice.get(f"/api/v1/jobs/{job}").status_code == 200  # its owner still reaches it by id


class RoomReads:
    """The classroom store, counting its reads of a room (and failing the ``fail_at``-th one)."""

    def __init__(self, store, fail_at: int = 0) -> None:
        self.store, self.fail_at, self.reads = store, fail_at, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def room(self, code):
        self.reads += 1
        if self.reads == self.fail_at:
            raise OSError("database hiccup")
        return self.store.room(code)


def test_one_reader_serves_every_wall_of_a_room(app):
    """Twenty walls on one room cost the reads of one: the room is read as often as with one wall."""
    from app.classroom.feed import RoomFeeds

    code = new_room(app)
    students = [browser(app) for _ in range(3)]
    for i, s in enumerate(students):
        s.post(f"/api/v1/rooms/{code}/join", json={"nickname": f"S{i}"})
        wait(s, s.post("/api/v1/jobs", json={**QUICK, "seed": i}).json()["id"], ("done",))
    async def watch(walls: int, seconds: float) -> tuple[int, list[int]]:
        counted = RoomReads(app.state.classroom)
        feeds = RoomFeeds(counted, app.state.runner, app.state.tiles)
        got = [0] * walls

        async def wall(i: int) -> None:
            async with feeds.watch(code) as feed:
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds:
                    await feed.wait(feed.version, 0.2)
                    got[i] = len(feed.texts)
        await asyncio.gather(*(wall(i) for i in range(walls)))
        assert len(feeds) == 0  # the last wall to leave stops the reader
        return counted.reads, got

    one, got = asyncio.run(watch(1, 1.5))
    many, got = asyncio.run(watch(20, 1.5))
    assert got == [3] * 20  # every wall sees every tile
    assert many <= one + 2, (one, many)


# -- deployment ---------------------------------------------------------------------------------

def test_the_image_runs_unprivileged_with_its_data_on_a_volume():
    docker = (ROOT / "Dockerfile").read_text()
    assert "\nUSER " in docker and 'VOLUME ["/srv/fooling-lab/data"]' in docker
    readme, deploy = (ROOT / "README.md").read_text(), (ROOT / "docs" / "deploy.md").read_text()
    command = deploy[deploy.index("\ndocker run"):].split("\n\n")[0].split("```")[0]  # with its continuations
    run = command.replace("\\\n", " ")
    assert "docs/deploy.md" in readme
    assert ":/srv/fooling-lab/data" in run and "FOOLING_SECRET_KEY" in run
    assert "mountPath: /srv/fooling-lab/data" in deploy and "/app/data" not in deploy
    assert "X-Forwarded-For" in deploy and "X-Forwarded-Proto" in deploy and "FORWARDED_ALLOW_IPS" in deploy


def test_the_key_warnings(tmp_path):
    assert any("void" in w for w in key_warnings("", tmp_path, made_now=True))
    assert any("will not survive" in w for w in key_warnings("", Path("/tmp/x"), made_now=False))
    assert key_warnings("set", ROOT / "data", made_now=False) == []


def test_a_local_ray_instance_needs_a_token_made_at_start():
    from app.jobs.ray.cluster import local_instance_env

    env: dict = {}
    local_instance_env(env)
    other: dict = {}
    local_instance_env(other)
    assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64
    assert other["RAY_AUTH_TOKEN"] != env["RAY_AUTH_TOKEN"]  # a new one at each start
    kept = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "the-operators"}
    local_instance_env(kept)
    assert kept["RAY_AUTH_TOKEN"] == "the-operators"


# -- what a fresh cookie does not reset -----------------------------------------------------------

def test_a_fresh_cookie_gets_a_fresh_client_quota_but_not_a_fresh_network(tmp_path, grace_hopper):
    photo = grace_hopper.read_bytes()  # kept as a PNG of about 400 kB
    settings = make_settings(preload="lenet-mnist", data_dir=tmp_path, disk_quota_bytes=50_000,
                             disk_quota_per_address_bytes=120_000, max_lineages_per_address=2)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        assert browser(c.app).post("/api/v1/uploads", files={"file": ("g.jpg", photo, "image/jpeg")}
                                   ).status_code == 201
        r = browser(c.app).post("/api/v1/uploads", files={"file": ("g.jpg", photo, "image/jpeg")})
        assert r.status_code == 413 and "network" in r.json()["detail"]
        assert browser(c.app).post("/api/v1/jobs", json=QUICK).status_code == 413
        for _ in range(2):
            assert browser(c.app).post("/api/v1/breed", json={"seed": 1}).status_code == 201
        r = browser(c.app).post("/api/v1/breed", json={"seed": 1})
        assert r.status_code == 429 and "FOOLING_MAX_LINEAGES_PER_ADDRESS" in r.json()["detail"]


def test_room_codes_answers_and_quiz_pages_stay_with_the_room(app):
    code = new_room(app)
    alice, stranger = browser(app), browser(app)
    alice.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Al2"})
    job = alice.post("/api/v1/jobs", json=QUICK).json()["id"]
    assert alice.get(f"/api/v1/jobs/{job}").json()["room"] == code
    assert stranger.get(f"/api/v1/jobs/{job}").json()["room"] is None  # a code is all it takes to find a room
    item = alice.get(f"/api/v1/quiz/next?room={code}").json()
    assert alice.post("/api/v1/quiz/answers", json={"item": item["id"], "answer": item["options"][0]}
                      ).status_code == 201
    public = stranger.get("/api/v1/quiz/results").json()["overall"]["answers"]
    assert teacher(app).get("/api/v1/quiz/results").json()["overall"]["answers"] == public + 1
    assert stranger.get("/api/v1/quiz/results.csv").text.count(code) == 0
    # a non-member answering an image of its own on the room's page gets no image of the room
    own = stranger.get("/api/v1/quiz/next").json()
    r = stranger.post(f"/r/{code}/quiz/answer", data={"item": own["id"], "answer": own["options"][0]})
    assert r.status_code == 403
    # the owner's own "hide" (the instructor's, from the job's page) leaves the wall and the room's list too
    teacher(app).post(f"/api/v1/jobs/{job}/hide")
    assert job not in [j["id"] for j in alice.get(f"/api/v1/rooms/{code}/jobs").json()["jobs"]]


def test_nicknames_that_only_look_alike_are_taken_and_leaving_frees_them(app):
    code = new_room(app)
    ada, mimic = browser(app), browser(app)
    assert ada.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Ada"}).status_code == 200
    assert mimic.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Ada\u200b"}).status_code == 422
    wide = "\uff21\uff24\uff21"  # "ADA" in full-width letters
    assert mimic.post(f"/api/v1/rooms/{code}/join", json={"nickname": wide}).status_code == 409
    ada.post(f"/r/{code}/leave")
    assert mimic.post(f"/api/v1/rooms/{code}/join", json={"nickname": "Ada"}).status_code == 200


def test_a_walls_reader_survives_an_error(app):
    from app.classroom.feed import RoomFeeds

    code = new_room(app)
    store = app.state.classroom
    flaky = RoomReads(store, fail_at=2)

    async def watch() -> int:
        feeds = RoomFeeds(flaky, app.state.runner, app.state.tiles)
        async with feeds.watch(code) as feed:
            await feed.wait(0, 2.0)
            store.set_spotlight(code, None)  # a change after the failed read: the reader goes on
            seen = feed.version
            await feed.wait(seen, 3.0)
            return feed.version - seen

    assert asyncio.run(watch()) >= 1 and flaky.reads >= 3


def test_guessing_room_codes_is_slowed_down(tmp_path):
    with TestClient(create_app(make_settings(preload="lenet-mnist", data_dir=tmp_path, admin_token=ADMIN))) as c:
        wait_ready(c)
        code = new_room(c.app)
        guesser = browser(c.app)
        misses = c.app.state.gatekeeper.room_misses.tries
        guesses = [f"ZZ{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(misses)]
        assert all(guesser.get(f"/api/v1/rooms/{g}").status_code == 404 for g in guesses)
        r = guesser.get("/api/v1/rooms/ZZZZ")
        assert r.status_code == 429 and "room-lookups" in r.headers["RateLimit-Policy"]
        assert guesser.get(f"/api/v1/rooms/{code}").status_code == 429  # even a right guess, for a while


def test_a_client_that_sends_its_whole_body_first_still_reads_the_413(tmp_path):
    """urllib (like most clients) sends all of a body before it reads the answer: the server must
    not hang up on it mid-body, or the client sees a broken pipe instead of the 413."""
    import urllib.error
    import urllib.request

    from tests.live_server import LiveServer

    server = LiveServer(tmp_path).start()
    try:
        body = b"[" + b"0," * 2_000_000 + b"0]"  # 4 MB
        req = urllib.request.Request(f"{server.url}/api/v1/quiz/answers", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 413 and b"this route's limit" in err.value.read()
    finally:
        server.stop()
