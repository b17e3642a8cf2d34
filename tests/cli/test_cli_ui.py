"""`cxr-agent ui` starts Streamlit with the app's safety options and warns when bound beyond loopback."""

from __future__ import annotations

import subprocess

from typer.testing import CliRunner

from cli.main import app
from tools.ingestion.loader import MAX_FILE_BYTES


def _start(monkeypatch, *args: str, env: dict[str, str] | None = None):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: calls.append(cmd) or 0)
    from cxr_agent.settings import get_settings

    get_settings.cache_clear()
    try:
        res = CliRunner(env={"COLUMNS": "300", **(env or {})}).invoke(app, ["ui", "--profile", "tiny", *args])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    return calls[0], res.output


def _opts(cmd: list[str], name: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == name]


def test_loopback_start_has_upload_limit_hosts_and_no_warning(monkeypatch):
    cmd, out = _start(monkeypatch)
    assert _opts(cmd, "--server.address") == ["127.0.0.1"]
    assert _opts(cmd, "--server.maxUploadSize") == [str(MAX_FILE_BYTES // 2**20)]
    assert _opts(cmd, "--server.allowedHosts") == ["localhost", "127.0.0.1", "[::1]"]
    assert _opts(cmd, "--server.enableXsrfProtection") == ["true"] and _opts(cmd, "--client.showErrorDetails") == ["none"]
    assert "WARNING" not in out


def test_binding_beyond_loopback_warns_and_uses_the_configured_hosts(monkeypatch):
    cmd, out = _start(monkeypatch, "--host", "0.0.0.0")
    assert "WARNING: binding to 0.0.0.0 without a login" in out and "CXR_AGENT_UI_ALLOWED_HOSTS" in out
    assert _opts(cmd, "--server.allowedHosts") == []
    cmd, out = _start(monkeypatch, "--host", "0.0.0.0",
                      env={"CXR_AGENT_UI_ALLOWED_HOSTS": "cxr.example.org, *.example.org", "CXR_AGENT_UI_REQUIRE_LOGIN": "true"})
    assert "WARNING" not in out
    assert _opts(cmd, "--server.allowedHosts") == ["cxr.example.org", "*.example.org"]
