"""Two users and the service identity against a real LangGraph Server (`langgraph dev` + langgraph.json with
server/auth.py): neither user can read, list, run in or delete the other's threads, nor see the other's
studies or heatmaps; the service identity sees and deletes everything (forget, retention)."""

from __future__ import annotations

import time

import httpx
import pytest
from server_callers import Callers, multi_user_server

pytestmark = pytest.mark.timeout(300)

SERVICE = "service-token-for-the-ownership-test"
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789", "ui": "gateway-token-0123456789"}
CALLERS = Callers(SERVICE, TOKENS)
_headers, _sdk, _http, _upload = CALLERS.headers, CALLERS.sdk, CALLERS.http, CALLERS.upload


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("ownership-server")
    with multi_user_server(work, SERVICE, TOKENS, {"ui": "gateway"}) as srv:
        yield srv


def _status(exc_info) -> int:
    return exc_info.value.response.status_code


@pytest.fixture(scope="module")
def worlds(server, cxr_images):
    """Alice and Bob each upload a study and ask one question about it in a thread of their own."""
    out = {}
    for who, image in (("alice", cxr_images[0]), ("bob", cxr_images[1])):
        client = _sdk(server, who)
        sid = _upload(server, who, image)
        tid = client.threads.create()["thread_id"]
        done = client.runs.wait(tid, "cxr_agent", input={"messages": [{"role": "user", "content": "Is there cardiomegaly?"}],
                                                         "study_id": sid})
        assert done["study_id"] == sid, done
        heatmaps = done["messages"][-1]["additional_kwargs"]["cxr"]["heatmaps"]
        out[who] = {"study": sid, "thread": tid, "heatmap": heatmaps[0]["uri"]}
    return out


def test_each_user_lists_and_reads_only_their_own_threads(server, worlds):
    from langgraph_sdk.errors import NotFoundError

    alice, bob = _sdk(server, "alice"), _sdk(server, "bob")
    assert [t["thread_id"] for t in alice.threads.search()] == [worlds["alice"]["thread"]]
    assert [t["thread_id"] for t in bob.threads.search()] == [worlds["bob"]["thread"]]
    assert alice.threads.get(worlds["alice"]["thread"])["metadata"]["owner"] == "alice"
    theirs = worlds["alice"]["thread"]
    for read in (lambda: bob.threads.get(theirs), lambda: bob.threads.get_state(theirs),
                 lambda: bob.threads.get_history(theirs), lambda: bob.runs.list(theirs)):
        with pytest.raises(NotFoundError):
            read()
    with pytest.raises(NotFoundError):  # nor can he hand it to himself
        bob.threads.update(theirs, metadata={"owner": "bob"})
    service = {t["thread_id"] for t in _sdk(server, "service").threads.search()}
    assert service >= {worlds["alice"]["thread"], worlds["bob"]["thread"]}


def test_a_user_cannot_run_in_or_delete_another_users_thread(server, worlds):
    from langgraph_sdk.errors import NotFoundError

    bob, theirs = _sdk(server, "bob"), worlds["alice"]["thread"]
    with pytest.raises(httpx.HTTPStatusError) as refused:
        bob.runs.wait(theirs, "cxr_agent", input={"messages": [{"role": "user", "content": "Write a report"}]})
    assert _status(refused) == 404
    with pytest.raises(NotFoundError):
        bob.threads.delete(theirs)
    with _http(server, "bob") as http:
        forget = http.delete(f"/cxr/threads/{theirs}")
    assert forget.status_code == 404  # as if it did not exist
    state = _sdk(server, "alice").threads.get_state(theirs)["values"]
    assert len(state["messages"]) == 2 and state["study_id"] == worlds["alice"]["study"]  # untouched


def test_a_user_sees_only_their_own_studies_and_heatmaps(server, worlds):
    alice, bob = worlds["alice"], worlds["bob"]
    with _http(server, "bob") as http:
        assert http.get(f"/cxr/studies/{bob['study']}").status_code == 200
        assert http.get("/cxr/artifacts", params={"uri": bob["heatmap"]}).status_code == 200
        assert http.get(f"/cxr/studies/{alice['study']}").status_code == 404
        assert http.get("/cxr/artifacts", params={"uri": alice["heatmap"]}).status_code == 404
    # Knowing the pixel hash of Alice's study does not let Bob run a turn on it.
    bob_client = _sdk(server, "bob")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        bob_client.runs.wait(bob["thread"], "cxr_agent",
                             input={"messages": [{"role": "user", "content": "Write a report"}], "study_id": alice["study"]})
    assert _status(refused) == 403 and "not uploaded by you" in refused.value.response.text
    with _http(server, "service") as http:
        assert http.get(f"/cxr/studies/{alice['study']}").status_code == 200
        assert http.get("/cxr/artifacts", params={"uri": alice["heatmap"]}).status_code == 200


def test_a_gateway_acts_for_the_user_it_names(server, cxr_images):
    from langgraph_sdk import get_sync_client

    def as_(user: str):
        return get_sync_client(url=server.url, api_key=None, headers={**_headers("ui"), "X-Cxr-User": user})

    carol = as_("carol@hospital.org").threads.create()["thread_id"]
    assert carol in {t["thread_id"] for t in as_("carol@hospital.org").threads.search()}
    assert carol not in {t["thread_id"] for t in as_("dave@hospital.org").threads.search()}
    with httpx.Client(base_url=server.url, headers=_headers("ui"), timeout=30) as http:  # names nobody
        assert http.post("/threads/search", json={}).status_code == 403
        assert http.post("/cxr/studies", content=cxr_images[2].read_bytes()).status_code == 403
        assert http.get("/cxr/health").json()["caller"] == {"id": "", "sees_all": False}


# --- the remote UI: its reader's identity, its reader's conversations ---------------------------------


def _ui(server, settings, token: str, **over):
    from pydantic import SecretStr

    from ui.remote import connect

    return connect(settings.model_copy(update={"graph_url": server.url, "server_token": SecretStr(token), **over}))


def test_the_remote_ui_acts_for_its_signed_in_reader_and_lists_only_their_conversations(server, settings, cxr_images,
                                                                                       tmp_path):
    from langgraph_sdk.errors import NotFoundError

    from ui.remote import SignedInUser, identity_warning

    app = _ui(server, settings, TOKENS["ui"], ui_require_login=True)  # the app's gateway token
    erin, frank = app.as_user(SignedInUser("erin@hospital.org", "Dr Erin")), app.as_user(SignedInUser("frank"))
    assert erin.caller() == {"id": "erin@hospital.org", "sees_all": False} and identity_warning(erin) is None
    sid = erin.load_study(cxr_images[3].read_bytes(), filename=cxr_images[3].name).id
    config = {"configurable": {"thread_id": "ui-" + "e" * 32}}
    events = [e for kind, e in erin.stream({"messages": [("user", "Is there cardiomegaly?")], "study_id": sid}, config) if kind == "custom"]
    assert events[-1]["event"] == "reply"
    assert erin.conversations() == ["ui-" + "e" * 32]
    assert frank.conversations() == []
    from ui.conversations import OwnerBook
    from ui.history import listed

    book = OwnerBook(tmp_path / "owners.sqlite")  # the sidebar's list: the server's, for this reader
    assert listed(erin, book, "login:erin") == ["ui-" + "e" * 32] and book.owns("ui-" + "e" * 32, "login:erin")
    assert listed(frank, book, "login:frank") == []
    service = _ui(server, settings, SERVICE)  # sees everyone's threads: the app's own table decides
    assert listed(service, book, "login:someone") == []
    with pytest.raises(NotFoundError):
        frank.get_state(config)
    uri = erin.get_state(config).values["messages"][-1]["additional_kwargs"]["cxr"]["heatmaps"][0]["uri"]
    assert erin.load_heatmap(uri) is not None and frank.load_heatmap(uri) is None
    frank.forget("ui-" + "e" * 32)  # not his: the server answers as if it did not exist
    assert erin.get_state(config).values["study_id"] == sid
    erin.forget("ui-" + "e" * 32)
    assert erin.conversations() == []


def test_the_remote_ui_says_when_the_server_answered_without_an_identity_of_its_own(server, settings):
    from ui.remote import identity_warning

    alice = _ui(server, settings, TOKENS["alice"])
    assert alice.caller() == {"id": "alice", "sees_all": False} and identity_warning(alice) is None
    service = _ui(server, settings, SERVICE)  # a UI holding the service token sees everyone's conversations
    assert service.caller()["sees_all"] and "without an identity of yours" in identity_warning(service)


def test_no_identity_no_access(server, worlds):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/threads/search", json={}).status_code == 401
        assert http.get(f"/cxr/studies/{worlds['alice']['study']}").status_code == 401
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer nobody"}, timeout=30) as http:
        assert http.post("/threads/search", json={}).status_code == 401


def test_owners_and_the_service_delete_with_their_studies(server, worlds):
    alice, bob = worlds["alice"], worlds["bob"]
    with _http(server, "alice") as http:
        r = http.delete(f"/cxr/threads/{alice['thread']}")
        assert r.status_code == 200 and r.json()["studies_deleted"] == 1, r.text
        assert http.get(f"/cxr/studies/{alice['study']}").status_code == 404
    assert not list(server.data_dir.glob(f"studies/*/{alice['study']}*"))
    with _http(server, "service") as http:  # forget on someone's behalf (retention, cxr-agent forget)
        r = http.delete(f"/cxr/threads/{bob['thread']}")
        assert r.status_code == 200 and r.json()["studies_deleted"] == 1, r.text
    assert not list(server.data_dir.glob(f"studies/*/{bob['study']}*"))
    from cxr_agent.settings import Settings
    from server.ownership import uploaded_by

    settings = Settings(data_dir=server.data_dir)
    assert not uploaded_by(settings, alice["study"], "alice") and not uploaded_by(settings, bob["study"], "bob")


def test_retention_through_the_service_identity_reaches_every_users_threads(server):
    import asyncio

    from langgraph_sdk import get_client

    from cxr_agent.settings import Settings
    from server.threads import retention_pass
    from tools.ingestion.store import StudyStore

    mine = {who: _sdk(server, who).threads.create()["thread_id"] for who in ("alice", "bob")}
    settings = Settings(model_profile="tiny", data_dir=server.data_dir, retention_days=1)
    store = StudyStore.from_settings(settings)
    later = time.time() + 2 * 86400  # both idle past the one-day retention

    def sweep(who: str):
        client = get_client(url=server.url, api_key=None, headers=_headers(who))
        return asyncio.run(retention_pass(client, settings, store, now=later))

    assert sweep("alice").threads == [mine["alice"]]  # a user's pass sees (and deletes) only its own
    swept = sweep("service").threads  # the service's reaches everyone's (carol's from the gateway test too)
    assert mine["bob"] in swept and mine["alice"] not in swept
    assert _sdk(server, "service").threads.search() == []
