"""The production server (``python -m server.standalone``) on a real Postgres: the same graph, routes and auth
as under ``langgraph dev``, through ``langgraph_sdk``, through ``RemoteGraph`` (the remote UI's client) and
across a restart; two users isolated, the service identity over both; turns of two threads at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prod_server import prod_server

from server.identities import hash_token

pytestmark = pytest.mark.timeout(420)

SERVICE = "service-token-for-the-production-server"
TOKENS = {"alice": "alice-token-prod-0123456789", "bob": "bob-token-prod-0123456789"}
REPORT = [{"role": "user", "content": "Write a report"}]
FINDING = [{"role": "user", "content": "Is there cardiomegaly?"}]
UI_DRIVER = Path(__file__).with_name("prod_ui_driver.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_server):
    import psycopg

    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "prod_server"')
    work = tmp_path_factory.mktemp("prod-server")
    users = work / "users.toml"
    users.write_text("".join(f'[[user]]\nid = "{uid}"\nrole = "user"\ntoken_sha256 = "{hash_token(t)}"\n'
                             for uid, t in TOKENS.items()))
    users.chmod(0o600)
    env = {"CXR_AGENT_SERVER_TOKEN": SERVICE, "CXR_AGENT_SERVER_USERS": str(users),
           "CXR_AGENT_SERVER_AUTH_DISABLED": "false", "CXR_AGENT_VERIFY_CONFLICTS": "false"}
    with prod_server(work, postgres_server.url.rsplit("/", 1)[0] + "/prod_server", env, jobs=3) as srv:
        yield srv


def _token(who: str) -> str:
    return SERVICE if who == "service" else TOKENS[who]


def _sdk(server, who: str):
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {_token(who)}"})


def _http(server, who: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {_token(who)}"}, timeout=60)


def _upload(server, who: str, path) -> str:
    with _http(server, who) as http:
        r = http.post("/cxr/studies", content=path.read_bytes(), headers={"x-cxr-file-type": path.suffix[1:]})
    assert r.status_code == 201, r.text
    return r.json()["study_id"]


@pytest.fixture(scope="module")
def alice_report(server, cxr_images):
    """Alice uploads a study and streams a report turn through langgraph_sdk."""
    client = _sdk(server, "alice")
    sid = _upload(server, "alice", cxr_images[0])
    tid = client.threads.create()["thread_id"]
    parts = list(client.runs.stream(tid, "cxr_agent", stream_mode=["custom", "values"],
                                    input={"messages": REPORT, "study_id": sid}))
    return {"thread": tid, "study": sid, "parts": parts}


def test_a_report_and_a_follow_up_through_langgraph_sdk(server, alice_report):
    parts = alice_report["parts"]
    assert parts[0].event == "metadata" and parts[0].data["run_id"]
    kinds = [p.data["event"] for p in parts if p.event == "custom"]
    assert kinds[0] == "route" and "tool_start" in kinds and kinds[-1] == "reply"
    values = [p.data for p in parts if p.event == "values"][-1]
    reply = values["messages"][-1]
    assert reply["type"] == "ai" and reply["additional_kwargs"]["cxr"]["study_id"] == alice_report["study"]
    client = _sdk(server, "alice")
    out = client.runs.wait(alice_report["thread"], "cxr_agent", input={"messages": FINDING})
    assert len(out["messages"]) == 4 and out["study_id"] == alice_report["study"]  # the follow-up kept the study
    assert "cardiomegaly" in out["messages"][-1]["content"].lower()
    state = client.threads.get_state(alice_report["thread"])
    assert state["values"]["messages"][-1] == out["messages"][-1] and state["checkpoint"]["checkpoint_id"]
    runs = client.runs.list(alice_report["thread"])
    assert [r["status"] for r in runs] == ["success", "success"]
    assert client.assistants.search()[0]["graph_id"] == "cxr_agent"


def test_a_report_and_a_follow_up_through_remote_graph(server, cxr_images):
    """The remote UI's client (ui/remote.py: RemoteGraph over langgraph_sdk, uploads, conversations, forget)."""
    from cxr_agent.settings import Settings
    from ui.remote import RemoteAgent, server_thread_id

    agent = RemoteAgent(Settings(graph_url=server.url, server_token=TOKENS["bob"], model_profile="tiny"))
    study = agent.load_study(cxr_images[1].read_bytes(), filename=cxr_images[1].name)
    ui_thread = f"ui-{uuid.uuid4().hex}"  # the app's own thread ids
    config = {"configurable": {"thread_id": ui_thread}}
    events = [e for kind, e in agent.stream({"messages": REPORT, "study_id": study.id}, config) if kind == "custom"]
    assert events[0]["event"] == "route" and events[-1]["event"] == "reply"
    events = [e for kind, e in agent.stream({"messages": FINDING}, config) if kind == "custom"]
    assert events[-1]["event"] == "reply" and "cardiomegaly" in events[-1]["text"].lower()
    snapshot = agent.get_state(config)
    assert len(snapshot.values["messages"]) == 4 and snapshot.values["study_id"] == study.id
    assert agent.conversations() == [ui_thread]  # only Bob's own
    assert agent.health()["caller"] == {"id": "bob", "sees_all": False}
    uri = snapshot.values["messages"][-1]["additional_kwargs"]["cxr"]["heatmaps"][0]["uri"]
    assert agent.load_heatmap(uri) is not None
    agent.forget(ui_thread)  # DELETE /cxr/threads: the thread, then its study and heatmaps
    assert agent.conversations() == []
    with _http(server, "service") as http:
        assert http.get(f"/cxr/studies/{study.id}").status_code == 404
    assert not server.data_dir.joinpath("artifacts", study.id).exists()
    assert server_thread_id(ui_thread) not in {t["thread_id"] for t in _sdk(server, "service").threads.search()}


def test_a_report_and_a_follow_up_from_the_remote_ui(server, cxr_images, tmp_path):
    """The Streamlit app itself (AppTest, in its own interpreter) with CXR_AGENT_GRAPH_URL on this server."""
    from ui.remote import server_thread_id

    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_AGENT_")}
    env.update({"CXR_AGENT_GRAPH_URL": server.url, "CXR_AGENT_SERVER_TOKEN": TOKENS["alice"],
                "CXR_AGENT_DATA_DIR": str(tmp_path), "CXR_AGENT_MODEL_PROFILE": "tiny", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    proc = subprocess.run([sys.executable, str(UI_DRIVER), str(cxr_images[5])], env=env, capture_output=True,
                          text=True, timeout=400, cwd=UI_DRIVER.parents[2])
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["exceptions"] and out["heavy_modules"] == []  # a pure client: no model in the UI
    assert [t["error"] for t in out["turns"]] == [None, None]
    assert all(t["reply"] and t["study_id"] == out["study_id"] for t in out["turns"])
    assert "cardiomegaly" in out["turns"][1]["reply"].lower()
    values = _sdk(server, "alice").threads.get_state(server_thread_id(out["thread"]))["values"]
    assert len(values["messages"]) == 4 and values["study_id"] == out["study_id"]  # kept on the server


def test_two_users_are_isolated_and_the_service_sees_both(server, alice_report, cxr_images):
    from langgraph_sdk.errors import NotFoundError

    bob = _sdk(server, "bob")
    bob_study = _upload(server, "bob", cxr_images[2])
    bob_thread = bob.threads.create(metadata={"owner": "alice"})["thread_id"]  # cannot pose as someone else
    assert bob.threads.get(bob_thread)["metadata"]["owner"] == "bob"
    theirs = alice_report["thread"]
    assert theirs not in [t["thread_id"] for t in bob.threads.search(limit=100)]
    for attempt in (lambda: bob.threads.get(theirs), lambda: bob.threads.get_state(theirs),
                    lambda: bob.threads.get_history(theirs), lambda: bob.runs.list(theirs),
                    lambda: bob.threads.update(theirs, metadata={"owner": "bob"}),
                    lambda: bob.threads.delete(theirs)):
        with pytest.raises(NotFoundError):
            attempt()
    with pytest.raises(httpx.HTTPStatusError) as refused:
        bob.runs.wait(theirs, "cxr_agent", input={"messages": FINDING})
    assert refused.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as refused:  # knowing Alice's pixel hash opens nothing
        bob.runs.wait(bob_thread, "cxr_agent", input={"messages": REPORT, "study_id": alice_report["study"]})
    assert refused.value.response.status_code == 403
    values = [p.data for p in alice_report["parts"] if p.event == "values"][-1]
    heatmap = values["messages"][-1]["additional_kwargs"]["cxr"]["heatmaps"][0]["uri"]
    with _http(server, "bob") as http:
        assert http.get(f"/cxr/studies/{alice_report['study']}").status_code == 404
        assert http.get("/cxr/artifacts", params={"uri": heatmap}).status_code == 404
        assert http.get(f"/cxr/studies/{bob_study}").status_code == 200
        assert http.delete(f"/cxr/threads/{theirs}").status_code == 404
    with _http(server, "alice") as http:
        assert http.get("/cxr/artifacts", params={"uri": heatmap}).status_code == 200
        assert http.get("/metrics", params={"format": "json"}).status_code == 200
        assert http.get("/metrics", params={"format": "json", "heap": "1"}).status_code == 403  # service only
    assert httpx.post(f"{server.url}/threads/search", json={}).status_code == 401  # no identity, no access
    service = _sdk(server, "service")
    everyone = {t["thread_id"] for t in service.threads.search(limit=100)}
    assert {theirs, bob_thread} <= everyone
    with _http(server, "service") as http:
        assert http.delete(f"/cxr/threads/{bob_thread}").status_code == 200  # forget, as retention does
    assert bob_thread not in {t["thread_id"] for t in service.threads.search(limit=100)}
    assert service.threads.get(theirs)["metadata"]["owner"] == "alice"


def test_two_threads_turns_run_at_once_and_one_threads_runs_queue(server, cxr_images):
    from langgraph_sdk.errors import ConflictError

    client = _sdk(server, "alice")
    threads = []
    for image in cxr_images[3:5]:
        sid = _upload(server, "alice", image)
        threads.append((client.threads.create()["thread_id"], sid))
    started = [client.runs.create(t, "cxr_agent", input={"messages": FINDING, "study_id": sid}) for t, sid in threads]
    first_thread = threads[0][0]
    with pytest.raises(ConflictError):  # one at a time per thread: "reject" refuses while one is on
        client.runs.create(first_thread, "cxr_agent", input={"messages": FINDING}, multitask_strategy="reject")
    queued = client.runs.create(first_thread, "cxr_agent", input={"messages": [{"role": "user", "content": "Why?"}]},
                                multitask_strategy="enqueue")
    dropped = client.runs.create(first_thread, "cxr_agent", input={"messages": REPORT})
    client.runs.cancel(first_thread, dropped["run_id"])
    watched = [*started, queued]
    most_at_once, statuses = 0, {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        statuses = {r["run_id"]: client.runs.get(r["thread_id"], r["run_id"])["status"] for r in watched}
        most_at_once = max(most_at_once, sum(s == "running" for s in statuses.values()))
        if all(s not in ("pending", "running") for s in statuses.values()):
            break
        time.sleep(0.02)
    assert set(statuses.values()) == {"success"}, statuses
    assert most_at_once >= 2  # the two threads' turns overlapped
    assert client.runs.get(first_thread, dropped["run_id"])["status"] == "interrupted"
    messages = client.threads.get_state(first_thread)["values"]["messages"]
    assert client.runs.join(first_thread, queued["run_id"])["messages"] == messages  # the thread's values after it
    assert [m["content"] for m in messages if m["type"] == "human"] == ["Is there cardiomegaly?", "Why?"]  # in turn
    for thread, sid in threads:
        assert client.threads.get_state(thread)["values"]["study_id"] == sid


def test_a_conversation_continues_after_the_server_restarts(server, alice_report):
    client = _sdk(server, "alice")
    before = client.threads.get_state(alice_report["thread"])["values"]["messages"]
    server.restart()
    client = _sdk(server, "alice")
    assert client.threads.get_state(alice_report["thread"])["values"]["messages"] == before
    out = client.runs.wait(alice_report["thread"], "cxr_agent", input={"messages": [{"role": "user", "content": "Why?"}]})
    assert len(out["messages"]) == len(before) + 2 and out["study_id"] == alice_report["study"]
    assert alice_report["thread"] in {t["thread_id"] for t in client.threads.search(limit=100)}
