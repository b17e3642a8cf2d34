"""A graph server with CXR_AGENT_SERVER_TOKEN set (server/auth.py via langgraph.json) answers only its bearers:
LangGraph's own routes and ours, LangGraph Studio's bypass header included; the UI sends the token."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev

pytestmark = pytest.mark.timeout(240)

TOKEN = "s3cret-token-for-the-test-server"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    with langgraph_dev(tmp_path_factory.mktemp("guarded-server"), {"CXR_AGENT_SERVER_TOKEN": TOKEN}) as server:
        yield server


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer not-the-token"},
    {"Authorization": TOKEN},  # no scheme
    {"x-auth-scheme": "langsmith"},  # LangGraph Studio's bypass in `langgraph dev`: turned off
], ids=["none", "wrong", "no-scheme", "studio-bypass"])
def test_every_route_refuses_a_caller_without_the_token(guarded, headers, cxr_images):
    with httpx.Client(base_url=guarded.url, headers=headers, timeout=30) as http:
        answers = {
            "health": http.get("/cxr/health"),
            "upload": http.post("/cxr/studies", params={"filename": "a.png"}, content=cxr_images[0].read_bytes()),
            "study": http.get(f"/cxr/studies/{'0' * 64}"),
            "artifact": http.get("/cxr/artifacts", params={"uri": "x.npy"}),
            "forget": http.delete("/cxr/threads/x"),
            "threads": http.post("/threads/search", json={}),
            "runs": http.post("/runs/wait", json={"assistant_id": "cxr_agent", "input": {"messages": []}}),
        }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 401)
    assert not list(guarded.data_dir.glob("studies/*/*.npy"))  # the refused upload stored nothing
    assert httpx.get(f"{guarded.url}/ok", timeout=10).status_code == 200  # the liveness probe stays open


def test_the_ui_with_the_token_uploads_runs_a_turn_and_deletes(guarded, cxr_images, settings):
    from pydantic import SecretStr

    from ui.remote import connect

    agent = connect(settings.model_copy(update={"graph_url": guarded.url, "server_token": SecretStr(TOKEN)}))
    sid = agent.upload(cxr_images[1].read_bytes(), cxr_images[1].name)["study_id"]
    config = {"configurable": {"thread_id": "guarded-thread"}}
    events = [e for kind, e in agent.stream({"messages": [("user", "Is there cardiomegaly?")], "study_id": sid}, config) if kind == "custom"]
    assert events[-1]["event"] == "reply" and agent.get_state(config).values["study_id"] == sid
    agent.forget("guarded-thread")  # the server's in-process client carries the token too
    assert not list(guarded.data_dir.glob(f"studies/*/{sid}*"))


@pytest.mark.parametrize("token, says", [(None, "no token"), ("wrong", "a wrong token")])
def test_the_ui_without_the_right_token_says_so(guarded, settings, token, says):
    from pydantic import SecretStr

    from ui.remote import GraphServerUnavailable, connect

    over = {"graph_url": guarded.url, "server_token": SecretStr(token) if token else None}
    with pytest.raises(GraphServerUnavailable, match=f"{says}.*CXR_AGENT_SERVER_TOKEN"):
        connect(settings.model_copy(update=over))
