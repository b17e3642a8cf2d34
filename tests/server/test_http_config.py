"""The config a graph server starts with (server/http_config.py, written by deploy/serve_graph.sh): A2A and
MCP stay off unless a setting names them, and the script serves exactly that config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from deploy_scripts import REPO, serving
from langgraph_server import _free_port

from cxr_agent.settings import Settings
from server.http_config import effective_config, main

pytestmark = pytest.mark.timeout(180)

BASE = json.loads((REPO / "langgraph.json").read_text())


def test_a2a_and_mcp_are_off_unless_a_setting_turns_each_on():
    off = effective_config(BASE, REPO, Settings())
    assert off["http"]["disable_a2a"] is True and off["http"]["disable_mcp"] is True
    mcp = effective_config(BASE, REPO, Settings(server_enable_mcp=True))
    assert mcp["http"]["disable_mcp"] is False and mcp["http"]["disable_a2a"] is True
    both = effective_config(BASE, REPO, Settings(server_enable_a2a=True, server_enable_mcp=True))
    assert both["http"]["disable_a2a"] is False and both["http"]["disable_mcp"] is False
    for key in ("middleware_order", "enable_custom_route_auth", "cors"):  # everything else kept as written
        assert both["http"][key] == BASE["http"][key]
    assert both["auth"]["path"] == f"{REPO / 'server' / 'auth.py'}:auth"
    assert both["graphs"]["cxr_agent"] == f"{REPO / 'graph.py'}:graph" and both["dependencies"] == [str(REPO)]
    assert BASE["http"]["disable_a2a"] is True and BASE["http"]["disable_mcp"] is True  # the file itself: off


def test_each_start_gets_its_own_owner_only_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXR_AGENT_SERVER_ENABLE_A2A", "true")
    paths = []
    for _ in range(2):
        assert main([str(REPO / "langgraph.json")]) == 0
        paths.append(Path(capsys.readouterr().out.strip()))
    assert paths[0] != paths[1] and all(p.parent == tmp_path / ".langgraph_api" for p in paths)
    assert (tmp_path / ".langgraph_api").stat().st_mode & 0o777 == 0o700
    assert paths[0].stat().st_mode & 0o777 == 0o600
    assert json.loads(paths[0].read_text())["http"]["disable_a2a"] is False


def test_the_writer_refuses_a_setting_that_is_not_a_boolean(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXR_AGENT_SERVER_ENABLE_MCP", "perhaps")
    assert main([str(REPO / "langgraph.json"), str(tmp_path / "out.json")]) == 2
    assert "server_enable_mcp" in capsys.readouterr().err and not (tmp_path / "out.json").exists()


def test_the_script_serves_mcp_only_when_its_setting_says_so(tmp_path):
    port = _free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CXR_AGENT_DATA_DIR": str(tmp_path / "data"),
           "CXR_AGENT_MODEL_PROFILE": "tiny", "CXR_AGENT_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO), "CXR_AGENT_SERVER_PORT": str(port),
           "CXR_AGENT_SERVER_JOBS": "1", "CXR_AGENT_SERVER_TOKEN": "http-config-test-token",
           "CXR_AGENT_SERVER_ENABLE_MCP": "true", "LANGGRAPH_CLI": str(Path(sys.executable).with_name("langgraph"))}
    log = tmp_path / "server.log"
    token = {"Authorization": "Bearer http-config-test-token"}
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    with serving(REPO / "deploy" / "serve_graph.sh", env, log) as (_proc, url):
        assert httpx.post(f"{url}/mcp", json=rpc, headers=accept, timeout=30).status_code == 401
        listed = httpx.post(f"{url}/mcp", json=rpc, headers={**accept, **token}, timeout=30)
        assert listed.status_code == 200 and listed.json()["result"]["tools"][0]["name"] == "cxr_agent"
        a2a = httpx.post(f"{url}/a2a/cxr_agent", json={**rpc, "method": "message/send"}, headers=token, timeout=30)
        assert a2a.status_code == 404  # not named by a setting: not there
        assert "the MCP route is on" in log.read_text()
