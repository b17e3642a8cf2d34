"""The graph server's review routes carry a compared study's change rows: read from the thread's comparison
(messages as the server returns them, JSON), edited with ``change_rows``, a bad value named, signed."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev

from server.identities import hash_token

pytestmark = pytest.mark.timeout(300)

TOKEN = "carol-token-for-change-reviews"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("review-changes-server")
    users = work / "users.toml"
    users.write_text(f'[[user]]\nid = "carol"\nname = "Carol Diaz"\norg = "Radiology"\n'
                     f'token_sha256 = "{hash_token(TOKEN)}"\n')
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_TOKEN": "service-token-change-reviews-01",
                              "CXR_AGENT_SERVER_USERS": str(users)}) as srv:
        yield srv


def test_change_rows_through_the_review_routes(server, cxr_images):
    from langgraph_sdk import get_sync_client

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as http:
        sids = []
        for image in cxr_images[3:5]:
            r = http.post("/cxr/studies", content=image.read_bytes(), headers={"x-cxr-file-type": image.suffix[1:]})
            assert r.status_code == 201, r.text
            sids.append(r.json()["study_id"])
        client = get_sync_client(url=server.url, api_key=None, headers=auth)
        tid = client.threads.create()["thread_id"]
        for sid in sids:
            client.runs.wait(tid, "cxr_agent", input={"messages": [{"role": "user", "content": "Write a report"}],
                                                      "study_id": sid})
        client.runs.wait(tid, "cxr_agent", input={"messages": [{"role": "user", "content": "Is it worse than before?"}],
                                                  "study_id": sids[1], "prior_study_id": sids[0]})
        last = client.threads.get_state(tid)["values"]["messages"][-1]
        compared = last["additional_kwargs"]["cxr"]["comparison"]
        assert compared["compared"] and compared["changes"]
        path = f"/cxr/threads/{tid}/review"
        view = http.get(path).json()
        review = view["review"]
        assert review["prior_study_id"] == sids[0] and review["study_id"] == sids[1]
        assert [(c["finding"], c["ai_change"]) for c in review["changes"]] == \
            [(c["finding"], c["change"]) for c in compared["changes"]]
        assert view["pending_changes"] == [c["finding"] for c in compared["changes"] if c["needs_review"]]
        first = review["changes"][0]["finding"]
        bad = http.put(path, json={"change_rows": [{"id": first, "action": "bigger"}]})
        assert bad.status_code == 422 and "action must be one of accept, reject, new" in bad.text
        assert http.put(path, json={"change_rows": "all"}).status_code == 422
        rows = [{"id": c["finding"], "action": "worse" if c["finding"] == first else "accept", "note": ""}
                for c in review["changes"]]
        found = [{"id": f, "action": "accept"} for f in view["pending"]]
        saved = http.put(path, json={"rows": found, "change_rows": rows})
        assert saved.status_code == 200, saved.text
        assert saved.json()["pending_changes"] == []
        signed = http.post(path + "/sign", json={})
        assert signed.status_code == 201, signed.text
        out = {c["finding"]: c for c in signed.json()["signed"]["changes"]}
        assert (out[first]["action"], out[first]["change"]) == ("changed", "worse")
        assert signed.json()["signed"]["reviewer"]["authenticated"]
