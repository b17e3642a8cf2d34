"""LangGraph's A2A and MCP routes, turned on by CXR_AGENT_SERVER_ENABLE_A2A / _MCP (server/http_config.py,
the config deploy/serve_graph.sh starts with) on a real token-guarded server with two users: they answer
only a caller with a token, and each caller reaches only their own threads. Off (the repo's
langgraph.json as it is) they are 404: tests/server/test_server_side_doors.py."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from langgraph_server import langgraph_dev

from server.identities import hash_token

pytestmark = pytest.mark.timeout(300)

SERVICE = "service-token-for-the-a2a-mcp-test"
TOKENS = {"alice": "alice-token-a2a-0123456789", "bob": "bob-token-a2a-0123456789"}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("a2a-mcp-server")
    users = work / "users.toml"
    users.write_text("".join(f'[[user]]\nid = "{uid}"\nrole = "user"\ntoken_sha256 = "{hash_token(t)}"\n'
                             for uid, t in TOKENS.items()))
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_TOKEN": SERVICE, "CXR_AGENT_SERVER_USERS": str(users),
                              "CXR_AGENT_SERVER_ENABLE_A2A": "true", "CXR_AGENT_SERVER_ENABLE_MCP": "true"}) as srv:
        yield srv


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SERVICE if who == 'service' else TOKENS[who]}"}


def _rpc(method: str, params: dict) -> dict:
    return {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}


def _assistant(server) -> str:
    """The served graph's assistant id (A2A addresses an assistant by its UUID)."""
    r = httpx.post(f"{server.url}/assistants/search", json={"graph_id": "cxr_agent"}, headers=_auth("service"),
                   timeout=30)
    return r.json()[0]["assistant_id"]


def _a2a(server, who: str | None, method: str, params: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/a2a/{_assistant(server)}", json=_rpc(method, params), timeout=120,
                      headers=_auth(who) if who else {})


def _mcp(server, who: str | None, method: str, params: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/mcp", json=_rpc(method, params), timeout=120,
                      headers={**MCP_ACCEPT, **(_auth(who) if who else {})})


def _send(text: str, context_id: str | None = None) -> dict:
    message = {"role": "user", "messageId": str(uuid.uuid4()), "parts": [{"kind": "text", "text": text}]}
    if context_id:
        message["contextId"] = context_id
    return {"message": message}


def test_the_routes_answer_no_caller_without_a_token(server):
    assert _a2a(server, None, "message/send", _send("hello")).status_code == 401
    assert _mcp(server, None, "tools/list", {}).status_code == 401
    card = httpx.get(f"{server.url}/a2a/{_assistant(server)}/.well-known/agent-card.json", timeout=30)
    assert card.status_code == 401
    wrong = httpx.post(f"{server.url}/mcp", json=_rpc("tools/list", {}), timeout=30,
                       headers={**MCP_ACCEPT, "Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401


def test_mcp_lists_the_graph_to_a_token_holder(server):
    r = _mcp(server, "alice", "tools/list", {})
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["result"]["tools"]] == ["cxr_agent"]


def test_an_a2a_conversation_is_its_callers_alone(server):
    from langgraph_sdk import get_sync_client

    r = _a2a(server, "alice", "message/send", _send("What can you do?"))
    assert r.status_code == 200 and "result" in r.json(), r.text
    task = r.json()["result"]
    task = task.get("task", task)
    context, task_id = task["contextId"], task["id"]
    alice = get_sync_client(url=server.url, api_key=None, headers=_auth("alice"))
    bob = get_sync_client(url=server.url, api_key=None, headers=_auth("bob"))
    assert alice.threads.get(context)["metadata"]["owner"] == "alice"  # stamped like any thread of hers
    assert context not in {t["thread_id"] for t in bob.threads.search()}
    theirs = _a2a(server, "bob", "tasks/get", {"id": task_id})
    assert "result" not in theirs.json(), theirs.text  # Bob cannot read Alice's task...
    mine = _a2a(server, "alice", "tasks/get", {"id": task_id})
    assert mine.json()["result"]["id"] == task_id, mine.text
    before = alice.threads.get_state(context)["values"]["messages"]
    reply = _a2a(server, "bob", "message/send", _send("Write a report", context_id=context))
    assert "result" not in reply.json(), reply.text  # ...nor write into her conversation
    assert alice.threads.get_state(context)["values"]["messages"] == before
    assert json.dumps(before).count("Write a report") == 0


def test_an_image_sent_through_either_route_meets_the_same_refusal(server):
    part = {"kind": "file", "file": {"bytes": "iVBORw0KGgo=", "mimeType": "image/png", "name": "chest.png"}}
    message = {"role": "user", "messageId": str(uuid.uuid4()),
               "parts": [{"kind": "text", "text": "Write a report"}, part]}
    r = _a2a(server, "alice", "message/send", {"message": message})
    assert "result" not in r.json() and "messages carry text only" in r.text, r.text
    call = {"name": "cxr_agent", "arguments": {"messages": [{"role": "user", "content": "report"}],
                                               "image": "/etc/hostname"}}
    r = _mcp(server, "alice", "tools/call", call)
    assert r.status_code == 422 and "POST /cxr/studies" in r.json()["detail"], r.text
    ok = _mcp(server, "alice", "tools/call", {"name": "cxr_agent",
                                              "arguments": {"messages": [{"role": "user", "content": "hello"}]}})
    assert ok.status_code == 200 and "DEMO MODE" in ok.json()["result"]["content"][0]["text"], ok.text
