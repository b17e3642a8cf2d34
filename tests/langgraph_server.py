"""A real LangGraph Server (``langgraph dev``, in-memory runtime) serving the repo's langgraph.json.

Started on 127.0.0.1 at a free port, without browser or reloader, in a temporary working directory
(its ``.langgraph_api/`` state lands there) with a private data dir, the tiny models, a small
prior-report corpus and short VLM generations; stopped (SIGINT, then SIGKILL) on exit. Used by
tests/server (the served graph through langgraph_sdk) and tests/ui (the UI as its client).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LangGraphServer:
    url: str
    workdir: Path
    data_dir: Path
    log: Path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen) -> None:
    """End a server started in its own process group: SIGINT (a clean shutdown), SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def langgraph_dev(work: Path, extra_env: Mapping[str, str] | None = None, *,
                  jobs: int | None = None) -> Iterator[LangGraphServer]:
    """Serve the graph from ``work`` (an empty temp dir), with ``extra_env`` on top of the test settings
    and ``jobs`` concurrent runs (``--n-jobs-per-worker``; `langgraph dev` runs one at a time without it);
    fails the test with the server log's tail if it cannot start."""
    from kb_index_helpers import write_prior_corpus

    corpus = write_prior_corpus(work / "priors.csv")
    cli = Path(sys.executable).with_name("langgraph")
    if not cli.exists():
        pytest.fail("langgraph-cli is not installed in this environment: pip install -e '.[server]'", pytrace=False)
    port, data = _free_port(), work / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_AGENT_DATA_DIR": str(data), "CXR_AGENT_MODEL_PROFILE": "tiny",
           "CXR_AGENT_OFFLINE": "1", "CXR_AGENT_CORPUS": str(corpus), "CXR_AGENT_INDEX_DIR": str(work / "index"),
           "CXR_AGENT_VLM_MAX_NEW_TOKENS": "24", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false", "PYTHONUNBUFFERED": "1",
           "CXR_AGENT_SERVER_AUTH_DISABLED": "true"}  # loopback test server; a token in extra_env turns auth on
    env.pop("CXR_AGENT_CHECKPOINTER_URL", None)
    env.pop("CXR_AGENT_GRAPH_URL", None)
    env.pop("CXR_AGENT_SERVER_TOKEN", None)
    env.update(extra_env or {})
    # The config deploy/serve_graph.sh starts with (server/http_config.py): the repo's langgraph.json, its
    # paths absolute (`langgraph dev` runs in the temp dir, so .langgraph_api/ lands there) and the A2A /
    # MCP switches read from extra_env.
    from cxr_agent.settings import Settings
    from server.http_config import effective_config

    switches = {f"server_enable_{r}": env.get(f"CXR_AGENT_SERVER_ENABLE_{r.upper()}", "false") for r in ("a2a", "mcp")}
    config = effective_config(json.loads((REPO / "langgraph.json").read_text()), REPO, Settings(**switches))
    (work / "langgraph.json").write_text(json.dumps(config))
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(cli), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
             "--config", str(work / "langgraph.json"), *(["--n-jobs-per-worker", str(jobs)] if jobs else [])],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer in 90 s:\n{log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.3)
        yield LangGraphServer(url=url, workdir=work, data_dir=data, log=log)
    finally:
        stop_server(proc)
