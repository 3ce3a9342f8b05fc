"""The Lab's pages without a browser: forms start jobs, pages render live and finished runs,
the HTML stream ends with `close`, and user-given text is escaped everywhere."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.helpers import wait, wait_parked


def start_from_form(client, **fields) -> str:
    data = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
            "generations": "", "steps": "", "population": "", "seed": "0", "params": "", **fields}
    r = client.post("/lab/start", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/jobs/")
    return r.headers["location"].split("/")[-1]


def test_lab_home_has_presets_form_and_models(client):
    r = client.get("/")
    assert r.status_code == 200
    for text in ("Every digit from noise", 'action="/lab/start"', "lenet-mnist", "efficientnet-lite0-imagenet"):
        assert text in r.text
    pre = client.get("/?preset=invisible-7-to-3")
    assert 'value="pgd" selected' in pre.text and 'value="3"' in pre.text


def test_form_starts_a_job_and_its_page_streams_html_until_close(client):
    job_id = start_from_form(client, targets="1,7", population="50", generations="2000", seed="3")
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "seed <b>3</b>" in page.text
    assert f'hx-sse:connect="/jobs/{job_id}/stream' in page.text or "done" in page.text
    chunks = []
    with client.stream("GET", f"/jobs/{job_id}/stream") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            chunks.append(line)
            if line == "event: close":
                break
    html = "\n".join(c[6:] for c in chunks if c.startswith("data: "))
    assert "<img" in html and f"/api/v1/jobs/{job_id}/images/0.png" in html and "data-status" in html
    wait(client, job_id)
    done = client.get(f"/jobs/{job_id}")
    assert "hx-sse:connect" not in done.text and "grid.png" in done.text and "Re-run" in done.text
    rerun = done.text.split('href="/?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "seed=3" in rerun and "targets=1%2C7" in rerun and "population=50" in rerun
    assert 'value="1,7"' in client.get("/?" + rerun).text  # the link fills the form with the same run


def test_form_errors_are_shown_not_crashing(client):
    r = client.post("/lab/start", data={"model": "lenet-mnist", "method": "map-elites", "targets": "42"})
    assert r.status_code == 422 and "out of range" in r.text
    r = client.post("/lab/start", data={"model": "lenet-mnist", "method": "map-elites", "seed": "-1"})
    assert r.status_code == 422 and "seed" in r.text
    r = client.post("/lab/start", data={"model": "lenet-mnist", "params": "{nope"})
    assert r.status_code == 422 and "JSON" in r.text
    for field in ("targets", "seed", "generations"):  # "²" is a digit to isdigit, not to int; int refuses 4300+ digits
        for bad in ("²", "9" * 5000):
            r = client.post("/lab/start", data={"model": "lenet-mnist", field: bad})
            assert r.status_code == 422 and field in r.text, (field, bad[:5], r.status_code)


def test_controls_from_the_page(client):
    job_id = start_from_form(client, targets="4", population="50", generations="20000",
                             params='{"stop_at": null}')
    def press(action: str) -> None:
        r = client.post(f"/jobs/{job_id}/control/{action}", headers={"HX-Request": "true"})
        assert r.status_code == 204, action

    wait(client, job_id, ("running",))
    press("pause")
    wait(client, job_id, ("paused",))
    settled = wait_parked(client, job_id)  # paused and holding no worker: no step happens now
    press("step")
    t0 = time.time()
    while client.get(f"/api/v1/jobs/{job_id}").json()["progress"]["step"] != settled + 1:
        assert time.time() - t0 < 30, "step did not advance the paused job by one"
        time.sleep(0.02)
    press("resume")
    wait(client, job_id, ("running",))
    press("cancel")
    wait(client, job_id, ("cancelled",))
    # someone else's browser (a forged cookie is as good as none) may not touch it
    stranger = TestClient(client.app, cookies={"fl_client": "forged.value"})
    assert stranger.post(f"/jobs/{job_id}/control/delete").status_code == 403
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 200
    r = client.post(f"/jobs/{job_id}/control/cancel", follow_redirects=False)
    assert r.status_code == 303  # already finished: the page just shows it


def test_preset_demo_and_gallery(client):
    r = client.post("/lab/preset/every-digit-from-noise?demo=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("?demo=1")
    job_id = r.headers["location"].split("/")[-1].split("?")[0]
    page = client.get(r.headers["location"])
    assert 'class="demo"' in page.text and "Every digit from noise" in page.text
    wait(client, job_id)
    assert client.get("/demo").status_code == 200
    gallery = client.get("/gallery")
    assert gallery.status_code == 200 and f"/jobs/{job_id}" in gallery.text
    assert client.post("/lab/preset/nope", follow_redirects=False).status_code == 404


def test_seven_to_three_preset_uses_a_real_digit(client):
    r = client.post("/lab/preset/invisible-7-to-3", follow_redirects=False)
    job_id = r.headers["location"].split("/")[-1]
    job = wait(client, job_id)
    assert job["targets"][0]["index"] == 3 and job["targets"][0]["confidence"] > 0.5
    assert job["extra"]["linf"][0] <= 0.2 + 0.5 / 255 + 1e-6


def test_transfer_page_scores_on_other_models(client):
    job_id = start_from_form(client, targets="0,1", population="50", generations="30")
    wait(client, job_id)
    r = client.get(f"/jobs/{job_id}/transfer")
    assert r.status_code == 200 and "efficientnet-lite0-imagenet" in r.text and "target" in r.text


def test_user_text_is_escaped_on_every_page(client):
    evil = '<script>alert("x")</script>'
    r = client.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "random", "title": evil,
                                          "params": {"batches": 1, "batch_size": 10}})
    job_id = r.json()["id"]
    wait(client, job_id)
    for path in (f"/jobs/{job_id}", "/gallery", "/"):
        text = client.get(path).text
        assert evil not in text, path
    assert "&lt;script&gt;" in client.get(f"/jobs/{job_id}").text
