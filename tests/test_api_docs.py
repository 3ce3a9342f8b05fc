"""The API documents itself: every operation has a summary, a description, examples and its errors
in the JSON shape the app really sends; /docs and /redoc work offline under their CSP; the Python
clients in docs/api.md work against the server."""

from __future__ import annotations

import importlib.util
import re

import pytest
from PIL import Image

from app.settings import ROOT

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture(scope="module")
def spec(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield f"{method.upper()} {path}", op


def test_every_operation_has_summary_description_and_examples(spec):
    ops = dict(operations(spec))
    assert len(ops) >= 16
    for name, op in ops.items():
        assert op.get("summary"), f"{name}: no summary"
        assert len(op.get("description", "")) > 20, f"{name}: no description"
        ok = [c for c in op["responses"] if c.startswith("2")]
        assert ok, f"{name}: no 2xx response"
        for code in ok:
            content = op["responses"][code].get("content", {})
            assert content or code == "204", f"{name} {code}: no content type"
            for ctype, body in content.items():
                if ctype in ("application/json", "text/event-stream"):
                    assert "example" in body or "examples" in body, f"{name} {code} {ctype}: no example"
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            assert body.get("examples") or body.get("example"), f"{name}: request body without examples"


def test_errors_are_documented_with_the_shape_the_app_sends(spec, client):
    assert "HTTPValidationError" not in spec["components"]["schemas"], "FastAPI's default 422 shape is not ours"
    shape = spec["components"]["schemas"]["ErrorBody"]
    assert {"error", "detail"} <= set(shape["required"])
    for name, op in operations(spec):
        errors = {c: r for c, r in op["responses"].items() if c[0] in "45"}
        assert errors or name.startswith("GET /healthz"), f"{name}: no error documented"
        for code, resp in errors.items():
            if name == "GET /readyz":  # 503 there is the readiness body, by design
                continue
            schema = resp["content"]["application/json"]["schema"]
            assert schema.get("$ref") == ERROR_REF, f"{name} {code}: {schema}"
            example = resp["content"]["application/json"]["example"]
            assert {"error", "detail"} <= set(example), f"{name} {code}: example {example}"
    # ...and the app really answers in that shape
    r = client.post("/api/v1/jobs", json={"generations": -1})
    assert r.status_code == 422 and set(r.json()) <= set(shape["properties"]) and r.json()["field"] == "generations"
    r = client.get("/api/v1/jobs/NoSuchJob0000000")
    assert r.status_code == 404 and set(r.json()) <= set(shape["properties"])


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_work_offline_under_their_csp(client, path):
    r = client.get(path)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    assert script_src.strip() == "'self'", csp  # no inline or remote code
    assert "https:" not in csp and "http:" not in csp
    html = r.text
    assert "cdn" not in html.lower() and "https://" not in html and "<script>" not in html
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert len(assets) >= 3
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    # the app's own pages keep the strict policy
    assert "unsafe-inline" not in client.get("/").headers["content-security-policy"]


def _example(name: str):
    path = ROOT / "docs" / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path.read_text()


def test_api_md_shows_the_tested_examples():
    md = (ROOT / "docs" / "api.md").read_text()
    for name in ("score_folder", "follow_job"):
        assert _example(name)[1] in md, f"docs/api.md is out of date with docs/examples/{name}.py"


def test_score_folder_example(client, mnist_test, tmp_path):
    x, y = mnist_test
    for i in range(5):
        Image.fromarray((x[i, 0].numpy() * 255).round().astype("uint8")).save(tmp_path / f"{i}-digit.png")
    (tmp_path / "notes.txt").write_text("not an image, skipped by the script")
    mod, _ = _example("score_folder")
    got = mod.score_folder(client, tmp_path, per_request=2)
    assert sorted(got) == [f"{i}-digit.png" for i in range(5)]
    assert [int(got[f"{i}-digit.png"][0]["label"]) for i in range(5)] == y[:5].tolist()


def test_follow_job_example(client):
    mod, _ = _example("follow_job")
    frames: list[str] = []
    final = mod.run_job(client, {"model": "lenet-mnist", "method": "map-elites", "targets": [1, 7],
                                 "generations": 30, "seed": 3}, frames.append)
    assert final["status"] == "done" and final["progress"]["step"] == 30
    assert [t["label"] for t in final["targets"]] == ["1", "7"]
    assert client.get(final["links"]["grid"]).headers["content-type"] == "image/png"
