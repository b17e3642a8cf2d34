"""On a real LangGraph Server, through the remote UI's client: an upload names the conversation it is
for (X-Cxr-Thread), so forgetting another conversation of the same user that uploaded and used the same
image afterwards keeps it for the first one, and the last conversation that used it takes it along."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev

from server.identities import hash_token

pytestmark = pytest.mark.timeout(420)

SERVICE = "service-token-for-the-pending-test"
TOKENS = {"alice": "alice-token-pending-0123456789", "bob": "bob-token-pending-0123456789"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("pending-server")
    users = work / "users.toml"
    users.write_text("".join(f'[[user]]\nid = "{uid}"\nrole = "user"\ntoken_sha256 = "{hash_token(t)}"\n'
                             for uid, t in TOKENS.items()))
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_TOKEN": SERVICE, "CXR_AGENT_SERVER_USERS": str(users),
                              "CXR_AGENT_VERIFY_CONFLICTS": "false"}) as srv:
        yield srv


def _agent(server, who: str, data_dir):
    from cxr_agent.settings import Settings
    from ui.remote import RemoteAgent

    return RemoteAgent(Settings(model_profile="tiny", graph_url=server.url, server_token=TOKENS[who],
                                data_dir=data_dir))


def _ask(agent, thread: str, study_id: str) -> None:
    parts = list(agent.stream({"messages": [("user", "Is there cardiomegaly?")], "study_id": study_id},
                              {"configurable": {"thread_id": thread}}))
    assert parts, "the run streamed nothing"


def _stored(server, study_id: str) -> bool:
    return bool(list(server.data_dir.glob(f"studies/*/{study_id}.npy")))


def test_an_earlier_upload_for_another_conversation_of_the_same_user_survives_a_forget(server, cxr_images,
                                                                                      tmp_path):
    from ui.remote import server_thread_id

    alice = _agent(server, "alice", tmp_path)
    data = cxr_images[5].read_bytes()
    sid = alice.upload(data, "x.png", thread_id="conv-b")["study_id"]  # B uploads X and has not asked yet
    assert alice.upload(data, "x.png", thread_id="conv-a")["study_id"] == sid  # A uploads the same X...
    _ask(alice, "conv-a", sid)  # ...and asks
    alice.forget("conv-a")
    assert _stored(server, sid)  # kept for B, whose upload is still pending
    assert alice.http.get(f"/cxr/studies/{sid}").status_code == 200  # and B may still use it
    _ask(alice, "conv-b", sid)
    state = alice.client.threads.get_state(server_thread_id("conv-b"))
    assert state["values"]["study_id"] == sid
    assert "not in the study store" not in state["values"]["messages"][-1]["content"]
    alice.forget("conv-b")
    assert not _stored(server, sid)  # the last conversation that used it took it along


def test_an_upload_naming_a_bad_or_foreign_conversation_is_refused(server, cxr_images, tmp_path):
    from ui.remote import server_thread_id

    alice = _agent(server, "alice", tmp_path)
    data = cxr_images[6].read_bytes()
    sid = alice.upload(data, "x.png", thread_id="conv-c")["study_id"]
    _ask(alice, "conv-c", sid)
    bad = alice.http.post("/cxr/studies", content=data, headers={"X-Cxr-Thread": "a b/c"})
    assert bad.status_code == 400 and "x-cxr-thread must be a thread id" in bad.text
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKENS['bob']}"}, timeout=60) as bob:
        r = bob.post("/cxr/studies", content=data, headers={"X-Cxr-Thread": server_thread_id("conv-c")})
    assert r.status_code == 403 and "another user" in r.text


def test_a_pending_upload_expires_with_the_servers_retention(server, cxr_images, tmp_path):
    import asyncio
    import time

    from langgraph_sdk import get_client

    from cxr_agent.settings import Settings
    from server.threads import retention_pass
    from tools.ingestion.pending import held_by
    from tools.ingestion.store import StudyStore
    from ui.remote import server_thread_id

    alice = _agent(server, "alice", tmp_path)
    sid = alice.upload(cxr_images[7].read_bytes(), "x.png", thread_id="conv-idle")["study_id"]
    settings = Settings(model_profile="tiny", data_dir=server.data_dir, retention_days=0.5 / 24)
    assert held_by(settings, server_thread_id("conv-idle")) == {sid}
    client = get_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {SERVICE}"})
    out = asyncio.run(retention_pass(client, settings, StudyStore.from_settings(settings), now=time.time() + 3600))
    assert sid in out.studies and not _stored(server, sid)  # an hour later, under half an hour's retention
    assert held_by(settings, server_thread_id("conv-idle")) == set()
