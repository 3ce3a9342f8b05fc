"""Human studies: a frozen design, blocks without feedback, no image twice, results with intervals,
and an export that states the design (REST; the browser flow is in test_browser.py)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io

import pytest
from fastapi.testclient import TestClient

from app.classroom import studies
from app.classroom.studies import block_results, wilson
from app.main import create_app
from app.settings import ROOT
from tests.conftest import make_settings, wait_ready
from tests.helpers import browser, wait

ADMIN = "study-admin-token"
# Runs that stop once every target is at 99.5% (the study's floor is 99%), made side by side
RUNS = [{"method": "map-elites", "encoding": "direct", "targets": "all", "generations": 3000, "population": 100},
        {"method": "map-elites", "encoding": "cppn", "targets": [0, 1, 3, 7], "generations": 3000, "population": 100},
        {"method": "gradient", "encoding": "direct", "targets": "all", "steps": 300}]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("studies")
    (data / "MNIST").symlink_to(ROOT / "data" / "MNIST")  # real digits for the controls, read-only
    lenets = ",".join(["lenet-mnist"] + [f"lenet-mnist-s{i}" for i in range(1, 5)])  # transfer to other seeds
    settings = make_settings(preload=lenets, data_dir=data, admin_token=ADMIN)
    application = create_app(settings)
    with TestClient(application) as c:
        wait_ready(c)
        yield application


def design(**over) -> dict:
    return {"models": ["lenet-mnist"], "trials_per_block": 4, **over}


def test_a_design_without_its_images_names_the_runs_to_make(app):
    owner = browser(app)
    r = owner.post("/api/v1/studies", json=design())
    assert r.status_code == 409, r.text
    runs = r.json()["runs"]
    assert {(x["method"], x["encoding"]) for x in runs} == {("map-elites", "direct"), ("map-elites", "cppn"),
                                                            ("gradient", "direct")}
    for bad, field in (({"models": []}, "models"), ({"tasks": ["guess"]}, "tasks.0"),
                       ({"min_confidence": 0.2}, "min_confidence"), ({"exposure_ms": 5}, "exposure_ms"),
                       ({"trials_per_block": 0}, "trials_per_block"), ({"colour": 1}, "colour")):
        r = owner.post("/api/v1/studies", json=design(**bad))
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert owner.post("/api/v1/studies", json=design(models=["no-such-model"])).status_code == 422
    assert TestClient(app).post("/api/v1/studies", json=design()).status_code == 403  # no cookie: no study


@pytest.fixture(scope="module")
def study(app):
    maker = browser(app)
    jobs = [maker.post("/api/v1/jobs", json={"model": "lenet-mnist", "seed": 1, "params": {"stop_at": 0.995}, **run})
            .json() for run in RUNS]
    for job in jobs:
        wait(maker, job["id"], timeout=300)
    r = maker.post("/api/v1/studies", json=design(title="Can you tell?"))
    assert r.status_code == 201, r.text
    return maker, r.json()


def take_part(c: TestClient, study_id: str, pick) -> tuple[list[dict], list[dict]]:
    """Answer every trial with ``pick(trial)``; return (trials seen, answers' replies)."""
    seen, replies = [], []
    while (r := c.get(f"/api/v1/studies/{study_id}/next")).status_code == 200:
        trial = r.json()
        assert c.get(f"/api/v1/studies/{study_id}/next").json()["trial"] == trial["trial"]  # the open one again
        assert "label" not in trial and "source" not in trial and "confidence" not in trial
        assert c.get(trial["image"]).headers["content-type"] == "image/png"
        seen.append(trial)
        reply = c.post(f"/api/v1/studies/{study_id}/answers", json={"trial": trial["trial"], "answer": pick(trial)})
        assert reply.status_code == 201, reply.text
        replies.append(reply.json())
    assert r.status_code == 204
    return seen, replies


def test_two_participants_get_no_feedback_until_a_block_ends_and_never_an_image_twice(app, study):
    maker, made = study
    sid = made["id"]
    assert [b["task"] for b in made["blocks"]] == ["forced_choice", "options"]
    assert [b["chance"] for b in made["blocks"]] == [0.5, 0.25]
    a, b = browser(app), browser(app)
    seen_a, replies_a = take_part(a, sid, lambda t: t["options"][0])
    seen_b, _ = take_part(b, sid, lambda t: t["options"][-1])
    for seen in (seen_a, seen_b):
        assert len(seen) == 8 and [t["task"] for t in seen] == ["forced_choice"] * 4 + ["options"] * 4
        assert all(len(t["options"]) == 2 for t in seen[:4]) and all(t["options"][-1] == "none of these"
                                                                      for t in seen[4:])
        images = [a.get(t["image"]).content if seen is seen_a else b.get(t["image"]).content for t in seen]
        assert len({hashlib.sha256(i).hexdigest() for i in images}) == 8  # never the same image twice
    assert [r["feedback"] is None for r in replies_a] == [True, True, True, False] * 2
    assert replies_a[3]["feedback"]["trials"] == 4 and replies_a[3]["feedback"]["chance"] == 0.5
    # hostile: someone else's trial, an answer not offered, a second answer, no cookie
    trial = seen_a[0]
    assert b.post(f"/api/v1/studies/{sid}/answers", json={"trial": trial["trial"], "answer": "x"}).status_code == 404
    assert b.get(trial["image"]).status_code == 404
    c = browser(app)
    t = c.get(f"/api/v1/studies/{sid}/next").json()
    assert c.post(f"/api/v1/studies/{sid}/answers", json={"trial": t["trial"], "answer": "giraffe"}).status_code == 422
    assert c.post(f"/api/v1/studies/{sid}/answers", json={"trial": t["trial"], "answer": t["options"][0]}).status_code \
        == 201
    assert c.post(f"/api/v1/studies/{sid}/answers", json={"trial": t["trial"], "answer": t["options"][0]}).status_code \
        == 409
    assert TestClient(app).get(f"/api/v1/studies/{sid}/next").status_code == 403


def test_results_csv_and_sheet_are_the_makers_and_state_the_design(app, study):
    maker, made = study
    sid = made["id"]
    for path in ("results", "trials.csv", "sheet.json"):
        assert browser(app).get(f"/api/v1/studies/{sid}/{path}").status_code == 403
        assert TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}).get(
            f"/api/v1/studies/{sid}/{path}").status_code == 200
    res = maker.get(f"/api/v1/studies/{sid}/results").json()
    assert [b["task"] for b in res["blocks"]] == ["forced_choice", "options"]
    first = res["blocks"][0]
    assert first["chance"] == 0.5 and first["participants"] >= 2 and first["images_counted"] == "fooling"
    assert first["trials"] + first["controls"]["trials"] >= 8  # the controls are counted on their own
    assert len(first["ci95"]) == 2 and first["ci95"][0] <= first["agreement"] <= first["ci95"][1]
    assert all(len(p["ci95"]) == 2 for p in first["per_participant"])
    assert {i["condition"] for i in first["images"]} <= {"gradient", "evolution-direct", "evolution-cppn", "control"}
    rows = list(csv.DictReader(io.StringIO(maker.get(f"/api/v1/studies/{sid}/trials.csv").text)))
    assert len(rows) == sum(b["trials"] + b["controls"]["trials"] for b in res["blocks"])
    assert sum(r["condition"] == "control" for r in rows) == sum(b["controls"]["trials"] for b in res["blocks"])
    assert all(r["agreed"] == str(int(r["answer"] == r["network_label"])) for r in rows)
    sheet = maker.get(f"/api/v1/studies/{sid}/sheet.json").json()
    assert sheet["design"]["min_confidence"] == 0.99 and sheet["design"]["trials_per_block"] == 4
    assert {s["condition"] for s in sheet["stimuli"]} == {"gradient", "evolution-direct", "evolution-cppn", "control"}
    assert all(s["source"].startswith("mnist:") for s in sheet["stimuli"] if s["kind"] == "control")
    someone = browser(app)
    trial = someone.get(f"/api/v1/studies/{sid}/next").json()
    assert hashlib.sha256(someone.get(trial["image"]).content).hexdigest() in {s["sha256"] for s in sheet["stimuli"]}
    assert all(s["confidence"] >= 0.99 for s in sheet["stimuli"] if s["kind"] == "fooling")
    # how each image fools the other LeNets (other seeds): a confidence in the same label per network
    transfer = [s["transfer"] for s in sheet["stimuli"] if s["kind"] == "fooling"]
    assert all(set(t) == {"lenet-mnist-s1", "lenet-mnist-s2", "lenet-mnist-s3", "lenet-mnist-s4"} for t in transfer)
    assert all(0 <= v <= 1 for t in transfer for v in t.values())
    assert all("transfer" in i for b in res["blocks"] for i in b["images"])
    assert all(len(s["sha256"]) == 64 for s in sheet["stimuli"]) and sheet["consent"]


def test_intervals():
    assert wilson(0, 0) is None
    lo, hi = wilson(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95  # the textbook Wilson interval for 8 of 10
    rows = [{"participant": p, "agreed": a, "answer": "x"} for p, a in
            [("a", 1), ("a", 1), ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 0), ("b", 0)]]
    r = block_results(rows, 0.5)
    assert r["participants"] == 2 and r["agreement"] == 0.5  # the mean of 0.75 and 0.25
    assert r["ci95"][0] == 0.0 and r["ci95"][1] == 1.0  # two people who disagree tell us little
    assert r["above_chance"] is False
    assert [p["dprime"] for p in r["per_participant"]] == [0.9539, -0.9539]  # sqrt(2) z(0.75), sqrt(2) z(0.25)
    assert r["dprime"] == 0.0 and studies.dprime_2afc(4, 4) == 1.6268  # a perfect 4 of 4: sqrt(2) z(7/8)
    assert "dprime" not in block_results(rows, 0.25)  # d' is for the two-label task
    same = block_results([{**row, "agreed": 1 - row["agreed"]} if row["participant"] == "b" else row
                          for row in rows], 0.5)
    assert same["agreement"] == 0.75 and same["ci95"] == wilson(6, 8)  # equal shares: the trials' interval


def test_controls_are_real_images_the_model_gets_right(app):
    c = browser(app)
    body = c.get("/api/v1/controls?model=lenet-mnist").json()
    assert len(body["controls"]) >= 25
    for item in body["controls"][:3]:
        assert set(item) >= {"url", "label", "licence", "source"}
        assert c.get(item["url"]).headers["content-type"] == "image/png"
    assert c.get("/api/v1/controls?model=nope").status_code == 404


def test_the_pages_make_a_study_and_take_a_participant_through_it(app, study):
    maker, made = study
    page = maker.get("/studies")
    assert page.status_code == 200 and 'name="trials_per_block"' in page.text
    r = maker.post("/studies", data={"models": "lenet-mnist", "tasks": "forced_choice", "conditions": "gradient",
                                     "trials_per_block": "3", "min_confidence": "0.99", "exposure_ms": "800",
                                     "title": "Gradient only"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    results_url = r.headers["location"]
    sid = results_url.split("/")[2]
    assert "studies/" + sid in maker.get(results_url).text
    bad = maker.post("/studies", data={"models": "lenet-mnist", "tasks": "forced_choice", "trials_per_block": "0"})
    assert bad.status_code == 422 and "trials_per_block" in bad.text
    p = browser(app)
    first = p.get(f"/studies/{sid}")
    assert "data-consent" in first.text and "data-begin" in first.text and "data-trial" not in first.text
    assert "fool" not in first.text.split("data-consent")[1].split("</form>")[0].lower()  # no hypothesis stated
    for i in range(3):
        trial_page = p.get(f"/studies/{sid}?begin=1").text
        assert 'data-expose-ms="800"' in trial_page and "data-feedback" not in trial_page
        trial = trial_page.split('data-trial="')[1].split('"')[0]
        answer = trial_page.split('name="answer" value="')[1].split('"')[0]
        r = p.post(f"/studies/{sid}/answer", data={"trial": trial, "answer": answer}, follow_redirects=False)
        if i < 2:
            assert r.status_code == 303
        else:
            assert r.status_code == 200 and "data-feedback" in r.text and "of 3" in r.text
    assert "data-done" in p.get(f"/studies/{sid}?begin=1").text
    assert '<td data-label="Participants">1</td>' in maker.get(results_url).text
    assert browser(app).get(results_url).status_code == 403
    assert p.post(f"/studies/{sid}/answer", data={"trial": "x", "answer": "y"}).status_code == 422


def test_one_browser_asking_at_once_gets_one_trial_and_options_are_fixed_per_image(app, study):
    from concurrent.futures import ThreadPoolExecutor

    _, made = study
    sid = made["id"]
    c = browser(app)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: c.get(f"/api/v1/studies/{sid}/next").json()["trial"], range(8)))
    assert len(set(ids)) == 1  # a double click or two tabs never open two trials
    sheet = study[0].get(f"/api/v1/studies/{sid}/sheet.json").json()
    by_hash = {s["sha256"]: s for s in sheet["stimuli"]}
    for _ in range(2):  # the same image shows the same labels to everyone (only their order changes)
        other = browser(app)
        t = other.get(f"/api/v1/studies/{sid}/next").json()
        stim = by_hash[hashlib.sha256(other.get(t["image"]).content).hexdigest()]
        assert sorted(t["options"]) == sorted(stim["options"]["forced_choice"])
        foils = [o for o in t["options"] if o != stim["label"]]
        assert foils and all(f in {s["label"] for s in sheet["stimuli"] if s["kind"] == "fooling"} for f in foils)


def test_the_headline_counts_fooling_images_and_the_controls_apart():
    stimuli = [{"id": 0, "kind": "fooling", "condition": "gradient", "model": "m", "label": "7", "confidence": 1},
               {"id": 1, "kind": "control", "condition": "control", "model": "m", "label": "3", "confidence": 1}]
    study = {"id": "s", "title": "", "stimuli": stimuli,
             "design": {"blocks": [{"block": 0, "task": "forced_choice", "chance": 0.5}]}}
    rows = [{"participant": p, "block": 0, "stimulus": st, "answer": a, "agreed": int(a in ("7", "3"))}
            for p in ("a", "b") for st, a in ((0, "7"), (0, "1"), (1, "3"), (1, "3"))]
    block = studies.results(study, rows)["blocks"][0]
    assert block["agreement"] == 0.5 and block["trials"] == 4  # the fooling images only
    assert block["controls"]["agreement"] == 1.0 and block["controls"]["trials"] == 4


def test_a_study_is_bounded_and_its_maker_deletes_it(app, study):
    maker, made = study
    owner = browser(app)
    assert owner.post("/api/v1/studies", json=design(models=["lenet-mnist", "lenet-mnist"])).status_code == 422
    budget = app.state.budgets["studies"]
    app.state.budgets["studies"] = dataclasses.replace(budget, limit=0)
    try:
        r = owner.post("/api/v1/studies", json=design())
        assert r.status_code == 507 and r.json()["budget"] == "studies"
    finally:
        app.state.budgets["studies"] = budget
    r = owner.post("/api/v1/studies", json=design(trials_per_block=2, tasks=["options"]))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert (app.state.studies.root / sid).is_dir()
    assert browser(app).delete(f"/api/v1/studies/{sid}").status_code == 403
    assert owner.delete(f"/api/v1/studies/{sid}").status_code == 204
    assert owner.get(f"/api/v1/studies/{sid}").status_code == 404 and not (app.state.studies.root / sid).exists()
    assert app.state.studies.sweep(0.0) == 0 and app.state.studies.get(made["id"])  # newer: kept


def test_one_network_cannot_take_every_trial(app, study):
    # Scripts that make a fresh cookie per participant all share their address: the trials shown at
    # it are capped, so that one network cannot fill the server's trial budget for every other study.
    _, made = study
    first = browser(app)
    assert first.get(f"/api/v1/studies/{made['id']}/next").status_code == 200
    shown = app.state.studies.count_trials("testclient")
    assert shown >= 1 and shown == app.state.studies.count_trials()  # every trial so far came from this address
    lab = app.state.lab
    lab.settings = dataclasses.replace(lab.settings, max_study_trials_per_address=shown)
    try:
        r = browser(app).get(f"/api/v1/studies/{made['id']}/next")
        assert r.status_code == 429 and "FOOLING_MAX_STUDY_TRIALS_PER_ADDRESS" in r.json()["detail"], r.text
        assert first.get(f"/api/v1/studies/{made['id']}/next").status_code == 200  # one who started goes on
    finally:
        lab.settings = dataclasses.replace(lab.settings, max_study_trials_per_address=50_000)


def test_a_room_runs_its_own_study(app):
    """The instructor makes a room; its members' runs are the study's images; only members take part."""
    teacher = TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"})
    code = teacher.post("/api/v1/rooms", json={"title": "Study day"}).json()["code"]
    alice, bob = browser(app), browser(app)
    for who, name in ((alice, "Alice"), (bob, "Bob")):
        assert who.post(f"/api/v1/rooms/{code}/join", json={"nickname": name}).status_code == 200
    job = alice.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "gradient", "targets": "all",
                                           "steps": 300, "seed": 9, "params": {"stop_at": 0.995}}).json()
    wait(alice, job["id"])
    spec = design(room=code, conditions=["gradient"], tasks=["forced_choice"], trials_per_block=3)
    r = teacher.post("/api/v1/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    sheet = teacher.get(f"/api/v1/studies/{sid}/sheet.json").json()
    assert {s["source"].split(":")[1] for s in sheet["stimuli"] if s["kind"] == "fooling"} == {job["id"]}
    assert sheet["design"]["room"] == code
    assert browser(app).get(f"/api/v1/studies/{sid}/next").status_code == 403  # not a member
    seen, _ = take_part(bob, sid, lambda t: t["options"][0])
    assert len(seen) == 3
    res = teacher.get(f"/api/v1/studies/{sid}/results").json()["blocks"][0]
    assert res["participants"] + res["controls"]["participants"] >= 1 and "dprime" in res
