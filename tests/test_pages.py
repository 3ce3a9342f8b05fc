"""Server-rendered pages, security headers, health endpoints."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.conftest import png_bytes


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and "lenet-mnist" in r.json()["loaded"]


def test_home_lists_models_with_status(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "lenet-mnist" in r.text and "efficientnet-lite0-imagenet" in r.text and "alexnet-imagenet" in r.text


def test_security_headers_everywhere(client):
    for path in ("/", "/api/v1/models", "/healthz", "/nope"):
        r = client.get(path)
        assert "script-src 'self'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff"


def test_score_page_form_and_escaping(client, mnist_test):
    assert client.get("/score").status_code == 200
    x, y = mnist_test
    digit = png_bytes(Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)))
    r = client.post("/score", files={"file": ("<script>alert(1)</script>.png", digit, "image/png")},
                    data={"model": "lenet-mnist"})
    assert r.status_code == 200
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;" in r.text
    assert "7" in r.text and "%" in r.text
    bad = client.post("/score", files={"file": ("x.txt", b"nope", "text/plain")}, data={"model": "lenet-mnist"})
    assert bad.status_code == 415 and "not a readable image" in bad.text


def test_oversized_body_refused_before_reading(client, lab):
    limit = lab.settings.max_upload_bytes * lab.settings.max_files + (1 << 20)
    r = client.post("/api/v1/score", content=b"x", headers={"content-length": str(limit + 1),
                                                             "content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_numbers_in_text_are_read_strictly():
    from app.web.forms import whole_number

    assert [whole_number(t) for t in ("7", " 42 ", "0")] == [7, 42, 0]
    # not plain counts: "²" passes isdigit but int() refuses it, "٣" is no ASCII digit, 5000 digits is past int()
    assert [whole_number(t) for t in ("²", "٣", "-1", "1.5", "", "9" * 5000)] == [None] * 6


def test_openapi_documents_score(client):
    spec = client.get("/openapi.json").json()
    assert "/api/v1/score" in spec["paths"] and "/api/v1/models" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_logistic_regression_explainer_starts_at_the_discussion_numbers(client):
    from app.explain import logistic

    s = logistic.state(0.5)
    assert round(s["p_x"], 4) == 0.0474 and round(s["p_y"], 2) == 0.88 and s["wx"] == -3 and s["wy"] == 2
    r = client.get("/explain/logistic-regression")
    assert r.status_code == 200 and "0.0474" in r.text and "0.8808" in r.text
    assert client.get("/explain/logistic-regression?eps=0").text.count("0.0474") >= 2  # no step: no change
    assert client.get("/explain/logistic-regression?eps=7").status_code == 422
