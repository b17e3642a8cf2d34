"""`cxr-agent ui` starts Streamlit with the app's safety options, warns when bound beyond loopback, and is
one process to the operator (signals reach Streamlit; the command exits with it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli.run
from cli.main import app
from tools.ingestion.loader import MAX_FILE_BYTES


def _start(monkeypatch, *args: str, env: dict[str, str] | None = None):
    calls = []
    monkeypatch.setattr(cli.run, "run_forwarding_signals", lambda cmd, env: calls.append(cmd) or 0)
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
    assert _opts(cmd, "--client.toolbarMode") == ["minimal"]  # no Deploy button
    assert "WARNING" not in out


def test_binding_beyond_loopback_warns_and_uses_the_configured_hosts(monkeypatch):
    cmd, out = _start(monkeypatch, "--host", "0.0.0.0")
    assert "WARNING: binding to 0.0.0.0 without a login" in out and "CXR_AGENT_UI_ALLOWED_HOSTS" in out
    assert _opts(cmd, "--server.allowedHosts") == []
    cmd, out = _start(monkeypatch, "--host", "0.0.0.0",
                      env={"CXR_AGENT_UI_ALLOWED_HOSTS": "cxr.example.org, *.example.org", "CXR_AGENT_UI_REQUIRE_LOGIN": "true"})
    assert "WARNING" not in out
    assert _opts(cmd, "--server.allowedHosts") == ["cxr.example.org", "*.example.org"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_cxr_agent_ui_stops_streamlit_and_the_command(sig, tmp_path):
    """The real command: Streamlit answers on its port; one signal to `cxr-agent ui` and both are gone."""
    port = _free_port()
    env = {**os.environ, "HOME": str(tmp_path), "CXR_AGENT_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ui", "--profile", "tiny", "--port", str(port)],
                            env=env, cwd=str(Path(cli.run.__file__).parents[1]), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _answers(port):
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Streamlit never answered"
            time.sleep(0.3)
        proc.send_signal(sig)
        code = proc.wait(timeout=30)  # the command itself exits ...
        assert code in (0, -sig, 128 + sig), (tmp_path / "ui.log").read_text()[-2000:]
        assert not _answers(port)  # ... and Streamlit is no longer serving
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
