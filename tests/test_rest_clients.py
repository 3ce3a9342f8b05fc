"""What REST clients rely on beyond the happy path: scoring many images as one .npy array, safe
retries with Idempotency-Key, caching of finished files (ETag, 304), RateLimit headers on 429,
405 with every allowed method, and links that name only what exists."""

from __future__ import annotations

import io
import time
import uuid

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.conftest import make_settings, png_bytes, wait_ready


@pytest.fixture(scope="module")
def rc(tmp_path_factory):
    settings = make_settings(data_dir=tmp_path_factory.mktemp("rest"), max_jobs_per_client=2, workers=1,
                             max_tensor_rows=64, tensor_chunk_pixels=20 * 784)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture(autouse=True)
def idle(rc):
    """Each test starts with no job queued or running (the per-client cap here is small)."""
    t0 = time.time()
    while any(j["status"] in ("queued", "running", "paused") for j in rc.get("/api/v1/jobs?limit=200").json()["jobs"]):
        assert time.time() - t0 < 60, "jobs from an earlier test are still running"
        time.sleep(0.05)
    yield


def npy(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def post_tensor(c, body: bytes, query: str = "model=lenet-mnist&top_k=3", kind: str = "application/x-npy"):
    return c.post(f"/api/v1/score/tensor?{query}", content=body, headers={"content-type": kind})


# -- POST /api/v1/score/tensor -------------------------------------------------------------------

def test_tensor_scores_each_row_in_order_like_the_png_path(rc, mnist_test):
    x, y = mnist_test
    rows = (x[:50] * 255).round().to(torch.uint8).numpy()  # 50 rows: three forward chunks of 20, 20, 10
    r = post_tensor(rc, npy(rows))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["model"] == "lenet-mnist" and len(got["results"]) == 50
    assert [res["filename"] for res in got["results"]] == [f"row-{i}" for i in range(50)]
    assert all(len(res["top"]) == 3 for res in got["results"])
    # Real digits, classified right: the rows are not shuffled between chunks.
    correct = sum(res["top"][0]["index"] == int(label) for res, label in zip(got["results"], y[:50], strict=True))
    assert correct >= 48
    # The same pixels as a PNG through the multipart endpoint: the same confidence.
    png = png_bytes(Image.fromarray(rows[7, 0]))
    one = rc.post("/api/v1/score", files={"file": ("7.png", png, "image/png")},
                  data={"model": "lenet-mnist", "top_k": "3"}).json()["results"][0]["top"]
    assert one[0]["index"] == got["results"][7]["top"][0]["index"]
    assert abs(one[0]["confidence"] - got["results"][7]["top"][0]["confidence"]) < 1e-4


def test_tensor_takes_fortran_order_and_octet_stream(rc, mnist_test):
    rows = (mnist_test[0][:4] * 255).round().to(torch.uint8).numpy()
    c_order = post_tensor(rc, npy(rows)).json()["results"]
    f_order = post_tensor(rc, npy(np.asfortranarray(rows)), kind="application/octet-stream").json()["results"]
    assert [r["top"] for r in c_order] == [r["top"] for r in f_order]


@pytest.mark.parametrize("body, status, words", [
    (npy(np.zeros((2, 1, 28, 28), np.float32)), 422, "dtype is float32"),
    (npy(np.zeros((2, 3, 28, 28), np.uint8)), 422, "(N, 1, 28, 28)"),
    (npy(np.zeros((1, 28, 28), np.uint8)), 422, "shape is (1, 28, 28)"),
    (npy(np.zeros((0, 1, 28, 28), np.uint8)), 422, "no rows"),
    (npy(np.zeros((65, 1, 28, 28), np.uint8)), 413, "at most 64"),
    (npy(np.array([{"x": 1}], dtype=object), allow_pickle=True), 422, "pickled"),
    (npy(np.zeros((2, 1, 28, 28), np.uint8))[:-5], 400, "needs 1568"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': os.system('x')}", 400, "header"),
    (b"not an array at all", 400, "not a NumPy .npy file"),
])
def test_tensor_refuses_bad_arrays_naming_the_problem(rc, body, status, words):
    r = post_tensor(rc, body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and r.json()["field"] == "body"


def test_tensor_refuses_wrong_type_model_and_top_k(rc):
    body = npy(np.zeros((1, 1, 28, 28), np.uint8))
    assert post_tensor(rc, body, kind="image/png").status_code == 415
    assert post_tensor(rc, body, "model=nope").status_code == 404
    assert post_tensor(rc, body, "model=lenet-mnist&top_k=11").json()["field"] == "top_k"
    assert post_tensor(rc, body, "model=efficientnet-lite0-imagenet").json()["detail"].endswith(
        "(N, 3, 224, 224) (N images, channels first, at the model's input size)")


def test_tensor_a_body_over_its_size_is_refused_before_it_is_read(rc):
    big = npy(np.zeros((64, 1, 28, 28), np.uint8)) + b"\x00" * 10_000
    r = post_tensor(rc, big)
    assert r.status_code == 413 and "fit in" in r.json()["detail"]


# -- Idempotency-Key ---------------------------------------------------------------------------------

JOB = {"model": "lenet-mnist", "method": "map-elites", "targets": [1, 2], "generations": 2, "seed": 3}


def test_job_retry_with_the_same_key_gets_the_same_job_and_token(rc):
    key = str(uuid.uuid4())
    first = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
    again = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["control_token"] == first.json()["control_token"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    listed = rc.get("/api/v1/jobs?limit=200").json()["jobs"]
    assert sum(j["id"] == first.json()["id"] for j in listed) == 1
    # A REST client without cookies, retrying from its address: the same job, and its token works.
    if True:  # a second client on the same app (no `with`: that would run the app's lifespan again)
        bare = TestClient(rc.app)
        k2 = str(uuid.uuid4())
        a = bare.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": k2})
        bare.cookies.clear()
        b = bare.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": f'"{k2}"'})  # as an sf-string
        assert a.status_code == b.status_code == 201 and a.json()["id"] == b.json()["id"]
        bare.cookies.clear()
        r = bare.post(f"/api/v1/jobs/{a.json()['id']}/cancel",
                      headers={"Authorization": f"Bearer {b.json()['control_token']}"})
        assert r.status_code in (200, 409), r.text  # 409: it had already finished


def test_same_key_different_body_is_409_and_a_new_key_makes_a_new_job(rc):
    key = str(uuid.uuid4())
    first = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key}).json()
    other = rc.post("/api/v1/jobs", json={**JOB, "seed": 4}, headers={"Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    fresh = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert fresh.status_code == 201 and fresh.json()["id"] != first["id"]


def test_a_refused_request_frees_its_key(rc):
    key = str(uuid.uuid4())
    bad = rc.post("/api/v1/jobs", json={**JOB, "model": "nope"}, headers={"Idempotency-Key": key})
    assert bad.status_code == 404
    assert rc.post("/api/v1/jobs", json={**JOB, "model": "nope"}, headers={"Idempotency-Key": key}).status_code == 404
    # Nothing was made: the client may fix its request and send it with the same key.
    fixed = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
    assert fixed.status_code == 201
    assert rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key}).json()["id"] == fixed.json()["id"]


def test_keys_belong_to_their_client(rc):
    key = str(uuid.uuid4())
    mine = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key}).json()
    if True:
        stranger = TestClient(rc.app)
        stranger.get("/healthz")  # a browser of its own (signed cookie)
        theirs = stranger.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
        assert theirs.status_code in (201, 429) and theirs.json().get("id") != mine["id"]


@pytest.mark.parametrize("key", ["", "x" * 300, "two words", "tab\there"])
def test_bad_keys_are_422(rc, key):
    r = rc.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key"


def test_upload_retry_with_the_same_key_stores_it_once(rc, mnist_test):
    png = png_bytes(Image.fromarray((mnist_test[0][0, 0].numpy() * 255).astype(np.uint8)))
    key = str(uuid.uuid4())
    a = rc.post("/api/v1/uploads", files={"file": ("a.png", png, "image/png")}, headers={"Idempotency-Key": key})
    b = rc.post("/api/v1/uploads", files={"file": ("a.png", png, "image/png")}, headers={"Idempotency-Key": key})
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    assert b.headers["Idempotent-Replayed"] == "true"
    other = rc.post("/api/v1/uploads", files={"file": ("b.png", png + b"\x00", "image/png")},
                    headers={"Idempotency-Key": key})
    assert other.status_code == 409


# -- caching ---------------------------------------------------------------------------------------

def wait_done(c, job_id: str, timeout: float = 120) -> dict:
    t0 = time.time()
    while True:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "cancelled", "failed") and "grid" in job["links"]:
            return job
        assert time.time() - t0 < timeout, job["status"]
        time.sleep(0.05)


def test_links_name_files_only_once_they_exist_and_finished_files_are_cached(rc):
    made = rc.post("/api/v1/jobs", json={**JOB, "generations": 400, "params": {"stop_at": None}})
    assert made.status_code == 201
    links = made.json()["links"]
    assert "grid" not in links and "summary" not in links  # not written yet
    early = rc.get(f"/api/v1/jobs/{made.json()['id']}/summary.json")
    assert early.status_code in (409, 200)  # 409 while it runs (200 only if it already ended)
    job = wait_done(rc, made.json()["id"])
    for key in ("grid", "curve", "summary"):
        url = job["links"][key]
        first = rc.get(url)
        assert first.status_code == 200
        tag = first.headers["ETag"]
        assert tag.startswith('"') and not tag.startswith("W/")  # strong
        assert "immutable" in first.headers["Cache-Control"] and "max-age=31536000" in first.headers["Cache-Control"]
        again = rc.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == tag
        assert rc.get(url, headers={"If-None-Match": f'W/{tag}, "other"'}).status_code == 304
        assert rc.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200
    image = rc.get(job["targets"][0]["image"].split("?")[0])
    assert image.status_code == 200 and "immutable" in image.headers["Cache-Control"]
    assert rc.get(image.url.path, headers={"If-None-Match": image.headers["ETag"]}).status_code == 304
    assert rc.get(f"/api/v1/jobs/{job['id']}/input.png").status_code == 404  # not an adversarial job


def test_a_file_deleted_while_it_is_sent_still_arrives_whole(tmp_path):
    """A stranger downloading a grid while its owner deletes the job used to get the headers and a
    cut-off body (found by a longer stateful fuzz run): the file is now sent from a handle opened
    before the response starts, so the bytes promised by Content-Length all arrive."""
    import asyncio

    from starlette.requests import Request

    from app.web.caching import immutable_file

    path = tmp_path / "grid.png"
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    response = immutable_file(Request({"type": "http", "method": "GET", "headers": []}), path, "image/png")
    path.unlink()  # the job is deleted after the answer was chosen, before its body is read

    async def body() -> bytes:
        return b"".join([chunk async for chunk in response.body_iterator])

    assert int(response.headers["Content-Length"]) == len(data)
    assert asyncio.run(body()) == data
    with pytest.raises(FileNotFoundError):  # gone before: the routes answer 404 (or 409 while it runs)
        immutable_file(Request({"type": "http", "method": "GET", "headers": []}), path, "image/png")


def test_live_images_are_never_cached_stale(rc):
    made = rc.post("/api/v1/jobs", json={**JOB, "targets": "all", "generations": 5000,
                                         "params": {"stop_at": None}}).json()
    try:
        t0 = time.time()
        while True:
            job = rc.get(f"/api/v1/jobs/{made['id']}").json()
            if job["status"] == "running" and job["targets"] and job["targets"][0]["image"]:
                break
            assert time.time() - t0 < 60
            time.sleep(0.02)
        url = job["targets"][0]["image"]
        plain = rc.get(url.split("?")[0])
        assert plain.status_code == 200 and plain.headers["Cache-Control"] == "no-cache" and "ETag" not in plain.headers
        stale = rc.get(url.split("?")[0] + "?v=0")
        if stale.status_code == 200 and job["status"] == "running":
            current = rc.get(f"/api/v1/jobs/{made['id']}").json()["targets"][0]["image"]
            if not current.endswith("v=0"):
                assert stale.headers["Cache-Control"] == "no-cache"
    finally:
        rc.post(f"/api/v1/jobs/{made['id']}/cancel")


# -- 429, 405 --------------------------------------------------------------------------------------

def test_rate_limited_answers_carry_retry_after_and_ratelimit_headers(rc):
    ids = []
    try:
        for _ in range(4):
            r = rc.post("/api/v1/jobs", json={**JOB, "generations": 5000, "params": {"stop_at": None}})
            if r.status_code == 201:
                ids.append(r.json()["id"])
            else:
                break
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) > 0
        cap = rc.app.state.lab.settings.max_jobs_per_client
        assert r.headers["RateLimit-Policy"] == f'"jobs-per-client";q={cap};qu="concurrent-requests"'
        assert r.headers["RateLimit"] == f'"jobs-per-client";r=0;t={r.headers["Retry-After"]}'
    finally:
        for job_id in ids:
            rc.post(f"/api/v1/jobs/{job_id}/cancel")


@pytest.mark.parametrize("method, path, allow", [
    ("OPTIONS", "/api/v1/jobs", "GET, POST"),
    ("PUT", "/api/v1/jobs/AbCdEfGh12345678", "GET, DELETE"),
    ("GET", "/api/v1/jobs/AbCdEfGh12345678/cancel", "POST"),
    ("POST", "/api/v1/jobs/AbCdEfGh12345678/events", "GET"),
    ("POST", "/api/v1/jobs/AbCdEfGh12345678/grid.png", "GET"),
    ("GET", "/api/v1/experiments/AbCdEfGh12345678/cancel", "POST"),
    ("DELETE", "/api/v1/score/tensor", "POST"),
])
def test_405_lists_every_method_the_path_serves(rc, method, path, allow):
    r = rc.request(method, path)
    assert r.status_code == 405 and r.headers["Allow"] == allow and r.json()["error"] == "method_not_allowed"


def test_a_finished_jobs_view_revalidates_with_its_etag(rc):
    made = rc.post("/api/v1/jobs", json=JOB).json()
    job = wait_done(rc, made["id"])
    first = rc.get(f"/api/v1/jobs/{job['id']}")
    tag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache" and first.json()["status"] == "done"
    again = rc.get(f"/api/v1/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.headers["ETag"] == tag


def test_tensor_requests_past_the_concurrency_cap_get_429_with_headers(rc):
    import asyncio

    slots = rc.app.state.tensor_slots
    rc.app.state.tensor_slots = asyncio.Semaphore(0)  # as if every slot were taken by other arrays
    try:
        r = post_tensor(rc, npy(np.zeros((1, 1, 28, 28), np.uint8)))
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        cap = rc.app.state.lab.settings.tensor_concurrency
        assert r.headers["RateLimit-Policy"] == f'"tensor-requests";q={cap};qu="concurrent-requests"'
    finally:
        rc.app.state.tensor_slots = slots
    assert post_tensor(rc, npy(np.zeros((1, 1, 28, 28), np.uint8))).status_code == 200


def test_job_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """The download race (see test_a_file_deleted_while_it_is_sent_still_arrives_whole) had a second
    cause: grid.png was read while the job was still writing it. Files now appear by rename, so a
    reader sees the old file or the new one, and a write that fails leaves the old one and no debris."""
    from app.files import write_whole

    path = tmp_path / "grid.png"
    write_whole(path, b"first")
    inode = path.stat().st_ino
    write_whole(path, b"second, longer")
    assert path.read_bytes() == b"second, longer" and path.stat().st_ino != inode  # replaced, not rewritten

    def refused(src, dst):  # the new bytes are on disk under the temporary name; the rename fails
        raise OSError("disk full")

    monkeypatch.setattr("app.files.os.replace", refused)
    with pytest.raises(OSError, match="disk full"):
        write_whole(path, b"third")
    assert path.read_bytes() == b"second, longer"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
