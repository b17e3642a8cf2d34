"""The graph served by LangGraph Server (`langgraph dev` + langgraph.json), driven through langgraph_sdk.

A real study from ../shared/data is uploaded to our route (no image bytes in any run), a report
turn and a follow-up stream their custom progress events, the turn's heatmap is fetched over
HTTP as a remote UI would, and the server's on-disk state directory is owner-only.
"""

from __future__ import annotations

import io
import json
import stat

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def dicom(shared_data):
    path = shared_data / "dicom" / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    if not path.exists():
        pytest.skip(f"{path.name} missing from the shared data")
    return path


@pytest.fixture(scope="module")
def uploaded(langgraph_server, dicom) -> dict:
    r = httpx.post(f"{langgraph_server.url}/cxr/studies", params={"filename": dicom.name},
                   content=dicom.read_bytes(), timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


def _stream(client, thread_id: str, payload: dict) -> list[dict]:
    events = []
    for chunk in client.runs.stream(thread_id, "cxr_agent", input=payload, stream_mode=["custom"]):
        assert chunk.event != "error", chunk.data
        if chunk.event == "custom":
            events.append(chunk.data)
    return events


def test_upload_returns_a_study_id_and_the_study_is_stored(langgraph_server, uploaded, dicom):
    sid = uploaded["study_id"]
    assert len(sid) == 64 and uploaded["source_format"] == "dicom" and uploaded["width"] > 0
    again = httpx.get(f"{langgraph_server.url}/cxr/studies/{sid}", timeout=10)
    assert again.status_code == 200 and again.json()["study_id"] == sid
    assert list(langgraph_server.data_dir.glob(f"studies/*/{sid}.npy"))  # in the server's store
    bad = httpx.post(f"{langgraph_server.url}/cxr/studies", content=b"not an image at all", timeout=10)
    assert bad.status_code == 422 and bad.json()["error"] == "UnsupportedFormat"


def test_report_turn_and_follow_up_through_the_sdk(langgraph_server, uploaded):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=langgraph_server.url)
    thread = client.threads.create()
    sid = uploaded["study_id"]
    first = _stream(client, thread["thread_id"],
                    {"messages": [{"role": "user", "content": "Write a report"}], "study_id": sid})
    kinds = [e.get("event") for e in first]
    assert kinds[0] == "route" and first[0]["intent"] == "report"
    assert {"tool_start", "tool_end", "token", "reconcile", "reply"} <= set(kinds)
    assert {e["tool"] for e in first if e.get("event") == "tool_end"} >= {"vlm", "classifier"}

    second = _stream(client, thread["thread_id"], {"messages": [{"role": "user", "content": "Is there cardiomegaly?"}]})
    assert second[0]["event"] == "route" and second[0]["finding"] == "cardiomegaly"
    assert second[-1]["event"] == "reply" and "cardiomegaly" in second[-1]["text"].lower()

    state = client.threads.get_state(thread["thread_id"])["values"]
    assert state["study_id"] == sid and len(state["messages"]) == 4
    assert state["messages"][-1]["content"] == second[-1]["text"]
    # The turn's heatmaps, fetched as a remote UI would.
    cxr = state["messages"][1]["additional_kwargs"]["cxr"]
    assert cxr["study_id"] == sid and cxr["heatmaps"]
    r = httpx.get(f"{langgraph_server.url}/cxr/artifacts", params={"uri": cxr["heatmaps"][0]["uri"]}, timeout=10)
    assert r.status_code == 200
    heat = np.load(io.BytesIO(r.content))  # stored reduced (<= 512 px), with the image's aspect ratio
    h, w = heat.shape
    assert max(h, w) <= max(uploaded["height"], uploaded["width"])
    assert abs(h / w - uploaded["height"] / uploaded["width"]) < 0.02
    outside = httpx.get(f"{langgraph_server.url}/cxr/artifacts", params={"uri": "/etc/passwd"}, timeout=10)
    assert outside.status_code == 404


def test_served_graph_takes_only_messages_study_ids_and_pairs(langgraph_server):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=langgraph_server.url)
    assistant = client.assistants.search(graph_id="cxr_agent")[0]
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert set(schemas["input_schema"]["properties"]) == {"messages", "study_id", "prior_study_id", "pairs"}


def test_runs_with_image_bytes_are_refused_before_storage(langgraph_server, dicom):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=langgraph_server.url)
    thread = client.threads.create()
    r = httpx.post(f"{langgraph_server.url}/threads/{thread['thread_id']}/runs/wait", timeout=30,
                   json={"assistant_id": "cxr_agent", "input": {"messages": [{"role": "user", "content": "report"}],
                                                                "image": "/work/shared/data/x.dcm",
                                                                "image_name": dicom.name}})
    assert r.status_code == 422 and "POST /cxr/studies" in r.json()["detail"]
    assert client.runs.list(thread["thread_id"]) == []
    state_dir = langgraph_server.workdir / ".langgraph_api"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700  # PHI at rest: owner-only
    assert all(dicom.name.encode() not in f.read_bytes() for f in state_dir.iterdir() if f.is_file())
    assert json.loads(httpx.get(f"{langgraph_server.url}/cxr/health", timeout=10).text)["ok"] is True


# --- forgetting and retention on the server (server/threads.py) -----------------------------------------


def _upload(server, path) -> str:
    r = httpx.post(f"{server.url}/cxr/studies", params={"filename": path.name}, content=path.read_bytes(), timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["study_id"]


def _turn(client, thread_id: str, text: str, study_id: str) -> None:
    out = client.runs.wait(thread_id, "cxr_agent", input={"messages": [{"role": "user", "content": text}],
                                                         "study_id": study_id})
    assert out["study_id"] == study_id, out


def _stored(server, study_id: str) -> bool:
    r = httpx.get(f"{server.url}/cxr/studies/{study_id}", timeout=10)
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def _heatmaps(server, study_id: str) -> bool:
    return (server.data_dir / "artifacts" / study_id).is_dir()


def test_deleting_a_thread_removes_the_studies_only_it_used(langgraph_server, cxr_images):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=langgraph_server.url)
    a, b = _upload(langgraph_server, cxr_images[2]), _upload(langgraph_server, cxr_images[3])
    mine, other = client.threads.create()["thread_id"], client.threads.create()["thread_id"]
    _turn(client, mine, "Is there cardiomegaly?", a)  # the classifier leaves heatmaps for study a
    _turn(client, mine, "Is there cardiomegaly?", b)  # then the user switched to study b
    _turn(client, other, "Is there cardiomegaly?", b)
    assert _heatmaps(langgraph_server, a) and _heatmaps(langgraph_server, b)

    r = httpx.delete(f"{langgraph_server.url}/cxr/threads/{mine}", timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"thread_id": mine, "studies_deleted": 1, "heatmap_folders_deleted": 1}
    assert not _stored(langgraph_server, a) and not _heatmaps(langgraph_server, a)  # only `mine` used a
    assert _stored(langgraph_server, b) and _heatmaps(langgraph_server, b)  # `other` still uses b
    with pytest.raises(httpx.HTTPStatusError) as gone:
        client.threads.get(mine)
    assert gone.value.response.status_code == 404

    assert httpx.delete(f"{langgraph_server.url}/cxr/threads/{other}", timeout=60).json()["studies_deleted"] == 1
    assert not _stored(langgraph_server, b) and not _heatmaps(langgraph_server, b)
    again = httpx.delete(f"{langgraph_server.url}/cxr/threads/{mine}", timeout=60)
    assert again.status_code == 404 and mine in again.json()["detail"]
    assert httpx.delete(f"{langgraph_server.url}/cxr/threads/not-a-thread", timeout=60).status_code == 404


def test_remote_ui_delete_removes_the_conversation_and_its_study(langgraph_server, cxr_images, settings):
    from ui.remote import RemoteAgent

    agent = RemoteAgent(settings.model_copy(update={"graph_url": langgraph_server.url}))
    sid = agent.upload(cxr_images[4].read_bytes(), cxr_images[4].name)["study_id"]
    config = {"configurable": {"thread_id": "ui-thread-to-forget"}}
    events = [e for kind, e in agent.stream({"messages": [("user", "Is there cardiomegaly?")], "study_id": sid}, config) if kind == "custom"]
    assert events[-1]["event"] == "reply" and agent.get_state(config).values["study_id"] == sid
    agent.forget("ui-thread-to-forget")  # what the sidebar's "Delete this conversation" calls
    assert not _stored(langgraph_server, sid) and not _heatmaps(langgraph_server, sid)
    from langgraph_sdk.errors import NotFoundError

    with pytest.raises(NotFoundError):  # the thread is gone too
        agent.get_state(config)
    agent.forget("ui-thread-to-forget")  # already gone: nothing to do, no error


@pytest.fixture(scope="module")
def retention_server(tmp_path_factory):
    """A second server keeping data one day, with a pass every second."""
    from langgraph_server import langgraph_dev

    with langgraph_dev(tmp_path_factory.mktemp("retention-server"),
                       {"CXR_AGENT_RETENTION_DAYS": "1", "CXR_AGENT_RETENTION_INTERVAL_S": "1"}) as server:
        yield server


def test_retention_deletes_idle_threads_and_their_studies_and_keeps_live_ones(retention_server, cxr_images):
    import asyncio
    import time

    from langgraph_sdk import get_client, get_sync_client

    from cxr_agent.settings import Settings
    from server.threads import retention_pass
    from tools.ingestion.store import StudyStore

    client = get_sync_client(url=retention_server.url)
    old_study, live_study = _upload(retention_server, cxr_images[5]), _upload(retention_server, cxr_images[6])
    old, live = client.threads.create()["thread_id"], client.threads.create()["thread_id"]
    _turn(client, old, "Is there cardiomegaly?", old_study)
    time.sleep(1.5)
    between = time.time()
    time.sleep(1.5)
    _turn(client, live, "Is there cardiomegaly?", live_study)

    # A day later: `old` has been idle longer than the retention, `live` has not.
    settings = Settings(model_profile="tiny", data_dir=retention_server.data_dir, retention_days=1)
    out = asyncio.run(retention_pass(get_client(url=retention_server.url), settings, StudyStore.from_settings(settings),
                                     now=between + 86400))
    assert out.threads == [old] and out.studies == [old_study]
    assert not _stored(retention_server, old_study) and not _heatmaps(retention_server, old_study)
    assert _stored(retention_server, live_study) and client.threads.get(live)["thread_id"] == live


def test_the_server_applies_the_retention_by_itself(retention_server, cxr_images):
    import os
    import time

    stale = _upload(retention_server, cxr_images[7])  # uploaded, never used in a turn...
    files = list(retention_server.data_dir.glob(f"studies/*/{stale}*"))
    assert files
    two_days_ago = time.time() - 2 * 86400
    for f in files:
        os.utime(f, (two_days_ago, two_days_ago))  # ...and two days old: past the one-day retention
    deadline = time.monotonic() + 30
    while any(f.exists() for f in files) and time.monotonic() < deadline:  # (a GET would count as a use)
        time.sleep(0.5)
    assert not any(f.exists() for f in files), retention_server.log.read_text()[-3000:]
    assert not _stored(retention_server, stale)
