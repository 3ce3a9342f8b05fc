"""Defended models (MODEL+KIND): the id grammar and its refusals, detectors calibrated to their
false-positive rate on real held-out digits, scores equal to the wrapped computation (and to the
papers' formulas through pytorch-ood), and the API: GET /api/v1/defences, a defended model's
numbers, scoring with `rejected`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.models import defences, filters, registry
from app.settings import ROOT
from app.web import arena
from tests.conftest import make_settings, png_bytes, wait_ready

DETECTORS = ["msp", "energy", "mahalanobis", "squeeze"]
ADMIN = "teacher-token-for-the-arena"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("defences")
    (data / "MNIST").symlink_to(ROOT / "data" / "MNIST")  # the real digits detectors calibrate on, read-only
    lenets = ",".join(["lenet-mnist"] + [f"lenet-mnist-s{i}" for i in range(1, 5)])
    application = create_app(make_settings(preload=lenets, data_dir=data, admin_token=ADMIN))
    with TestClient(application) as c:
        wait_ready(c)
        yield application


@pytest.fixture(scope="module")
def reg(app):
    return app.state.lab.registry


@pytest.fixture(scope="module")
def held_out(reg):
    """1000 test digits the detectors were not calibrated on (the other half of the same seeded split)."""
    _, _, x, y = reg._real_mnist()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[defences.CALIBRATION:][:1000]
    return x[order], y[order]


def test_the_grammar_names_what_is_wrong():
    assert defences.canonical("lenet-mnist+smooth(sigma=2.0)") == "lenet-mnist+smooth(sigma=2)"
    assert defences.canonical("lenet-mnist+smooth(sigma=1)+msp(fpr=0.05)") == "lenet-mnist+smooth+msp"
    assert defences.canonical("lenet-mnist+retrained(n1)") == defences.canonical("lenet-mnist+retrained(1)")
    for bad, says in (("lenet-mnist+nope", "unknown defence"), ("lenet-mnist+msp+smooth", "last"),
                      ("lenet-mnist+msp+energy", "one detector"), ("lenet-mnist+smooth(sigma=9)", "between"),
                      ("lenet-mnist+smooth(sigma=x)", "a number"), ("lenet-mnist+smooth(blur=1)", "not an argument"),
                      ("lenet-mnist+smooth+ensemble(s1)", "ensemble comes first"), ("lenet-mnist+ensemble", "member"),
                      ("lenet-mnist+smooth+smooth+smooth+msp", "at most 3"), ("lenet-mnist+msp(fpr=nan)", "between"),
                      ("lenet-mnist+retrained(n1)+msp", "stands alone"), ("lenet-mnist+retrained(n99)", "n1 to n15"),
                      ("lenet-mnist+ensemble(s1)+mahalanobis", "not an ensemble")):
        with pytest.raises(defences.DefenceError, match=says):
            defences.canonical(bad)


@pytest.mark.parametrize("kind", DETECTORS)
def test_a_detector_at_5_percent_rejects_3_to_7_percent_of_real_held_out_digits(reg, held_out, kind):
    entry = reg.get(f"lenet-mnist+{kind}")
    x, y = held_out
    with torch.no_grad():
        top = entry.model(x).argmax(1)
    rejected = float((top == entry.num_classes - 1).float().mean())
    assert entry.labels[-1] == "rejected" and entry.num_classes == 11
    assert 0.03 <= rejected <= 0.07, (kind, rejected)
    assert 0.03 <= entry.meta["false_positive_rate"] <= 0.07 and entry.meta["target_fpr"] == 0.05
    assert entry.meta["clean_accuracy"] >= 0.9  # LeNet's 99% less what it rejects
    assert entry.differentiable is (kind != "squeeze")


def test_a_defended_score_is_the_wrapped_computation(reg, held_out):
    from pytorch_ood.detector import EnergyBased, Mahalanobis, MaxSoftmax

    base = reg.model("lenet-mnist")
    x = torch.cat([held_out[0][:200], torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(1))])
    with torch.no_grad():
        logits = base(x)
        p = torch.softmax(logits, -1)
        for kind, formula, library in (("msp", -p.max(1).values, MaxSoftmax.score(logits)),
                                       ("energy", -torch.logsumexp(logits, 1), EnergyBased.score(logits))):
            det = reg.get(f"lenet-mnist+{kind}").model
            _, score = det.logits_and_score(x)
            assert torch.allclose(score, formula, atol=1e-6) and torch.allclose(score, library, atol=1e-6)
            out = torch.softmax(det(x), -1)
            accept = (score <= det.threshold).float()
            assert torch.allclose(out[:, :10], p * accept[:, None], atol=1e-6)
            assert torch.allclose(out[:, 10], 1 - accept, atol=1e-6)
        det = reg.get("lenet-mnist+mahalanobis").model
        _, score = det.logits_and_score(x)
        feats = det.logits_and_features(x)[1]
        library = Mahalanobis(None)
        library.mu, library.precision = det.mu, det.precision
        assert torch.allclose(score, library.predict_features(feats), rtol=1e-4, atol=1e-3)
        smooth = torch.softmax(reg.get("lenet-mnist+smooth(sigma=2)").model(x), -1)
        assert torch.allclose(smooth, torch.softmax(base(filters.blur(x, 2.0)), -1), atol=1e-6)
        members = [reg.model(i) for i in ["lenet-mnist", "lenet-mnist-s1", "lenet-mnist-s2"]]
        ens = torch.softmax(reg.get("lenet-mnist+ensemble(s1,s2)").model(x), -1)
        assert torch.allclose(ens, torch.stack([torch.softmax(m(x), -1) for m in members]).mean(0), atol=1e-5)


def test_gradients_get_past_a_differentiable_detector(reg):
    """The gate's value is hard, its gradient that of a steep sigmoid: ascent on the target's
    log-probability lowers the detector's score."""
    det = reg.get("lenet-mnist+mahalanobis").model
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2)).requires_grad_()
    before = det.logits_and_score(x)[1].detach()
    assert bool((before > det.threshold).all())  # uniform noise is far from every digit's features
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(60):
        loss = -torch.log_softmax(det(x.clamp(0, 1)), -1)[:, 3].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, after = det.logits_and_score(x.clamp(0, 1))
    assert float(after.mean()) < float(before.mean())


def test_the_api_lists_defences_reports_their_cost_and_scores_with_rejected(app, held_out):
    c = TestClient(app)
    kinds = c.get("/api/v1/defences").json()["defences"]
    assert {k["kind"] for k in kinds} == {"smooth", "ensemble", "retrained", *DETECTORS}
    assert all(k["example"].startswith("lenet-mnist+") for k in kinds)
    m = c.get("/api/v1/models/lenet-mnist+energy").json()
    assert m["id"] == "lenet-mnist+energy" and m["labels"][-1] == "rejected"
    assert 0.03 <= m["false_positive_rate"] <= 0.07 and m["clean_accuracy"] > 0.9
    assert c.get("/api/v1/models/lenet-mnist+smooth(sigma=2)").json()["false_positive_rate"] == 0
    r = c.get("/api/v1/models/lenet-mnist+msp+smooth")
    assert r.status_code == 422 and "last" in r.json()["detail"] and r.json()["field"] == "model"
    assert c.get("/api/v1/models/no-such+msp").status_code == 404
    r = c.get("/api/v1/models/efficientnet-lite0-imagenet+msp")
    assert r.status_code == 422 and "MNIST models only" in r.json()["detail"]  # no ImageNet images to calibrate on
    digit = png_bytes(Image.fromarray((held_out[0][0, 0].numpy() * 255).round().astype(np.uint8)))
    noise = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)))
    r = c.post("/api/v1/score", data={"model": "lenet-mnist+mahalanobis"},
               files=[("file", ("digit.png", digit, "image/png")), ("file", ("noise.png", noise, "image/png"))])
    assert r.status_code == 200, r.text
    got = {x["filename"]: x for x in r.json()["results"]}
    assert got["digit.png"]["rejected"] is False and got["digit.png"]["top"][0]["label"] == str(int(held_out[1][0]))
    assert got["noise.png"]["rejected"] is True and got["noise.png"]["top"][0]["label"] == "rejected"
    plain = c.post("/api/v1/score", data={"model": "lenet-mnist"}, files=[("file", ("d.png", digit, "image/png"))])
    assert "rejected" not in plain.json()["results"][0]


def test_new_defended_models_are_rate_limited(app, monkeypatch):
    monkeypatch.setattr(registry, "DEFENDED_PER_MINUTE", 0)
    c = TestClient(app)
    r = c.get("/api/v1/models/lenet-mnist+smooth(sigma=3.5)")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert c.get("/api/v1/models/lenet-mnist+energy").status_code == 200  # one built already is served


def test_a_run_against_a_detector_never_counts_a_rejected_image(app):
    """MAP-Elites against LeNet behind the Mahalanobis detector: the targets are the ten digits (not
    "rejected"), each says whether the detector lets its best image through, an image it rejects
    scores (almost) nothing, and the saved images score as the job says."""
    from tests.helpers import browser, wait

    c = browser(app)
    job = c.post("/api/v1/jobs", json={"model": "lenet-mnist+mahalanobis", "method": "map-elites", "targets": "all",
                                      "generations": 300, "population": 50, "seed": 0})
    assert job.status_code == 201, job.text
    done = wait(c, job.json()["id"], timeout=300)
    targets = done["targets"]
    assert [t["label"] for t in targets] == [str(i) for i in range(10)]
    assert all(isinstance(t["accepted"], bool) for t in targets)
    assert any(t["accepted"] for t in targets)
    for t in targets:
        if not t["accepted"]:
            assert t["confidence"] < 1e-6, t  # what the detector rejects counts for nothing
    png = c.get(f"/api/v1/jobs/{done['id']}/images/{targets[0]['position']}.png").content
    rescored = c.post("/api/v1/score", data={"model": "lenet-mnist+mahalanobis"},
                      files={"file": ("0.png", png, "image/png")}).json()["results"][0]
    assert rescored["rejected"] is (not targets[0]["accepted"])
    scorer = app.state.lab.scorer  # neither the job nor the scoring made a batcher thread for a defended model
    assert not [m for m in (*scorer._batchers, *scorer._job_batchers) if "+" in m]
    assert c.post("/api/v1/jobs", json={"model": "lenet-mnist+mahalanobis", "targets": ["rejected"]}).status_code == 422


def test_gradients_attack_differentiable_defences_and_say_why_not_the_others(app):
    from tests.helpers import browser, wait

    c = browser(app)
    ok = c.post("/api/v1/jobs", json={"model": "lenet-mnist+msp", "method": "gradient", "targets": [3],
                                     "steps": 30, "seed": 0})
    assert ok.status_code == 201, ok.text
    assert wait(c, ok.json()["id"], timeout=120)["targets"][0]["accepted"] in (True, False)
    refused = c.post("/api/v1/jobs", json={"model": "lenet-mnist+squeeze", "method": "gradient", "targets": [3]})
    assert refused.status_code in (409, 422) and "squeeze" in refused.json()["detail"], refused.text


def test_the_arena_sets_out_each_defence_and_starts_attacks_on_it(app):
    from tests.helpers import browser, wait

    c = browser(app)
    page = c.get("/arena")
    assert page.status_code == 200
    for defended in ("lenet-mnist+smooth", "lenet-mnist+smooth(sigma=2)", "lenet-mnist+ensemble(s1,s2,s3,s4)",
                     *(f"lenet-mnist+{k}" for k in DETECTORS)):
        assert f'data-defence="{defended}"' in page.text, defended
    r = c.post("/arena/attack", data={"model": "lenet-mnist+energy", "encoding": "cppn"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/arena?model=lenet-mnist&attack=")
    job_id = r.headers["location"].rsplit("=", 1)[-1]
    job = c.get(f"/api/v1/jobs/{job_id}").json()
    assert job["settings"]["model"] == "lenet-mnist+energy" and job["settings"]["encoding"] == "cppn"
    assert f'data-attack-events="/arena/events?attack={job_id}"' in c.get(r.headers["location"]).text
    # the page's one stream: the attack's numbers as they change, then `close` once it has ended
    events = _events(c, f"/arena/events?attack={job_id}&attack=nope", lambda ev: ev[-1][0] == "close", timeout=120)
    attacks = [d for e, d in events if e == "attack"]
    assert attacks and {a["id"] for a in attacks} == {job_id} and attacks[-1]["status"] == "done"
    assert attacks[-1]["needed"] is None or attacks[-1]["needed"] <= attacks[-1]["evaluations"]
    assert c.get("/arena/events?" + "&".join(f"attack=a{i}" for i in range(9))).status_code == 422
    wait(c, job_id, timeout=120)
    shown = c.get(r.headers["location"]).text
    assert f'data-attack="{job_id}" data-status="done"' in shown and "evaluations" in shown
    again = c.post("/arena/attack", data={"model": "lenet-mnist+msp", "kept": [job_id]}, follow_redirects=False)
    assert job_id in again.headers["location"]  # the page keeps the attacks it shows
    assert c.post("/arena/attack", data={"model": "lenet-mnist+msp", "encoding": "pixels"}).status_code == 422
    assert c.post("/arena/attack", data={"model": "lenet-mnist+nope"}).status_code == 422
    assert c.get("/arena?model=lenet-mnist%2Bmsp").status_code == 422
    assert c.get("/arena?model=nope").status_code == 404
    assert c.get("/arena/events?attack=nope").text.endswith('event: close\ndata: {"status":"finished"}\n\n')


def test_the_n_plus_1_network_is_a_defence_whose_fooling_class_rejects(reg, held_out):
    """lenet-mnist+retrained(n1): the retraining experiment's network after one round (a model file),
    its eleventh class ("fooling") answering rejected; its cost measured like every defence's."""
    entry = reg.get("lenet-mnist+retrained(n1)")
    assert entry.labels[-1] == "rejected" and entry.num_classes == 11 and entry.meta["rejects"]
    assert entry.meta["clean_accuracy"] > 0.98 and entry.meta["false_positive_rate"] < 0.01
    x, y = held_out
    with torch.no_grad():
        assert float((entry.model(x).argmax(1) == y).float().mean()) > 0.98
    fooled = reg.get("lenet-mnist")  # images evolved against the plain LeNet: the n+1 network has seen their like
    assert fooled.num_classes == 10
    with pytest.raises(defences.DefenceError, match="no retrained network"):
        reg.get("lenet-mnist+retrained(n15)")


def test_ensembles_take_their_own_kind_of_model_once(reg):
    for bad, says in (("lenet-mnist+ensemble(efficientnet-lite0-imagenet)", "does not take"),
                      ("lenet-mnist+ensemble(s1,s1)", "each member once"),
                      ("lenet-mnist+ensemble(lenet-mnist)", "once")):
        with pytest.raises(defences.DefenceError, match=says):
            reg.get(bad)
    assert reg.get("efficientnet-lite0-imagenet").model is None  # refused before anything was loaded


def test_a_detector_shared_by_threads_reads_only_its_own_features(reg, held_out):
    """The Mahalanobis detector reads the shared network's penultimate features with a hook that
    lives for one call and keeps one thread's: two threads at once get their own scores, and the
    network is left without hooks."""
    from concurrent.futures import ThreadPoolExecutor

    det = reg.get("lenet-mnist+mahalanobis").model
    xs = [held_out[0][:3], held_out[0][100:107]]
    with torch.no_grad():
        alone = [det.logits_and_score(x)[1] for x in xs]
        with ThreadPoolExecutor(2) as pool:
            for _ in range(20):
                together = list(pool.map(lambda x: det.logits_and_score(x)[1], xs))
                assert all(torch.allclose(a, b) for a, b in zip(alone, together, strict=True))
        reg.model("lenet-mnist")(xs[0])
    assert not defences._penultimate(reg.model("lenet-mnist"))._forward_hooks


def test_being_rejected_is_no_adversarial_success(reg, held_out):
    from app.fooling.attacks import AttackParams, fgsm

    entry = reg.get("lenet-mnist+msp")
    x = held_out[0][:40]
    snap = next(fgsm(entry.model, x, None, AttackParams(epsilon=0.3), refused=entry.num_classes - 1))
    after = snap.extra["pred_after"]
    assert any(p == entry.num_classes - 1 for p in after)  # some digits only got themselves rejected...
    for ok, p in zip(snap.extra["success"], after, strict=True):
        assert not (ok and p == entry.num_classes - 1)  # ...and those do not count as fooled
    assert all(t != entry.num_classes - 1 for t in snap.targets)  # reported: the best real class


def test_the_arena_reads_the_gallery_written_by_older_versions(app):
    """Fooling images of finished runs on the model, the ones a detector is shown: a record from an
    older version names no file per target, and the arena still finds its images."""
    from tests.helpers import browser, wait

    c = browser(app)
    job = c.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": [1, 7],
                                      "generations": 2000, "seed": 3}).json()
    wait(c, job["id"], timeout=120)
    store = app.state.runner.store
    rec = store.get(job["id"])
    old = {**rec["result"], "targets": [{k: v for k, v in t.items() if k != "file"} for t in rec["result"]["targets"]]}
    store.update(job["id"], result=old)
    page = c.get("/arena")
    assert page.status_code == 200 and "rejected (of " in page.text


def _events(client, url: str, done, timeout: float = 30) -> list[tuple[str, object]]:
    """The (event, data) of a room's stream until ``done(events)`` holds."""
    import time

    out: list[tuple[str, object]] = []
    t0, event = time.monotonic(), None
    with client.stream("GET", url) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                if done(out):
                    return out
            assert time.monotonic() - t0 < timeout, [e for e, _ in out]
    return out


def _board(events) -> dict | None:
    boards = [d for e, d in events if e == "arena"]
    return boards[-1] if boards else None


def test_a_rooms_arena_sets_its_students_attacks_side_by_side_and_the_instructor_pins_it(app):
    """Students of a room attack different defences from /r/{code}/arena; every member sees all
    the room's attacks per defence, live (one `arena` event stream per room); the instructor pins
    the table to the wall, and hides an attack from the students."""
    from tests.helpers import browser

    teacher = TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"})
    code = teacher.post("/api/v1/rooms", json={"title": "Arena"}).json()["code"]
    ada, bo, stranger = browser(app), browser(app), browser(app)
    for student, name in ((ada, "Ada"), (bo, "Bo")):
        assert student.post(f"/api/v1/rooms/{code}/join", json={"nickname": name}).status_code == 200
    shut = stranger.get(f"/r/{code}/arena")
    assert shut.status_code == 200 and "data-members-only" in shut.text and "data-fool" not in shut.text
    assert stranger.get(f"/api/v1/rooms/{code}/events?arena=lenet-mnist").status_code == 403

    started = {}
    for student, defended, encoding in ((ada, "lenet-mnist+energy", "cppn"), (bo, "lenet-mnist+msp", "direct")):
        r = student.post("/arena/attack", data={"model": defended, "encoding": encoding, "room": code},
                         follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/r/{code}/arena?model=lenet-mnist", r.text
        started[defended] = student.get(f"/api/v1/rooms/{code}/jobs").json()["jobs"][0]["id"]
        assert student.get(f"/api/v1/jobs/{started[defended]}").json()["room"] == code
    page = ada.get(f"/r/{code}/arena")
    assert page.status_code == 200 and "data-fool" in page.text and "data-pin" not in page.text
    for defended, job_id in started.items():
        row = page.text.split(f'data-defence="{defended}"')[1].split("</tr>")[0]
        assert f'data-attack="{job_id}"' in row and ("Ada" if "energy" in defended else "Bo") in row

    # a look-alike is no attack (a gradient run titled like one); the same attack over REST is
    spoof = ada.post("/api/v1/jobs", json={"model": "lenet-mnist+msp", "method": "gradient", "targets": [3],
                                           "title": "arena: lenet-mnist+msp (direct)"}).json()["id"]
    rest = ada.post("/api/v1/jobs", json={"model": "lenet-mnist+squeeze", "encoding": "direct",
                                          **arena.ATTACK}).json()["id"]
    more = [bo.post("/arena/attack", data={"model": "lenet-mnist+msp", "room": code}) for _ in range(2)]
    assert all(r.status_code == 200 for r in more)  # followed the redirect back to the room's arena
    listed = bo.get(f"/api/v1/rooms/{code}/jobs").json()["jobs"]
    bos = [j["id"] for j in listed if j["settings"]["model"].endswith("msp") and j["settings"]["method"] != "gradient"]

    # the arena's own stream: the room's state and boards (two of them, a second apart), no tiles
    events = _events(ada, f"/api/v1/rooms/{code}/events?arena=lenet-mnist",
                     lambda ev: sum(e == "arena" for e, _ in ev) >= 2)
    assert {e for e, _ in events} <= {"room", "arena"}
    rows = {r["id"]: r for r in _board(events)["rows"]}
    on_msp = [(a["id"], a["nickname"]) for a in rows["lenet-mnist+msp"]["attacks"]]
    assert on_msp == [(i, "Bo") for i in bos[:2]] and started["lenet-mnist+msp"] in bos  # two a student, newest
    assert spoof not in str(rows) and [a["id"] for a in rows["lenet-mnist+squeeze"]["attacks"]] == [rest]
    assert rows["lenet-mnist+energy"]["attacks"][0]["encoding"] == "cppn" and rows["lenet-mnist"]["attacks"] == []
    assert 0.03 < rows["lenet-mnist+msp"]["false_positive_rate"] < 0.07
    clients = {app.state.runner.record(i)["client"] for i in [*started.values(), rest]}
    assert not any(c in json.dumps(d) for _, d in events for c in clients)  # who is who stays on the server
    for bad in ("lenet-mnist%2Bmsp", "nope", "x" * 101):
        assert ada.get(f"/api/v1/rooms/{code}/events?arena={bad}").status_code in (404, 422), bad

    # the instructor pins it: every wall shows the board beside its tiles; hidden attacks are the instructor's
    assert ada.post(f"/api/v1/rooms/{code}/arena", json={"model": "lenet-mnist"}).status_code == 403
    assert ada.post(f"/r/{code}/arena/pin", data={"model": "lenet-mnist"}).status_code == 403
    for bad, status in (({"model": "lenet-mnist+msp"}, 422), ({"model": "nope"}, 404), ({"model": 7}, 422),
                        ({"arena": "lenet-mnist"}, 422)):
        assert teacher.post(f"/api/v1/rooms/{code}/arena", json=bad).status_code == status, bad
    assert teacher.post(f"/api/v1/rooms/{code}/arena", json={"model": "lenet-mnist"}).json() == {"arena": "lenet-mnist"}
    assert ada.get(f"/api/v1/rooms/{code}").json()["arena"] == "lenet-mnist"
    for job_id in bos:
        teacher.post(f"/api/v1/rooms/{code}/hide", json={"job": job_id})
    wall = _events(ada, f"/api/v1/rooms/{code}/events", lambda ev: _board(ev) is not None and any(
        e == "tile" for e, _ in ev))
    seen = {r["id"]: r for r in _board(wall)["rows"]}
    assert seen["lenet-mnist+msp"]["attacks"] == [] and seen["lenet-mnist+energy"]["attacks"]
    assert not set(bos) & {d["id"] for e, d in wall if e == "tile"}
    mine = _events(teacher, f"/api/v1/rooms/{code}/events", lambda ev: _board(ev) is not None)
    assert [a["hidden"] for a in {r["id"]: r for r in _board(mine)["rows"]}["lenet-mnist+msp"]["attacks"]] == [True] * 2
    assert "data-hidden-attack" in teacher.get(f"/r/{code}/arena").text
    assert "data-hidden-attack" not in ada.get(f"/r/{code}/arena").text

    # taken down while a wall watches: the wall is told at once
    def unpin_once_shown(ev) -> bool:
        boards = [d for e, d in ev if e == "arena"]
        if len(boards) == 1 and boards[0] is not None and not getattr(unpin_once_shown, "done", False):
            unpin_once_shown.done = True
            r = teacher.post(f"/r/{code}/arena/pin", data={"model": ""}, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == f"/r/{code}/wall"
        return len(boards) >= 2 and boards[-1] is None

    live = _events(ada, f"/api/v1/rooms/{code}/events", unpin_once_shown)
    assert [d is None for e, d in live if e == "arena"][-1] and ada.get(f"/api/v1/rooms/{code}").json()["arena"] is None
    # an attack started by someone not in the room goes back to the open arena
    r = stranger.post("/arena/attack", data={"model": "lenet-mnist+msp", "room": code}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/arena?model=lenet-mnist&attack=")
    assert stranger.post("/arena/attack", data={"model": "lenet-mnist+msp", "room": "no!"}).status_code == 422
    for job in teacher.get("/api/v1/jobs?limit=50").json()["jobs"]:
        teacher.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_the_transfer_table_takes_defended_models_as_columns(app):
    """Do a run's fooling images get past a detector? /jobs/{id}/transfer?model=lenet-mnist+msp adds
    the detector as a column: its top answer (maybe "rejected") and the target's confidence."""
    from tests.helpers import browser, wait

    c = browser(app)
    job = c.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": [1, 7],
                                      "generations": 200, "seed": 5}).json()
    wait(c, job["id"], timeout=120)
    page = c.get(f"/jobs/{job['id']}/transfer", params={"model": ["lenet-mnist+msp", "lenet-mnist+msp", ""]})
    assert page.status_code == 200, page.text
    head = page.text.split("</thead>")[0]
    assert head.count("<code>lenet-mnist+msp</code>") == 1 and "<code>lenet-mnist</code>" in head
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 2 and all(r.count("target ") == len(head.split("<th>")) - 2 for r in rows)  # every column
    msp = app.state.lab.registry.get("lenet-mnist+msp")
    for bad, status in ((["nope"], 404), (["lenet-mnist+nope"], 422), (["x" * 201], 422),
                        ([f"lenet-mnist+msp(fpr=0.0{i})" for i in range(1, 6)], 422)):
        assert c.get(f"/jobs/{job['id']}/transfer", params={"model": bad}).status_code == status, bad
    assert msp.labels[-1] == "rejected"


def test_a_study_shows_images_evolved_against_a_detector_and_never_offers_rejected(app):
    """A defended model is a study's model like any other: its stimuli are images it accepted, at the
    floor or above, and the options people choose from are its real classes, never "rejected"."""
    from tests.helpers import browser, wait

    maker = browser(app)
    design = {"models": ["lenet-mnist+msp"], "conditions": ["evolution-cppn"], "tasks": ["options"],
              "trials_per_block": 3, "controls": True, "min_confidence": 0.99}
    r = maker.post("/api/v1/studies", json=design)
    assert r.status_code == 409 and r.json()["runs"][0]["model"] == "lenet-mnist+msp", r.text
    job = maker.post("/api/v1/jobs", json={"model": "lenet-mnist+msp", "method": "map-elites", "encoding": "cppn",
                                          "targets": "all", "generations": 300, "seed": 2}).json()
    done = wait(maker, job["id"], timeout=180)
    assert sum(t["confidence"] >= 0.99 and t["accepted"] for t in done["targets"]) >= 3
    r = maker.post("/api/v1/studies", json=design)
    assert r.status_code == 201, r.text
    study = app.state.studies.get(r.json()["id"])
    fooling = [s for s in study["stimuli"] if s["kind"] == "fooling"]
    assert fooling and all(s["confidence"] >= 0.99 and s["label"] != "rejected" for s in fooling)
    assert all("rejected" not in s["options"]["options"] and s["runner_up"] != "rejected" for s in study["stimuli"])
