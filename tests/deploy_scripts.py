"""Run a deploy/ start script as an operator would: an offline tiny-profile environment, the script started in
its own session, waited for until its server answers /ok, stopped however the test ends."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
from langgraph_server import stop_server

REPO = Path(__file__).resolve().parents[1]


def script_env(tmp_path: Path, *, drop: tuple[str, ...] = (), **over: str) -> dict[str, str]:
    """This process's environment with a private data dir and the offline tiny profile, without any identity or
    graph setting of the caller's shell (nor those named in `drop`), then `over` on top."""
    env = {**os.environ, "CXR_AGENT_DATA_DIR": str(tmp_path / "data"), "CXR_AGENT_MODEL_PROFILE": "tiny",
           "CXR_AGENT_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    for key in ("CXR_AGENT_SERVER_USERS", "CXR_AGENT_SERVER_AUTH_DISABLED", "CXR_AGENT_GRAPH_URL", *drop):
        env.pop(key, None)
    env.update(over)
    return env


@contextmanager
def serving(script: Path, env: Mapping[str, str], log: Path, *, cwd: Path | None = None,
            wait_s: float = 120) -> Iterator[tuple[subprocess.Popen, str]]:
    """Starts `script` with `env` (its port in CXR_AGENT_SERVER_PORT), output to `log`; yields the process and its
    URL once /ok answers; fails with the log's tail if it exits or is not up within `wait_s`."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(script)], env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    url = f"http://127.0.0.1:{env['CXR_AGENT_SERVER_PORT']}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield proc, url
    finally:
        stop_server(proc)
