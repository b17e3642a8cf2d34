"""Turns run concurrently on the served graph when the server is given jobs (`langgraph dev
--n-jobs-per-worker N`; without it `langgraph dev` runs one turn at a time and queues the rest)."""

from __future__ import annotations

import time

import httpx
import pytest
from langgraph_server import langgraph_dev

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with langgraph_dev(tmp_path_factory.mktemp("concurrent-server"), jobs=3) as srv:
        yield srv


def test_three_clinicians_turns_run_at_the_same_time(server, cxr_images):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server.url, api_key=None)
    runs = []
    for image in cxr_images[:3]:
        r = httpx.post(f"{server.url}/cxr/studies", content=image.read_bytes(), timeout=60)
        assert r.status_code == 201, r.text
        thread = client.threads.create()["thread_id"]
        runs.append((thread, r.json()["study_id"]))
    ask = [{"role": "user", "content": "Is there cardiomegaly?"}]
    started = [client.runs.create(t, "cxr_agent", input={"messages": ask, "study_id": sid}) for t, sid in runs]
    most_at_once, statuses = 0, {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        statuses = {r["run_id"]: client.runs.get(r["thread_id"], r["run_id"])["status"] for r in started}
        most_at_once = max(most_at_once, sum(s == "running" for s in statuses.values()))
        if all(s not in ("pending", "running") for s in statuses.values()):
            break
        time.sleep(0.02)
    assert set(statuses.values()) == {"success"}, statuses
    assert most_at_once >= 2  # with one job, a second turn stays pending until the first is done
    for thread, sid in runs:  # and each reply is its own thread's
        state = client.threads.get_state(thread)["values"]
        assert state["study_id"] == sid and state["messages"][-1]["additional_kwargs"]["cxr"]["study_id"] == sid
