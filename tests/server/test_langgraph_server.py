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


def test_served_graph_takes_only_messages_and_a_study_id(langgraph_server):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=langgraph_server.url)
    assistant = client.assistants.search(graph_id="cxr_agent")[0]
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert set(schemas["input_schema"]["properties"]) == {"messages", "study_id"}


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
