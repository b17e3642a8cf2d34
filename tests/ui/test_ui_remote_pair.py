"""Two films of one patient loaded together through a graph server (`langgraph dev` + server/auth.py): the
UI's client (ui/remote.py, ui/compare_panel.py) sends both files to POST /cxr/studies/pair; the server orders
them by their headers and keeps the pair, patient keys included, in the caller's thread, so the comparison
turn says how many days earlier the prior was taken. A run naming another user's study in ``pairs``, or a
pair carrying client-made patient keys, is refused before anything runs."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev

from cxr_agent.settings import Settings
from server.identities import hash_token
from ui import session as S

pytestmark = pytest.mark.timeout(400)

TOKENS = {"alice": "alice-token-pair-0123456", "bob": "bob-token-pair-0123456"}
SERVICE_TOKEN = "service-token-pair-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("pair-server")
    users = work / "users.toml"
    users.write_text("".join(f'[[user]]\nid = "{uid}"\nrole = "user"\ntoken_sha256 = "{hash_token(t)}"\n'
                             for uid, t in TOKENS.items()))
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_USERS": str(users), "CXR_AGENT_SERVER_TOKEN": SERVICE_TOKEN,
                              "CXR_AGENT_VERIFY_CONFLICTS": "false"}) as srv:
        yield srv


def _agent(server, who: str):
    from ui.remote import RemoteAgent

    return RemoteAgent(Settings(graph_url=server.url, server_token=TOKENS[who]))


def _dicom(source, *, day: str, seed: int) -> bytes:
    from dated_dicom import dated_film, film_bytes

    return film_bytes(dated_film(source, patient="PAIR-REMOTE-3", day=day, seed=seed))


def _reply(agent, thread: str, inputs: dict) -> dict:
    for _ in agent.stream({"messages": [("user", inputs.pop("text"))], **inputs},
                          {"configurable": {"thread_id": thread}}):
        pass
    values = agent.get_state({"configurable": {"thread_id": thread}}).values
    return values["messages"][-1]


def test_two_films_uploaded_together_are_ordered_by_the_server(server, shared_data):
    from ui.compare_panel import K_QUEUED, PRIOR_READ, comparison_inputs, load_pair

    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    jan, mar = _dicom(source, day="20260110", seed=1), _dicom(source, day="20260301", seed=2)
    alice = _agent(server, "alice")
    state = {S.K_INBOX: [], S.K_STUDY_COUNT: 0, S.K_STUDY_LABELS: {}, S.K_STUDY: None, S.K_PENDING: None,
             S.K_THREAD: "ui-remote-pair-1"}
    note = load_pair(state, [("later.dcm", mar), ("earlier.dcm", jan)], remote=alice)  # current film first
    assert "taken 50 days before the current film" in note, note
    assert state[S.K_INBOX] == [PRIOR_READ]
    prior, current = state[S.K_STUDY], state[K_QUEUED]["study"]
    from tools.ingestion.pending import held_by
    from ui.remote import server_thread_id

    held_for = held_by(Settings(data_dir=server.data_dir), server_thread_id(state[S.K_THREAD]))
    assert {prior.id, current.id} <= held_for  # kept for this conversation until it uses them
    held = alice.get_state({"configurable": {"thread_id": state[S.K_THREAD]}}).values
    pair = held["pairs"][current.id]
    assert pair["prior_study_id"] == prior.id and pair["interval_days"] == 50
    assert pair["thread_keys"] and pair["prior_key"] == pair["current_key"]  # made by the server, same patient
    assert held["patient_salt"]
    for study, text in ((prior, PRIOR_READ), (current, "Is it worse than before?")):
        inputs = {"study_id": study.id}
        extra = comparison_inputs(state, inputs)
        assert "pairs" not in extra and "patient_salt" not in extra  # held by the server, never sent
        message = _reply(alice, state[S.K_THREAD], {"text": text, **inputs, **extra})
    cmp = message["additional_kwargs"]["cxr"]["comparison"]
    assert cmp["compared"] and cmp["prior_study_id"] == prior.id and cmp["study_id"] == current.id
    assert cmp["order"] == "headers" and cmp["interval_days"] == 50 and cmp["patient"] == "consistent"
    assert "taken 50 days earlier" in message["content"]


def test_a_pair_naming_another_users_study_or_carrying_keys_is_refused(server, shared_data):
    from langgraph_sdk import get_sync_client

    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    alice, bob = _agent(server, "alice"), _agent(server, "bob")
    theirs = alice.upload(_dicom(source, day="20250101", seed=5), "a.dcm")["study_id"]
    own = bob.upload(_dicom(source, day="20250301", seed=6), "b.dcm")["study_id"]
    sdk = get_sync_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {TOKENS['bob']}"})
    thread = sdk.threads.create()["thread_id"]
    ask = [{"role": "user", "content": "Is it worse than before?"}]
    cases = [({own: {"prior_study_id": theirs, "study_id": own, "interval_days": 59}}, f"pairs.{own}.prior_study_id"),
             ({own: {"prior_study_id": own, "study_id": own, "interval_days": 0, "prior_key": "a" * 64,
                     "current_key": "a" * 64}}, f"pairs.{own}.prior_key")]
    for pairs, named in cases:
        with pytest.raises(httpx.HTTPStatusError) as refused:
            sdk.runs.wait(thread, "cxr_agent", input={"messages": ask, "study_id": own, "pairs": pairs})
        assert refused.value.response.status_code == 403 and named in refused.value.response.text
    r = bob.http.post("/cxr/studies/pair", params={"thread_id": alice_thread(alice)},
                      files={"first": ("x.dcm", b"1"), "second": ("y.dcm", b"2")})
    assert r.status_code == 404  # another user's conversation answers like a missing one


def alice_thread(alice) -> str:
    return alice.client.threads.create()["thread_id"]
