"""The production graph server (``python -m server.standalone``) on a real Postgres, for the tests.

Started on 127.0.0.1 at a free port in its own process group, with a private data dir, the tiny
models, a small prior-report corpus and short VLM generations (as tests/langgraph_server.py starts
``langgraph dev``); ``restart()`` stops and starts it again on the same port, database and data dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from langgraph_server import REPO, _free_port, stop_server


@dataclass
class ProdServer:
    url: str
    data_dir: Path
    log: Path
    env: dict[str, str]
    args: list[str]
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=self.data_dir.parent, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the production server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}",
                            pytrace=False)
            try:
                if httpx.get(f"{self.url}/ok", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the production server did not answer in 90 s:\n{self.log.read_text()[-3000:]}",
                            pytrace=False)
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def prod_server(work: Path, postgres_url: str, extra_env: Mapping[str, str] | None = None, *,
                jobs: int = 3, launcher: Path | None = None, extra_args: tuple[str, ...] = ()) -> Iterator[ProdServer]:
    """Serve the graph on ``postgres_url`` from ``work`` (an empty temp dir); stopped on exit.

    ``launcher``: a script run instead of ``-m server.standalone`` (taking the same arguments)."""
    from kb_index_helpers import write_prior_corpus

    corpus = write_prior_corpus(work / "priors.csv")
    port, data = _free_port(), work / "data"
    data.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_AGENT_DATA_DIR": str(data), "CXR_AGENT_MODEL_PROFILE": "tiny",
           "CXR_AGENT_OFFLINE": "1", "CXR_AGENT_CORPUS": str(corpus), "CXR_AGENT_INDEX_DIR": str(work / "index"),
           "CXR_AGENT_VLM_MAX_NEW_TOKENS": "24", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LANGSMITH_TRACING": "false", "PYTHONUNBUFFERED": "1", "CXR_AGENT_SERVER_AUTH_DISABLED": "true",
           "CXR_AGENT_CHECKPOINTER_URL": postgres_url}
    env.pop("CXR_AGENT_GRAPH_URL", None)
    env.pop("CXR_AGENT_SERVER_TOKEN", None)
    env.update(extra_env or {})
    server = ProdServer(url=f"http://127.0.0.1:{port}", data_dir=data, log=work / "server.log", env=env,
                        args=[sys.executable, *([str(launcher)] if launcher else ["-m", "server.standalone"]),
                              "--host", "127.0.0.1", "--port", str(port), "--jobs", str(jobs), *extra_args])
    server.start()
    try:
        yield server
    finally:
        server.stop()
