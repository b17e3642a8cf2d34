"""Point the `cxr-agent` CLI at a test's scripted graph and a signing reader, as a deployment would configure it."""

from __future__ import annotations

from pathlib import Path

import graph as graph_module
from cxr_agent import settings as settings_module


def cli_graph(monkeypatch, settings, tools: list):
    """Makes the CLI build a graph over `tools` only, on one in-memory checkpointer shared by every command of
    the test (so a later command sees an earlier one's thread); returns that builder."""
    from agents.memory.checkpointers import make_checkpointer

    saver = make_checkpointer(url="memory")
    real_build = graph_module.build_graph

    def fake_build(_settings=None, **_kw):
        return real_build(settings, tools=tools, builtin_tools=False, plugins=False, checkpointer=saver)

    monkeypatch.setattr(graph_module, "build_graph", fake_build)
    return fake_build


def reader_env(monkeypatch, tmp_path: Path, **env: str) -> str:
    """Registers the reader Ann Lee (dr-lee) in a users file, sets it and each ``CXR_AGENT_<KEY>`` of `env`, drops
    any review token from the caller's environment and reloads the settings; returns her sign-in token."""
    from server.identities import add_user

    users = tmp_path / "users.toml"
    token = add_user(users, "dr-lee", name="Ann Lee", org="Radiology Dept")
    for key, value in {**env, "SERVER_USERS": str(users)}.items():
        monkeypatch.setenv(f"CXR_AGENT_{key}", value)
    monkeypatch.delenv("CXR_AGENT_REVIEW_TOKEN", raising=False)
    settings_module.get_settings.cache_clear()
    return token
