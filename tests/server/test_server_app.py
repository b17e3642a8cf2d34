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


def as_service(app):
    """The app as LangGraph's auth hands it a request from the service identity (CXR_AGENT_SERVER_TOKEN)."""
    from types import SimpleNamespace

    from server.identities import SERVICE

    async def authed(scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "user": SimpleNamespace(identity="cxr-agent-service"),
                     "auth": SimpleNamespace(scopes=[SERVICE])}
        await app(scope, receive, send)

    return authed


@pytest.fixture
def client():
    return TestClient(as_service(srv.create_app()))


def test_upload_errors_are_precise(client, monkeypatch):
    assert client.post("/cxr/studies", content=b"").status_code == 400
    r = client.post("/cxr/studies", content=b"GIF89a" + b"\0" * 64, params={"filename": "x.gif"})
    assert r.status_code == 422 and r.json()["error"] == "UnsupportedFormat"
    monkeypatch.setattr(srv, "MAX_UPLOAD_BYTES", 10)
    assert srv.PRESSURE.bytes == 0
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


def test_batch_runs_and_malformed_bodies():
    assert srv._raw_keys(b'[{"input": {"study_id": "x"}}, {"input": {"image_name": "p.dcm"}}]') == ["image_name"]
    assert srv._raw_keys(b"not json") == [] and srv._raw_keys(b'{"input": {"image": null}}') == []
    assert srv._raw_keys(b"[" * 100_000) == []  # nesting past the parser's limit: the server answers it


@pytest.fixture
def guarded_echo():
    seen: list[bytes] = []

    async def echo(request):
        seen.append(await request.body())
        return JSONResponse({"ok": True})

    paths = ["/threads", "/threads/{tid}/state", "/threads/{tid}/runs/wait", "/runs/batch"]
    app = Starlette(routes=[Route(p, echo, methods=["POST"]) for p in paths])
    return TestClient(srv.RefuseRawImageInput(app)), seen


@pytest.mark.parametrize(("path", "body"), [
    ("/threads/t1/runs/wait", {"assistant_id": "cxr_agent",
                               "command": {"update": {"image": "/etc/hostname"}, "goto": "ingest"}}),
    ("/threads/t1/state", {"values": {"image": "/dev/zero"}, "as_node": "ingest"}),
    ("/threads", {"supersteps": [{"updates": [{"values": {"image_name": "x.dcm"}, "as_node": "ingest"}]}]}),
    ("/runs/batch", [{"assistant_id": "cxr_agent", "input": {"study_id": "a"}},
                     {"assistant_id": "cxr_agent", "input": {"image": "QUJD"}}]),
], ids=["command-update", "update-state", "thread-supersteps", "batch"])
def test_image_keys_are_refused_whatever_the_entry(guarded_echo, path, body):
    client, seen = guarded_echo
    r = client.post(path, json=body)
    assert r.status_code == 422 and r.json()["error"] == "RawImageInput" and "POST /cxr/studies" in r.json()["detail"]
    assert not seen


B64 = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAcCBlCwAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("content", [
    [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": B64}}],
    [{"type": "image", "source_type": "base64", "data": B64.split(",")[1], "mime_type": "image/png"}],
    f"look: {B64}",
    [{"type": "text", "text": f"look: {B64}"}],
], ids=["openai-image-url", "langchain-image", "data-uri-in-text", "data-uri-in-text-part"])
def test_images_inside_messages_are_refused(guarded_echo, content):
    client, seen = guarded_echo
    for body in ({"input": {"messages": [{"role": "user", "content": content}]}},
                 {"command": {"update": {"messages": [["user", content]]}}}):
        r = client.post("/threads/t1/runs/wait", json={"assistant_id": "cxr_agent", **body})
        assert r.status_code == 422 and "messages carry text only" in r.json()["detail"], r.text
    ok = client.post("/threads/t1/runs/wait", json={"assistant_id": "cxr_agent", "input": {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Is there an effusion?"}]}]}})
    assert ok.status_code == 200 and len(seen) == 1


def test_json_bodies_are_capped_from_the_header_and_while_streaming(guarded_echo, settings, monkeypatch):
    client, seen = guarded_echo
    monkeypatch.setattr(srv, "_settings", lambda: settings.model_copy(update={"server_max_run_body_kb": 1}))
    big = {"assistant_id": "cxr_agent", "input": {"messages": [{"role": "user", "content": "x" * 2000}]}}
    r = client.post("/threads/t1/runs/wait", json=big)
    assert r.status_code == 413 and "1024 byte limit" in r.json()["detail"] and not seen

    def chunked():  # no Content-Length: refused once the stream passes the limit
        yield b'{"input": {"messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 100

    r = client.post("/threads/t1/runs/wait", content=chunked())
    assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge" and not seen
    assert client.post("/threads/t1/runs/wait", json={"input": {"study_id": "a"}}).status_code == 200


def test_the_upload_route_is_not_held_to_the_json_cap(client, cxr_image, settings, monkeypatch):
    monkeypatch.setattr(srv, "_settings", lambda: settings.model_copy(update={"server_max_run_body_kb": 1}))
    r = client.post("/cxr/studies", content=cxr_image.read_bytes(), headers={"X-Cxr-File-Type": "png"})
    assert r.status_code == 201, r.text


def test_the_file_name_travels_as_a_type_only():
    from starlette.requests import Request

    def request(query: bytes = b"", headers: list | None = None) -> Request:
        return Request({"type": "http", "method": "POST", "path": "/cxr/studies", "query_string": query,
                        "headers": headers or []})

    assert srv.upload_name(request(headers=[(b"x-cxr-file-type", b"DCM")])) == "upload.dcm"
    assert srv.upload_name(request(b"filename=Doe%5EJane_chest.png")) == "upload.png"  # an older client
    assert srv.upload_name(request(headers=[(b"x-cxr-file-type", b"../../x y")])) is None
    assert srv.upload_name(request()) is None


def test_the_server_does_not_start_without_a_token_unless_told_to_run_open(settings, monkeypatch, caplog):
    from pydantic import SecretStr

    for token in (None, SecretStr(""), SecretStr("   ")):
        monkeypatch.setattr(srv, "_settings", lambda t=token: settings.model_copy(update={"server_token": t}))
        with pytest.raises(srv.ServerAuthMissing, match="CXR_AGENT_SERVER_AUTH_DISABLED=true"), \
                TestClient(srv.create_app()):
            pass
    monkeypatch.setattr(srv, "_settings", lambda: settings.model_copy(update={"server_auth_disabled": True}))
    with TestClient(srv.create_app()) as open_client:
        assert open_client.get("/cxr/health").status_code == 200
    assert "answers anyone" in caplog.text
    monkeypatch.setattr(srv, "_settings", lambda: settings.model_copy(update={"server_token": SecretStr("t0ken")}))
    with TestClient(srv.create_app()) as guarded:
        assert guarded.get("/cxr/health").status_code == 200


def test_langgraph_json_turns_side_doors_off_and_auth_first():
    import json
    from pathlib import Path

    http = json.loads((Path(srv.__file__).parents[1] / "langgraph.json").read_text())["http"]
    assert http["middleware_order"] == "auth_first" and http["enable_custom_route_auth"] is True
    assert http["disable_a2a"] is True and http["disable_mcp"] is True
    assert http["cors"]["allow_origins"] == [] and http["cors"]["allow_credentials"] is False


def test_auth_without_a_token_answers_503_unless_run_open(settings, monkeypatch):
    """Should the start-up check be bypassed, the auth handler still refuses everyone."""
    from langgraph_sdk import Auth
    from pydantic import SecretStr

    import server.auth as auth

    for token in (None, SecretStr("")):
        monkeypatch.setattr(auth, "get_settings", lambda t=token: settings.model_copy(update={"server_token": t}))
        with pytest.raises(Auth.exceptions.HTTPException) as refused:
            auth.identify(None)
        assert refused.value.status_code == 503 and "CXR_AGENT_SERVER_AUTH_DISABLED" in refused.value.detail
    monkeypatch.setattr(auth, "get_settings", lambda: settings.model_copy(update={"server_auth_disabled": True}))
    assert auth.identify(None) is auth.ANONYMOUS
