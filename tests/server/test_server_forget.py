"""Forgetting on a real LangGraph Server with two users: a study another user uploaded and has not yet
used stays when a thread that used the same image is forgotten, and goes with the last thread that
used it; the forgotten thread's audit lines go (DELETE /cxr/threads and retention through the service
identity), other threads' stay."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from server_callers import Callers, multi_user_server

pytestmark = pytest.mark.timeout(420)

SERVICE = "service-token-for-the-forget-test"
TOKENS = {"alice": "alice-token-forget-0123456789", "bob": "bob-token-forget-0123456789"}
ASK = {"messages": [{"role": "user", "content": "Is there cardiomegaly?"}]}
CALLERS = Callers(SERVICE, TOKENS)
_headers, _sdk, _http, _upload = CALLERS.headers, CALLERS.sdk, CALLERS.http, CALLERS.upload


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with multi_user_server(tmp_path_factory.mktemp("forget-server"), SERVICE, TOKENS) as srv:
        yield srv


def _ask(server, who: str, thread: str, study_id: str | None = None) -> dict:
    done = _sdk(server, who).runs.wait(thread, "cxr_agent", input={**ASK, **({"study_id": study_id} if study_id else {})})
    assert done["messages"][-1]["type"] == "ai", done
    return done


def _audit_threads(server) -> list[str]:
    return [json.loads(line)["thread"] for f in sorted((server.data_dir / "audit").glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def _stored(server, study_id: str) -> bool:
    return bool(list(server.data_dir.glob(f"studies/*/{study_id}.npy")))


def test_another_users_pending_upload_survives_a_forget_and_goes_with_the_last_thread(server, cxr_images):
    image = cxr_images[0]
    sid = _upload(server, "alice", image)
    mine = _sdk(server, "alice").threads.create()["thread_id"]
    _ask(server, "alice", mine, sid)
    time.sleep(0.05)
    assert _upload(server, "bob", image) == sid  # Bob uploads the same image; his first turn is yet to come
    time.sleep(0.05)
    _ask(server, "alice", mine)  # Alice asks again, after Bob's upload
    assert _audit_threads(server).count(mine) == 2
    with _http(server, "alice") as http:
        r = http.delete(f"/cxr/threads/{mine}")
    assert r.status_code == 200 and r.json()["studies_deleted"] == 0, r.text
    assert _stored(server, sid)
    assert mine not in _audit_threads(server)  # the forgotten thread's audit lines went
    with _http(server, "alice") as http:  # Alice's upload reference went with her thread
        assert http.get(f"/cxr/studies/{sid}").status_code == 404
    his = _sdk(server, "bob").threads.create()["thread_id"]
    assert _ask(server, "bob", his, sid)["study_id"] == sid  # his first turn reads the study
    assert _audit_threads(server) == [his]
    with _http(server, "bob") as http:
        r = http.delete(f"/cxr/threads/{his}")
    assert r.status_code == 200 and r.json()["studies_deleted"] == 1, r.text
    assert not _stored(server, sid) and _audit_threads(server) == []


def test_delete_and_retention_through_the_service_remove_only_their_threads_audit_lines(server, cxr_images):
    from langgraph_sdk import get_client

    from cxr_agent.settings import Settings
    from server.threads import retention_pass
    from tools.ingestion.store import StudyStore

    threads = {}
    for who, image in (("alice", cxr_images[1]), ("bob", cxr_images[2]), ("alice", cxr_images[3])):
        tid = _sdk(server, who).threads.create()["thread_id"]
        _ask(server, who, tid, _upload(server, who, image))
        threads.setdefault(who, []).append(tid)
        time.sleep(0.2)
    expired, kept, forgotten = threads["alice"][0], threads["bob"][0], threads["alice"][1]
    assert sorted(_audit_threads(server)) == sorted([expired, kept, forgotten])
    with _http(server, "service") as http:  # forget on someone's behalf
        assert http.delete(f"/cxr/threads/{forgotten}").status_code == 200
    assert sorted(_audit_threads(server)) == sorted([expired, kept])
    service = _sdk(server, "service")
    cutoff = (service.threads.get(expired)["updated_at"], service.threads.get(kept)["updated_at"])
    from agents.memory.retention import timestamp

    boundary = (timestamp(cutoff[0]) + timestamp(cutoff[1])) / 2
    now = time.time()
    settings = Settings(model_profile="tiny", data_dir=server.data_dir, retention_days=(now - boundary) / 86400)
    client = get_client(url=server.url, api_key=None, headers=_headers("service"))
    out = asyncio.run(retention_pass(client, settings, StudyStore.from_settings(settings), now=now))
    assert out.threads == [expired] and out.audit_lines == 1
    assert _audit_threads(server) == [kept]
