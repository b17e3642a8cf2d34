"""deploy/serve_prod.sh (`make serve-prod`): the production server starts on Postgres with its jobs and auth,
and refuses a jobs count or a database URL it cannot use, naming the variable."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from deploy_scripts import REPO, script_env, serving
from langgraph_server import _free_port

pytestmark = pytest.mark.timeout(180)

SCRIPT = REPO / "deploy" / "serve_prod.sh"


def _env(tmp_path: Path, **over: str) -> dict[str, str]:
    return script_env(tmp_path, drop=("CXR_AGENT_CHECKPOINTER_URL", "CXR_AGENT_SERVER_TOKEN"),
                      CXR_AGENT_PYTHON=sys.executable, **over)


@pytest.mark.parametrize("jobs", ["0", "four"])
def test_a_bad_jobs_count_is_refused_naming_it(tmp_path, jobs):
    done = subprocess.run([str(SCRIPT)], env=_env(tmp_path, CXR_AGENT_SERVER_JOBS=jobs,
                                                  CXR_AGENT_CHECKPOINTER_URL="postgresql://x@127.0.0.1/db"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and f"CXR_AGENT_SERVER_JOBS must be a positive whole number (got '{jobs}')" in done.stderr


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("CXR_AGENT_SERVER_WORKERS", "0", "a positive whole number"),
    ("CXR_AGENT_SERVER_RUN_LEASE_S", "2", "a whole number of seconds from 3 to 3600"),
    ("CXR_AGENT_SERVER_RUN_LEASE_S", "soon", "a whole number of seconds from 3 to 3600"),
])
def test_a_bad_workers_count_or_lease_is_refused_naming_it(tmp_path, variable, value, says):
    env = _env(tmp_path, CXR_AGENT_CHECKPOINTER_URL="postgresql://x@127.0.0.1/db", **{variable: value})
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and f"{variable} must be {says} (got '{value}')" in done.stderr


@pytest.mark.parametrize("url", [None, "sqlite:///tmp/c.db"])
def test_a_server_without_postgres_is_refused(tmp_path, url):
    env = _env(tmp_path, **({"CXR_AGENT_CHECKPOINTER_URL": url} if url else {}))
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "CXR_AGENT_CHECKPOINTER_URL must name the Postgres database" in done.stderr


def test_the_script_serves_on_postgres_with_auth_from_two_worker_processes(tmp_path, postgres_url):
    port = _free_port()
    env = _env(tmp_path, CXR_AGENT_CHECKPOINTER_URL=postgres_url, CXR_AGENT_SERVER_TOKEN="prod-deploy-service-token",
               CXR_AGENT_SERVER_PORT=str(port), CXR_AGENT_SERVER_JOBS="2", CXR_AGENT_SERVER_WORKERS="2")
    log = tmp_path / "server.log"
    with serving(SCRIPT, env, log, cwd=tmp_path, wait_s=90) as (proc, url):
        assert httpx.post(f"{url}/threads", json={}, timeout=10).status_code == 401
        auth = {"Authorization": "Bearer prod-deploy-service-token"}
        health = httpx.get(f"{url}/cxr/health", headers=auth, timeout=10).json()
        assert health["caller"]["sees_all"] is True
        thread = httpx.post(f"{url}/threads", json={}, headers=auth, timeout=10).json()
        import psycopg

        with psycopg.connect(postgres_url) as conn:  # the thread is a row in the server's database
            assert conn.execute("SELECT count(*) FROM cxr_threads WHERE thread_id = %s",
                                (thread["thread_id"],)).fetchone()[0] == 1
        answered: set[int] = set()  # each request on a new connection: the two processes share the port
        deadline = time.monotonic() + 60
        while len(answered) < 2 and time.monotonic() < deadline:
            answered.add(httpx.get(f"{url}/metrics", params={"format": "json"}, headers=auth,
                                   timeout=10).json()["process"]["pid"])
        assert len(answered) == 2 and proc.pid not in answered
