"""A comparison turn through a real LangGraph Server (`langgraph dev` + server/auth.py): NIH patient 5567's two
films (ordered by follow_up), the prior named by the run input ``prior_study_id``; a run naming another
user's study as the prior is refused before anything runs."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev

from server.identities import hash_token

pytestmark = pytest.mark.timeout(400)

TOKENS = {"alice": "alice-token-compare-0123", "bob": "bob-token-compare-0123"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("compare-server")
    users = work / "users.toml"
    users.write_text("".join(f'[[user]]\nid = "{uid}"\nrole = "user"\ntoken_sha256 = "{hash_token(t)}"\n'
                             for uid, t in TOKENS.items()))
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_USERS": str(users)}) as srv:
        yield srv


def _headers(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def _sdk(server, who: str):
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=server.url, api_key=None, headers=_headers(who))


def _upload(server, who: str, path) -> str:
    with httpx.Client(base_url=server.url, headers=_headers(who), timeout=60) as http:
        r = http.post("/cxr/studies", content=path.read_bytes(), headers={"x-cxr-file-type": path.suffix[1:]})
    assert r.status_code == 201, r.text
    return r.json()["study_id"]


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_comparison_turn_names_its_prior_and_only_the_owners_studies(server, shared_data):
    images = shared_data / "nih_cxr14" / "images"
    prior_path, current_path = images / "00005567_025.png", images / "00005567_000.png"  # follow_up 15, then 16
    alice = _sdk(server, "alice")
    prior, current = _upload(server, "alice", prior_path), _upload(server, "alice", current_path)
    thread = alice.threads.create()["thread_id"]
    alice.runs.wait(thread, "cxr_agent", input={"messages": _ask("Is there a pleural effusion?"), "study_id": prior})
    done = alice.runs.wait(thread, "cxr_agent", input={"messages": _ask("Is the pleural effusion worse than before?"),
                                                       "study_id": current, "prior_study_id": prior})
    message = done["messages"][-1]
    cmp = message["additional_kwargs"]["cxr"]["comparison"]
    assert cmp["compared"] and cmp["named_by_reader"] and cmp["prior_study_id"] == prior
    assert cmp["study_id"] == current == done["study_id"] and cmp["patient"] == "unconfirmed"  # PNGs: no headers
    assert "Compared with the prior study" in message["content"]
    assert "pleural_effusion" in {c["finding"] for c in cmp["changes"]}

    bob = _sdk(server, "bob")
    own = _upload(server, "bob", current_path)
    theirs = bob.threads.create()["thread_id"]
    with pytest.raises(httpx.HTTPStatusError) as refused:
        bob.runs.wait(theirs, "cxr_agent", input={"messages": _ask("Is it worse than before?"), "study_id": own,
                                                  "prior_study_id": prior})
    assert refused.value.response.status_code == 403 and "prior_study_id" in refused.value.response.text
