"""deploy/serve_graph.sh (`make serve-graph`): the graph server with no licence key starts with its jobs and
auth, and refuses a jobs count that is not a positive whole number."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from deploy_scripts import REPO, script_env, serving
from langgraph_server import _free_port

pytestmark = pytest.mark.timeout(180)

SCRIPT = REPO / "deploy" / "serve_graph.sh"


def _env(tmp_path: Path, **over: str) -> dict[str, str]:
    return script_env(tmp_path, LANGGRAPH_CLI=str(Path(sys.executable).with_name("langgraph")), **over)


@pytest.mark.parametrize("jobs", ["0", "four", "-2"])
def test_a_bad_jobs_count_is_refused_naming_it(tmp_path, jobs):
    done = subprocess.run([str(SCRIPT)], env=_env(tmp_path, CXR_AGENT_SERVER_JOBS=jobs), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and f"CXR_AGENT_SERVER_JOBS must be a positive whole number (got '{jobs}')" in done.stderr


def test_the_script_serves_the_graph_with_its_jobs_and_auth(tmp_path):
    port = _free_port()
    env = _env(tmp_path, CXR_AGENT_SERVER_PORT=str(port), CXR_AGENT_SERVER_JOBS="3",
               CXR_AGENT_SERVER_TOKEN="deploy-test-service-token")
    log = tmp_path / "server.log"
    with serving(SCRIPT, env, log) as (_proc, url):
        assert httpx.get(f"{url}/cxr/health", timeout=10).status_code == 401  # no identity, no access
        health = httpx.get(f"{url}/cxr/health", headers={"Authorization": "Bearer deploy-test-service-token"}, timeout=10)
        assert health.status_code == 200 and health.json()["caller"]["sees_all"] is True
        metrics = httpx.get(f"{url}/metrics", params={"format": "json"}, timeout=10,
                            headers={"Authorization": "Bearer deploy-test-service-token"})
        assert metrics.status_code == 200 and metrics.json()["workers"]["max"] == 3  # turns at once
        assert "CXR_AGENT_SERVER_USERS is not set" in log.read_text()
