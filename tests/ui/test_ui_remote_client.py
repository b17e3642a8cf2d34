"""ui/remote.py's error paths, against an httpx MockTransport standing in for server/app.py's routes.

The happy path runs against a real `langgraph dev` in test_ui_remote.py; here each way the server can
refuse or fail must become the clinician-readable message the app shows, never a traceback.
"""

from __future__ import annotations

import io
import socket

import httpx
import numpy as np
import pytest

from cxr_agent.settings import Settings
from tools.ingestion.study import StudyError
from ui import session as S
from ui.remote import GraphServerUnavailable, RemoteAgent, connect

URL = "http://graph.localhost:2024"  # loopback by name: plain http is allowed there


def agent_with(handler, calls: list | None = None) -> RemoteAgent:
    def record(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(request)
        return handler(request)

    http = httpx.Client(base_url=URL, transport=httpx.MockTransport(record))
    return RemoteAgent(Settings(graph_url=URL), http=http)


def test_a_refused_upload_shows_the_servers_reason():
    agent = agent_with(lambda r: httpx.Response(422, json={"detail": "not a PNG, JPEG or DICOM file",
                                                           "error": "UnsupportedFormat"}))
    state: dict = {}
    S.init_session(state)
    error = S.ingest_upload(state, "x.bin", b"junk", loader=agent.load_study)
    assert error == "The uploaded file was not loaded: not a PNG, JPEG or DICOM file"
    assert state[S.K_STUDY] is None and state[S.K_PENDING] is None


def test_an_unreachable_server_is_named_in_the_message():
    with socket.socket() as s:  # a port nothing listens on: a real connection refusal
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(graph_url=f"http://127.0.0.1:{port}")
    with pytest.raises(GraphServerUnavailable, match=f"127.0.0.1:{port}.*ConnectError"):
        connect(settings)
    with pytest.raises(StudyError, match="did not answer"):
        RemoteAgent(settings).upload(b"bytes", "x.png")


def test_a_server_error_is_not_blamed_on_the_file():
    agent = agent_with(lambda r: httpx.Response(500, text="Internal Server Error"))
    with pytest.raises(GraphServerUnavailable, match="HTTP 500"):
        agent.upload(b"bytes", "x.png")


def test_a_study_the_server_lacks_is_not_sent():
    agent = agent_with(lambda r: httpx.Response(404, json={"detail": "no stored study"}))
    study = type("StudyLike", (), {"id": "f" * 64})()
    state = {S.K_PENDING: study.id, S.K_STUDY: study}
    with pytest.raises(S.StudyNotSaved, match="GraphServerUnavailable"):
        S.take_study_inputs(state, agent.studies)
    assert state[S.K_PENDING] == study.id  # still queued for the next turn


def test_heatmaps_are_fetched_once_and_a_missing_one_is_none():
    heat = (np.arange(64 * 48) % 255).astype(np.uint8).reshape(64, 48)
    buf = io.BytesIO()
    np.save(buf, heat)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/cxr/artifacts"
        if request.url.params["uri"] == "/srv/a/heat.npy":
            return httpx.Response(200, content=buf.getvalue())
        return httpx.Response(404, json={"detail": "no such artifact"})

    calls: list = []
    agent = agent_with(handler, calls)
    assert np.array_equal(agent.load_heatmap("/srv/a/heat.npy"), heat)
    assert np.array_equal(agent.load_heatmap("/srv/a/heat.npy"), heat)
    assert len(calls) == 1  # the page redraws on every click: cached
    assert agent.load_heatmap("/srv/a/gone.npy") is None


def test_no_url_is_a_clear_error():
    with pytest.raises(ValueError, match="CXR_AGENT_GRAPH_URL"):
        RemoteAgent(Settings(graph_url=None))
