"""Callers of the graph server: the owner-only users file (server/identities.py) and how a bearer token,
the service token or a gateway's named user becomes an identity (server/auth.py)."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from langgraph_sdk import Auth

from server.identities import IdentityFileError, add_user, hash_token, load_users, main, parse_users


def _entry(uid: str, token: str, role: str = "user") -> str:
    return f'[[user]]\nid = "{uid}"\nname = "{uid.title()}"\norg = "rad"\nrole = "{role}"\ntoken_sha256 = "{hash_token(token)}"\n'


@pytest.fixture
def users_file(tmp_path, monkeypatch):
    path = tmp_path / "users.toml"
    path.write_text(_entry("alice", "alice-token") + _entry("bob", "bob-token") + _entry("ui", "gw-token", "gateway"))
    path.chmod(0o600)
    monkeypatch.setenv("CXR_AGENT_SERVER_USERS", str(path))
    monkeypatch.setenv("CXR_AGENT_SERVER_TOKEN", "service-token")
    from cxr_agent.settings import get_settings

    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_tokens_map_to_their_users_and_the_service_token_to_the_service(users_file):
    from server.auth import SERVICE_ID, identify

    assert identify("Bearer alice-token").id == "alice" and identify("bearer  bob-token ").id == "bob"
    assert identify("Bearer alice-token").auth_user()["permissions"] == ["user"]
    service = identify("Bearer service-token")
    assert service.id == SERVICE_ID and service.is_service
    for bad in (None, "", "Bearer", "alice-token", "Basic alice-token", "Bearer alice-tokenX"):
        with pytest.raises(Auth.exceptions.HTTPException) as refused:
            identify(bad)
        assert refused.value.status_code == 401


def test_a_gateway_acts_for_the_user_it_names_and_only_with_one(users_file):
    from server.auth import identify

    who = identify("Bearer gw-token", {b"x-cxr-user": b"carol@hospital.org", b"x-cxr-user-name": b"Dr Carol"})
    assert (who.id, who.name, who.org, who.is_service) == ("carol@hospital.org", "Dr Carol", "rad", False)
    for headers in ({b"x-cxr-user": b"a b"}, {b"x-cxr-user": b"x" * 200}):
        with pytest.raises(Auth.exceptions.HTTPException, match="x-cxr-user"):
            identify("Bearer gw-token", headers)
    bare = identify("Bearer gw-token", {})  # the gateway itself: /cxr/health, nothing else
    assert bare.auth_user()["permissions"] == ["gateway"]
    with pytest.raises(Auth.exceptions.HTTPException, match="acts only for a user"):
        asyncio.run(__import__("server.auth").auth.owner_only(_ctx("threads", "search", bare.id, "gateway"), {}))
    # A user's own token never acts for someone else.
    assert identify("Bearer bob-token", {b"x-cxr-user": b"alice"}).id == "bob"


def test_a_users_file_others_can_read_admits_nobody(users_file):
    from server.auth import identify

    users_file.chmod(0o640)
    with pytest.raises(IdentityFileError, match="mode 0640.*chmod 600"):
        load_users(users_file)
    with pytest.raises(Auth.exceptions.HTTPException) as refused:
        identify("Bearer alice-token")
    assert refused.value.status_code == 503 and "users file" in refused.value.detail


@pytest.mark.parametrize("text, says", [
    ('[[user]]\nid = "a"\n', "token_sha256"),
    (f'[[user]]\nid = "a b"\ntoken_sha256 = "{"0" * 64}"\n', "'id'"),
    (f'[[user]]\nid = "a"\nrole = "admin"\ntoken_sha256 = "{"0" * 64}"\n', "'role'"),
    (f'[[user]]\nid = "a"\ntoken = "x"\ntoken_sha256 = "{"0" * 64}"\n', "unknown key"),
    (_entry("a", "t1") + _entry("a", "t2"), "appears twice"),
    (_entry("a", "t1") + _entry("b", "t1"), "same token as 'a'"),
    ("[users]\n", "unknown table"),
    ("[[user]\n", "not valid TOML"),
])
def test_a_malformed_users_file_is_refused_naming_the_entry(text, says):
    with pytest.raises(IdentityFileError, match=says):
        parse_users(text, source="users.toml")


def test_adding_a_user_writes_an_owner_only_file_holding_only_the_token_hash(tmp_path, capsys):
    path = tmp_path / "users.toml"
    assert main(["add", "--file", str(path), "--id", "dr-lee", "--name", 'Dr "Lee"']) == 0
    token = capsys.readouterr().out.strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and token not in path.read_text()
    second = add_user(path, "svc", role="service")
    users = load_users(path)
    assert users[hash_token(token)].name == 'Dr "Lee"' and users[hash_token(second)].is_service
    assert main(["add", "--file", str(path), "--id", "dr-lee"]) == 2  # the same id twice is refused


def test_an_open_server_has_one_anonymous_caller_who_sees_everything(monkeypatch):
    from cxr_agent.settings import get_settings
    from server.auth import ANONYMOUS, identify

    monkeypatch.delenv("CXR_AGENT_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("CXR_AGENT_SERVER_USERS", raising=False)
    monkeypatch.setenv("CXR_AGENT_SERVER_AUTH_DISABLED", "true")
    get_settings.cache_clear()
    try:
        assert identify(None) == ANONYMOUS and ANONYMOUS.is_service
        monkeypatch.setenv("CXR_AGENT_SERVER_AUTH_DISABLED", "false")  # no identities and not open on purpose
        get_settings.cache_clear()
        with pytest.raises(Auth.exceptions.HTTPException) as refused:
            identify(None)
        assert refused.value.status_code == 503
    finally:
        get_settings.cache_clear()


def _ctx(resource: str, action: str, identity: str, role: str = "user") -> Auth.types.AuthContext:
    from langgraph_sdk.auth.types import StudioUser

    return Auth.types.AuthContext(resource=resource, action=action, user=StudioUser(identity), permissions=[role])


def test_handlers_stamp_the_owner_and_filter_to_it(users_file):
    from server.auth import owner_only

    value = {"metadata": {"owner": "mallory", "x": 1}}
    assert asyncio.run(owner_only(_ctx("threads", "create", "alice"), value)) == {"owner": "alice"}
    assert value["metadata"] == {"owner": "alice", "x": 1}  # nobody creates a thread in another's name
    assert asyncio.run(owner_only(_ctx("threads", "search", "bob"), {})) == {"owner": "bob"}
    assert asyncio.run(owner_only(_ctx("threads", "delete", "svc", "service"), {})) is None
    assert asyncio.run(owner_only(_ctx("assistants", "read", "bob"), {})) is True
    assert asyncio.run(owner_only(_ctx("assistants", "create", "bob"), {})) is False
    assert asyncio.run(owner_only(_ctx("store", "put", "bob"), {"namespace": ("bob", "notes")})) is True
    with pytest.raises(Auth.exceptions.HTTPException, match="start with 'bob'"):
        asyncio.run(owner_only(_ctx("store", "get", "bob"), {"namespace": ("alice", "notes")}))


def test_a_users_file_without_a_service_token_is_named_at_start_up(users_file, monkeypatch, caplog):
    import logging

    from cxr_agent.settings import get_settings
    from server import app

    async def start_and_stop() -> None:
        async with app.lifespan(app.app):
            pass

    monkeypatch.delenv("CXR_AGENT_SERVER_TOKEN")
    monkeypatch.setenv("CXR_AGENT_RETENTION_DAYS", "0")
    get_settings.cache_clear()
    with caplog.at_level(logging.ERROR, logger="server.app"):
        asyncio.run(start_and_stop())
    assert "CXR_AGENT_SERVER_TOKEN is not" in caplog.text
