"""A real token-guarded LangGraph Server (the repo's langgraph.json under `langgraph dev`): auth runs before
our body checks, bodies are capped, A2A and MCP are off, and no browser origin is let in by CORS."""

from __future__ import annotations

import httpx
import pytest
from langgraph_server import langgraph_dev

pytestmark = pytest.mark.timeout(240)

TOKEN = "side-door-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE_RUN = {"assistant_id": "cxr_agent", "input": {"messages": [{"role": "user", "content": "report"}],
                                                     "image": "/etc/hostname"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with langgraph_dev(tmp_path_factory.mktemp("side-doors"),
                       {"CXR_AGENT_SERVER_TOKEN": TOKEN, "CXR_AGENT_SERVER_MAX_RUN_BODY_KB": "64"}) as s:
        yield s


def test_auth_answers_before_any_body_is_read(server):
    stranger = httpx.post(f"{server.url}/runs/wait", json=IMAGE_RUN, timeout=30)
    assert stranger.status_code == 401  # not 422: the body check never ran for a caller without the token
    big = httpx.post(f"{server.url}/runs/wait", content=b"x" * (4 * 2**20), timeout=30)
    assert big.status_code == 401
    bearer = httpx.post(f"{server.url}/runs/wait", json=IMAGE_RUN, headers=AUTH, timeout=30)
    assert bearer.status_code == 422 and "POST /cxr/studies" in bearer.json()["detail"]


def test_bodies_are_capped_and_images_in_messages_refused(server):
    thread = httpx.post(f"{server.url}/threads", json={}, headers=AUTH, timeout=30).json()["thread_id"]
    long = {"assistant_id": "cxr_agent", "input": {"messages": [{"role": "user", "content": "x" * 70_000}]}}
    r = httpx.post(f"{server.url}/threads/{thread}/runs/wait", json=long, headers=AUTH, timeout=30)
    assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge"
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    r = httpx.post(f"{server.url}/threads/{thread}/runs/wait", headers=AUTH, timeout=30, json={
        "assistant_id": "cxr_agent", "input": {"messages": [{"role": "user", "content": [part]}]}})
    assert r.status_code == 422 and "messages carry text only" in r.json()["detail"]
    r = httpx.post(f"{server.url}/threads/{thread}/state", headers=AUTH, timeout=30,
                   json={"values": {"image": "/dev/zero"}, "as_node": "respond"})
    assert r.status_code == 422
    assert httpx.get(f"{server.url}/threads/{thread}/runs", headers=AUTH, timeout=30).json() == []


def test_a2a_and_mcp_are_off_and_cors_admits_no_origin(server):
    mcp = httpx.post(f"{server.url}/mcp", headers={**AUTH, "Accept": "application/json, text/event-stream"},
                     json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30)
    a2a = httpx.post(f"{server.url}/a2a/cxr_agent", headers=AUTH, timeout=30,
                     json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}})
    assert mcp.status_code == 404 and a2a.status_code == 404, (mcp.text, a2a.text)  # not there at all
    preflight = httpx.options(f"{server.url}/threads", timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert "access-control-allow-origin" not in preflight.headers
    plain = httpx.get(f"{server.url}/cxr/health", headers={**AUTH, "Origin": "https://evil.example"}, timeout=30)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
