"""A study's review on the graph server (server/reviews.py) against a real LangGraph Server with users:
the owner reads, edits and signs it as the identity the server authenticated (never the body's), another
user gets 404, and the review goes with its thread (DELETE /cxr/threads, and the sweep after the server's
own thread DELETE). The remote UI's client (ui.review.ServerReviews) uses the same routes."""

from __future__ import annotations

import time

import httpx
import pytest
from langgraph_server import langgraph_dev

from agents.review.store import thread_key
from knowledge.vocabulary import FINDINGS, display_name
from server.identities import hash_token

pytestmark = pytest.mark.timeout(300)

SERVICE = "service-token-for-the-review-test"
TOKENS = {"alice": "alice-token-for-reviews-01", "bob": "bob-token-for-reviews-0001"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("review-server")
    users = work / "users.toml"
    users.write_text(
        f'[[user]]\nid = "alice"\nname = "Alice Smith"\norg = "Radiology Dept"\ntoken_sha256 = "{hash_token(TOKENS["alice"])}"\n'
        f'[[user]]\nid = "bob"\nname = "Bob Jones"\ntoken_sha256 = "{hash_token(TOKENS["bob"])}"\n')
    users.chmod(0o600)
    env = {"CXR_AGENT_SERVER_TOKEN": SERVICE, "CXR_AGENT_SERVER_USERS": str(users),
           "CXR_AGENT_RETENTION_INTERVAL_S": "1"}  # the review sweep runs beside the retention pass
    with langgraph_dev(work, env) as srv:
        yield srv


def _http(server, who: str) -> httpx.Client:
    token = SERVICE if who == "service" else TOKENS[who]
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def _thread_with_a_turn(server, who: str, image) -> str:
    from langgraph_sdk import get_sync_client

    with _http(server, who) as http:
        r = http.post("/cxr/studies", content=image.read_bytes(), headers={"x-cxr-file-type": image.suffix[1:]})
        assert r.status_code == 201, r.text
        sid = r.json()["study_id"]
    client = get_sync_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {TOKENS[who]}"})
    tid = client.threads.create()["thread_id"]
    client.runs.wait(tid, "cxr_agent", input={"messages": [{"role": "user", "content": "Is there cardiomegaly?"}],
                                              "study_id": sid})
    return tid


def _review_dir(server, tid: str):
    return server.data_dir / "reviews" / thread_key(tid)


def test_the_owner_signs_as_the_server_identity_and_the_review_goes_with_the_thread(server, cxr_images):
    tid = _thread_with_a_turn(server, "alice", cxr_images[0])
    path = f"/cxr/threads/{tid}/review"
    with _http(server, "alice") as alice, _http(server, "bob") as bob, _http(server, "service") as service:
        first = alice.get(path)
        assert first.status_code == 200, first.text
        view = first.json()
        assert view["reviewer"] == {"label": "Alice Smith", "authenticated": True}
        findings = [it["finding"] for it in view["review"]["items"]]
        assert "cardiomegaly" in findings
        # another user: as if the thread did not exist, for reading, editing and signing
        assert bob.get(path).status_code == 404
        assert bob.put(path, json={"rows": []}).status_code == 404
        assert bob.post(path + "/sign", json={"rows": []}).status_code == 404
        assert alice.put(path, json={"rows": "all"}).status_code == 422  # named: rows must be a list

        rows = [{"id": f, "action": "present" if f == "cardiomegaly" else "accept", "note": ""} for f in findings
                if f in view["pending"] or f == "cardiomegaly"]
        missed = next(f for f in FINDINGS if f not in findings)  # a finding the tools did not report
        saved = alice.put(path, json={"rows": rows, "added": [display_name(missed)], "report_text": "Cardiomegaly."})
        assert saved.status_code == 200, saved.text
        assert saved.json()["pending"] == [] and saved.json()["review"]["report_text"] == "Cardiomegaly."
        assert list(_review_dir(server, tid).glob("draft-*.json"))  # under the server's data dir

        forged = {"reviewer": {"name": "Mallory", "id": "mallory", "org": "Elsewhere", "authenticated": True},
                  "typed_name": "Mallory", "rows": []}
        signed = alice.post(path + "/sign", json=forged)
        assert signed.status_code == 201, signed.text
        reviewer = signed.json()["signed"]["reviewer"]
        assert (reviewer["name"], reviewer["id"], reviewer["org"], reviewer["authenticated"]) == \
            ("Alice Smith", "alice", "Radiology Dept", True)  # the authenticated caller, never the body
        items = {it["finding"]: it for it in signed.json()["signed"]["items"]}
        assert items["cardiomegaly"]["status"] == "present" and items[missed]["action"] == "added"
        assert list(_review_dir(server, tid).glob("signed-*.json"))
        assert alice.get(path).json()["signed"]["review_id"] == signed.json()["signed"]["review_id"]

        # the service sees every thread but is no reader: it may not sign without a (typed, unverified) name
        refused = service.post(path + "/sign", json={"rows": []})
        assert refused.status_code == 403 and "typed_name" in refused.text

        assert service.delete(f"/cxr/threads/{tid}").status_code == 200
        assert not _review_dir(server, tid).exists()
        assert alice.get(path).status_code == 404


def test_a_thread_deleted_by_the_server_itself_loses_its_review_at_the_next_sweep(server, cxr_images):
    from langgraph_sdk import get_sync_client

    tid = _thread_with_a_turn(server, "alice", cxr_images[1])
    with _http(server, "alice") as alice:
        assert alice.put(f"/cxr/threads/{tid}/review", json={"rows": [], "report_text": "Draft."}).status_code == 200
    assert _review_dir(server, tid).is_dir()
    time.sleep(1.5)  # the sweep keeps a folder changed while it read the thread list
    get_sync_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {SERVICE}"}).threads.delete(tid)
    deadline = time.monotonic() + 30
    while _review_dir(server, tid).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _review_dir(server, tid).exists()


def test_the_remote_ui_reviews_through_the_server(server, cxr_images, settings):
    from pydantic import SecretStr

    from agents.review import ReviewError
    from ui.remote import connect, ui_thread_id
    from ui.review import ServerReviews, table_rows

    tid = _thread_with_a_turn(server, "bob", cxr_images[2])
    agent = connect(settings.model_copy(update={"graph_url": server.url, "server_token": SecretStr(TOKENS["bob"])}))
    reviews = ServerReviews(agent, typed_name="ignored for a user token")
    ui_tid = ui_thread_id(tid)
    review = reviews.open(ui_tid)
    assert review.reviewer.label == "Bob Jones"
    rows = [{**r, "action": "absent"} if r["id"] == "cardiomegaly" else r for r in table_rows(review)]
    rows = [{**r, "action": "accept"} if r["flagged"] and r["id"] != "cardiomegaly" else r for r in rows]
    signed = reviews.sign(review, rows, [], "No cardiomegaly.")
    assert signed.verified and signed.reviewer.id == "bob" and signed.report_text == "No cardiomegaly."
    assert [p.name for p in _review_dir(server, tid).glob("signed-*.json")] == [f"signed-{signed.review_id}.json"]
    assert not (settings.data_dir / "reviews").exists()  # nothing kept in the app's own data dir
    stranger = ServerReviews(connect(settings.model_copy(update={"graph_url": server.url,
                                                                  "server_token": SecretStr(TOKENS["alice"])})))
    with pytest.raises(ReviewError, match="no such conversation"):
        stranger.open(ui_tid)
