"""The chat as a client of a LangGraph Server with per-user access (a users file, this app's gateway token
naming the signed-in reader in X-Cxr-User): the sidebar lists only that reader's conversations, also while
one of them has no checkpoint yet; a message sent while a run of the conversation is under way waits in the
server's run queue and is answered after it; the reader's Stop cancels the server's run.

One `langgraph dev` for the module (tests/langgraph_server.py). Its VLM writes 200 tokens per ask so a
report turn is still running when the test acts on it (the test acts on the run's first event, never after
a fixed delay)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
from langgraph_server import LangGraphServer, langgraph_dev
from ui_helpers import APP

from server.identities import hash_token
from tools.stop import STOP_KEY
from ui.remote import RemoteAgent, SignedInUser, server_thread_id

pytestmark = pytest.mark.timeout(300)

GATEWAY = "gateway-token-for-the-ui-day-test"
SERVICE = "service-token-for-the-ui-day-test"
ERIN, FRANK = "erin@hospital.org", "frank@hospital.org"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[LangGraphServer]:
    work = tmp_path_factory.mktemp("langgraph-ui-day")
    users = work / "users.toml"
    users.write_text(f'[[user]]\nid = "ui"\nrole = "gateway"\ntoken_sha256 = "{hash_token(GATEWAY)}"\n')
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_TOKEN": SERVICE, "CXR_AGENT_SERVER_USERS": str(users),
                              "CXR_AGENT_VERIFY_CONFLICTS": "false", "CXR_AGENT_VLM_MAX_NEW_TOKENS": "200"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def app_agent(served: LangGraphServer) -> RemoteAgent:
    """This app's handle on the server, as the app makes it (its gateway token)."""
    from pydantic import SecretStr

    from cxr_agent.settings import Settings
    from ui.remote import connect

    return connect(Settings(model_profile="tiny", graph_url=served.url, server_token=SecretStr(GATEWAY),
                            ui_require_login=True))


def _thread() -> str:
    return f"ui-{uuid.uuid4().hex}"


def _ask(agent: RemoteAgent, thread: str, text: str, study_id: str | None = None, stop: threading.Event | None = None,
         on_first=None) -> list[dict]:
    """One turn through ``RemoteAgent.stream`` (what the worker's run_turn calls); its custom events."""
    inputs = {"messages": [("user", text)], **({"study_id": study_id} if study_id else {})}
    configurable = {"thread_id": thread, **({STOP_KEY: stop} if stop is not None else {})}
    events = []
    for mode, chunk in agent.stream(inputs, {"configurable": configurable}):
        if mode == "custom":
            if not events and on_first is not None:
                on_first()
            events.append(chunk)
    return events


def _messages(agent: RemoteAgent, thread: str) -> list[tuple[str, str]]:
    values = agent.get_state({"configurable": {"thread_id": thread}}).values or {}
    return [(m["type"], m["content"] if m["type"] == "human" else "") for m in values.get("messages") or []]


@pytest.fixture(scope="module")
def erin(app_agent: RemoteAgent, cxr_images) -> tuple[RemoteAgent, str]:
    agent = app_agent.as_user(SignedInUser(ERIN, "Dr Erin"))
    image = cxr_images[0]
    return agent, agent.load_study(image.read_bytes(), filename=image.name).id


def test_the_sidebar_lists_only_the_readers_conversations_while_one_has_no_checkpoint(
        served, app_agent, erin, cxr_images, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from cxr_agent.settings import get_settings

    agent, study = erin
    _ask(agent, _thread(), "Is there cardiomegaly?", study)
    agent.client.threads.create()  # a conversation whose first run has not checkpointed yet
    frank = app_agent.as_user(SignedInUser(FRANK))
    image = cxr_images[1]
    _ask(frank, _thread(), "Is there a pneumothorax on Frank's study?",
         frank.load_study(image.read_bytes(), filename=image.name).id)

    for key in [k for k in os.environ if k.startswith("CXR_AGENT_")]:
        monkeypatch.delenv(key)
    for key, value in {"CXR_AGENT_GRAPH_URL": served.url, "CXR_AGENT_SERVER_TOKEN": GATEWAY,
                       "CXR_AGENT_UI_REQUIRE_LOGIN": "true", "CXR_AGENT_MODEL_PROFILE": "tiny",
                       "CXR_AGENT_DATA_DIR": str(tmp_path / "ui-data")}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.user = {"is_logged_in": True, "email": ERIN, "name": "Dr Erin"}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        captions = [str(c.value) for c in at.sidebar.caption]
        titles = [str(m.value) for m in at.sidebar.markdown]
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
    assert not any("unavailable" in c for c in captions), captions
    assert "**Is there cardiomegaly?**" in titles, titles
    assert not any("Frank" in t for t in titles), titles  # another reader's conversation is not listed
    assert any("1 study" in c for c in captions), captions


def test_a_message_sent_while_a_run_is_under_way_waits_in_the_servers_queue(erin, monkeypatch):
    agent, study = erin
    thread = _thread()
    asked: list[object] = []  # what each run asked of the server (servers differ in their default strategy)
    create = agent.client.runs.stream
    monkeypatch.setattr(agent.client.runs, "stream",
                        lambda *a, **kw: (asked.append(kw.get("multitask_strategy")), create(*a, **kw))[1])
    running = threading.Event()
    first: dict[str, object] = {}

    def report() -> None:
        try:
            first["events"] = _ask(agent, thread, "Write a report", study, on_first=running.set)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            first["error"] = exc
            running.set()

    runner = threading.Thread(target=report)
    runner.start()
    assert running.wait(120), "the report never started"
    second = _ask(agent, thread, "Where is the effusion?")  # sent while the report runs: queued, not refused
    runner.join(120)
    assert "error" not in first, first.get("error")
    assert asked == ["enqueue", "enqueue"]
    assert first["events"][-1]["event"] == "reply" and second[-1]["event"] == "reply"
    assert _messages(agent, thread) == [("human", "Write a report"), ("ai", ""),
                                        ("human", "Where is the effusion?"), ("ai", "")]  # both answered, in order


def test_stop_cancels_the_servers_run(erin):
    agent, study = erin
    thread = _thread()
    stop = threading.Event()
    try:
        events = _ask(agent, thread, "Write a report", study, stop=stop, on_first=stop.set)
    except Exception as exc:  # noqa: BLE001 - a cancelled run may end its stream with an error event
        events = [{"event": "error", "error": type(exc).__name__}]
    assert not any(e.get("event") == "reply" for e in events), events  # ended before any reply
    runs = agent.client.runs.list(server_thread_id(thread))
    assert [r["status"] for r in runs] == ["interrupted"], runs  # cancelled on the server, not run to its end
    assert not any(kind == "ai" for kind, _ in _messages(agent, thread))  # no answer stored
    after = _ask(agent, thread, "Write a report")  # the conversation goes on
    assert after[-1]["event"] == "reply"



def test_the_workers_stop_cancels_the_remote_run(erin):
    """The page's Stop button (``TurnWorker.stop``) on a remote turn: the server's run is cancelled."""
    import time

    from ui.worker import Job, TurnWorker

    agent, study = erin
    thread = _thread()
    worker = TurnWorker(agent)
    worker.submit(Job("Write a report", thread, {"study_id": study}))
    deadline = time.monotonic() + 120
    while not (worker.snapshot()[0] is not None and worker.snapshot()[0].progress):  # the run has begun
        assert time.monotonic() < deadline, "the remote turn never started"
        time.sleep(0.05)
    assert worker.stop()
    assert worker.wait_idle(120)
    (_, result), = worker.take_finished()
    assert result.stopped and not result.reply
    deadline = time.monotonic() + 60
    while (runs := agent.client.runs.list(server_thread_id(thread)))[0]["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    assert [r["status"] for r in runs] == ["interrupted"], runs
