"""A review signed through the remote UI behind a login (a gateway token) carries the signed-in user's own
name and organisation from their OIDC claims (X-Cxr-User-Name / X-Cxr-User-Org, sent by ui/remote.py),
not the gateway's users-file entry; the same headers on a user's own token change nothing."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev
from pydantic import SecretStr

from server.identities import hash_token

pytestmark = pytest.mark.timeout(300)

GATEWAY = "gateway-token-for-the-claims-test"
DANA = "dana-token-for-the-claims-test"
CLAIMS = {"email": "carol@hospital.org", "sub": "oidc-7", "name": "Dr Carol Zoë", "org": "Hôpital Nord",
          "iss": "https://idp.example.org", "is_logged_in": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("gateway-server")
    users = work / "users.toml"
    users.write_text(
        f'[[user]]\nid = "ui"\nname = "The UI"\norg = "Gateway Org"\nrole = "gateway"\n'
        f'token_sha256 = "{hash_token(GATEWAY)}"\n'
        f'[[user]]\nid = "dana"\nname = "Dana Lee"\norg = "Users File Org"\ntoken_sha256 = "{hash_token(DANA)}"\n')
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_TOKEN": "service-token-claims", "CXR_AGENT_SERVER_USERS": str(users)}
                       ) as srv:
        yield srv


def _turn(agent, image) -> str:
    """A thread of ``agent``'s caller with one answered question about ``image`` (its server thread id)."""
    sid = agent.upload(image.read_bytes(), image.name)["study_id"]
    tid = agent.client.threads.create()["thread_id"]
    agent.client.runs.wait(tid, "cxr_agent", input={"messages": [{"role": "user", "content": "Is there cardiomegaly?"}],
                                                    "study_id": sid})
    return tid


def _sign(reviews, ui_tid: str):
    from ui.review import table_rows

    review = reviews.open(ui_tid)
    rows = [{**r, "action": "accept"} if r["flagged"] else r for r in table_rows(review)]
    return review, reviews.sign(review, rows, [], "Reviewed.")


def test_a_gateway_user_signs_with_the_name_and_organisation_of_their_login(server, cxr_images, settings):
    from ui.remote import SignedInUser, connect, ui_thread_id
    from ui.review import ServerReviews

    app = connect(settings.model_copy(update={"graph_url": server.url, "server_token": SecretStr(GATEWAY)}))
    user = SignedInUser.from_claims(CLAIMS)
    assert user == SignedInUser("carol@hospital.org", "Dr Carol Zoë", "Hôpital Nord")
    carol = app.as_user(user)
    tid = _turn(carol, cxr_images[3])
    review, signed = _sign(ServerReviews(carol), ui_thread_id(tid))
    assert review.reviewer.label == "Dr Carol Zoë"
    assert (signed.reviewer.id, signed.reviewer.name, signed.reviewer.org, signed.verified) == \
        ("carol@hospital.org", "Dr Carol Zoë", "Hôpital Nord", True)

    # a login without an organisation claim: the gateway's own entry names the organisation
    erin = app.as_user(SignedInUser("erin@hospital.org", "Dr Erin"))
    _, signed = _sign(ServerReviews(erin), ui_thread_id(_turn(erin, cxr_images[4])))
    assert (signed.reviewer.id, signed.reviewer.name, signed.reviewer.org) == ("erin@hospital.org", "Dr Erin",
                                                                               "Gateway Org")


def _accept_rows(view: dict) -> list[dict]:
    return [{"id": f, "action": "accept", "note": ""} for f in view["pending"]]


def test_a_user_tokens_claim_headers_are_ignored(server, cxr_images, settings):
    from ui.remote import connect

    dana = connect(settings.model_copy(update={"graph_url": server.url, "server_token": SecretStr(DANA)}))
    tid = _turn(dana, cxr_images[5])
    forged = {"Authorization": f"Bearer {DANA}", "X-Cxr-User": "carol@hospital.org",
              "X-Cxr-User-Name": "Dr Carol Zo%C3%AB", "X-Cxr-User-Org": "H%C3%B4pital Nord"}
    with httpx.Client(base_url=server.url, headers=forged, timeout=60) as http:
        view = http.get(f"/cxr/threads/{tid}/review")
        assert view.status_code == 200, view.text
        assert view.json()["reviewer"] == {"label": "Dana Lee", "authenticated": True}
        signed = http.post(f"/cxr/threads/{tid}/review/sign", json={"rows": _accept_rows(view.json())})
    assert signed.status_code == 201, signed.text
    reviewer = signed.json()["signed"]["reviewer"]
    assert (reviewer["id"], reviewer["name"], reviewer["org"]) == ("dana", "Dana Lee", "Users File Org")
