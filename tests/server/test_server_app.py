"""server/app.py in-process (Starlette TestClient): upload refusals, artifact confinement, the
run-input guard. The real server around it is exercised by test_langgraph_server.py."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import server.app as srv
from cxr_agent.settings import get_settings


@pytest.fixture
def client():
    return TestClient(srv.create_app())


def test_upload_errors_are_precise(client, monkeypatch):
    assert client.post("/cxr/studies", content=b"").status_code == 400
    r = client.post("/cxr/studies", content=b"GIF89a" + b"\0" * 64, params={"filename": "x.gif"})
    assert r.status_code == 422 and r.json()["error"] == "UnsupportedFormat"
    monkeypatch.setattr(srv, "MAX_UPLOAD_BYTES", 10)
    r = client.post("/cxr/studies", content=b"x" * 11)
    assert r.status_code == 413 and "10 byte limit" in r.json()["detail"]


def test_upload_then_lookup(client, cxr_image):
    r = client.post("/cxr/studies", content=cxr_image.read_bytes(), params={"filename": cxr_image.name})
    assert r.status_code == 201
    sid = r.json()["study_id"]
    assert client.get(f"/cxr/studies/{sid}").json()["width"] == r.json()["width"]
    # stored through the graph's ingestion path (tools.ingestion.intake): decoded once, kept in its cache, and
    # readable by any graph on the same data dir
    from tools.ingestion.intake import Studies

    assert srv._studies(get_settings()).cached[-1] == sid
    assert Studies(get_settings()).get(sid).width == r.json()["width"]
    assert client.get(f"/cxr/studies/{'0' * 64}").status_code == 404
    assert client.get("/cxr/studies/not-an-id").status_code == 404


def test_artifacts_are_confined_to_the_artifacts_dir(client):
    root = get_settings().artifacts_dir
    (root / "abc").mkdir(parents=True, exist_ok=True)
    np.save(root / "abc" / "heat.npy", np.ones((4, 3), np.float16))
    ok = client.get("/cxr/artifacts", params={"uri": str(root / "abc" / "heat.npy")})
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/x-npy"
    assert client.get("/cxr/artifacts", params={"uri": "abc/heat.npy"}).status_code == 200
    for uri in ("../../../../etc/passwd", "/etc/passwd", str(root / "abc" / "missing.npy")):
        assert client.get("/cxr/artifacts", params={"uri": uri}).status_code == 404, uri
    assert client.get("/cxr/artifacts").status_code == 400


@pytest.mark.parametrize("path", ["/threads/t1/runs", "/threads/t1/runs/stream", "/threads/t1/runs/wait",
                                  "/runs", "/runs/stream", "/runs/wait"])
def test_run_input_with_image_is_refused_and_clean_input_passes(path):
    seen: list[bytes] = []

    async def echo(request):
        seen.append(await request.body())
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route(path, echo, methods=["POST"])])
    guarded = TestClient(srv.RefuseRawImageInput(app))
    bad = guarded.post(path, json={"assistant_id": "cxr_agent", "input": {"image": "AAAA", "messages": []}})
    assert bad.status_code == 422 and "image" in bad.json()["detail"] and not seen
    good = guarded.post(path, json={"assistant_id": "cxr_agent", "input": {"study_id": "ab", "messages": []}})
    assert good.status_code == 200 and b'"study_id"' in seen[0]  # the body reached the route intact


def test_batch_runs_and_other_routes():
    assert srv._raw_keys(b'[{"input": {"study_id": "x"}}, {"input": {"image_name": "p.dcm"}}]') == ["image_name"]
    assert srv._raw_keys(b"not json") == [] and srv._raw_keys(b'{"input": {"image": null}}') == []
    assert not srv._RUN_PATH.match("/threads/t1/state") and srv._RUN_PATH.match("/runs/batch")
    assert srv._RUN_PATH.match("/runs/crons") and srv._RUN_PATH.match("/threads/t1/runs/crons")  # scheduled runs
