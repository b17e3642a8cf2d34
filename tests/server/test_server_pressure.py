"""Probes of the server app under pressure, each in a child process with a bound on its CPU time or
peak memory: a 32 MB run body is refused without being read or parsed, and a burst of concurrent
uploads is held to the bytes-in-flight and decode-queue caps with 503/429 answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BODY_PROBE = textwrap.dedent("""
    import asyncio, json, resource, sys, time
    import server.app as srv

    MB = 32
    pulled = 0

    async def main():
        async def inner(scope, receive, send):
            raise SystemExit("the body reached the route")

        mw = srv.RefuseRawImageInput(inner)
        chunk = b"x" * 65536
        n = MB * 2**20 // len(chunk)
        sent = []

        async def receive():
            global pulled
            pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": pulled < n * len(chunk)}

        async def send(message):
            sent.append(message)

        headers = [] if sys.argv[1] == "streamed" else [(b"content-length", str(n * len(chunk)).encode())]
        scope = {"type": "http", "method": "POST", "path": "/threads/t/runs/wait", "headers": headers}
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu = time.process_time()
        await mw(scope, receive, send)
        return sent[0]["status"], time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base

    status, cpu, grown = asyncio.run(main())
    print(json.dumps({"status": status, "pulled": pulled, "cpu_s": cpu, "peak_growth_kb": grown}))
""")


def _child(script: str, *args: str, timeout: float = 120) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_32_mb_run_body_is_refused_unread():
    declared = _child(BODY_PROBE, "declared")
    assert declared["status"] == 413 and declared["pulled"] == 0  # refused from Content-Length alone
    streamed = _child(BODY_PROBE, "streamed")
    assert streamed["status"] == 413 and streamed["pulled"] <= 1024 * 1024 + 65536  # stopped at the cap
    assert streamed["cpu_s"] < 1.0 and streamed["peak_growth_kb"] < 16 * 1024  # not 4.7 s, not 32 MB


UPLOAD_PROBE = textwrap.dedent("""
    import asyncio, json, resource, sys, threading
    import httpx
    import server.app as srv
    from cxr_agent.settings import Settings

    settings = Settings(model_profile="tiny", offline=True, data_dir=sys.argv[1], decode_concurrency=1,
                        server_upload_queue=1, server_uploads_in_flight_mb=8, server_auth_disabled=True)
    srv._settings = lambda: settings
    gate = threading.Event()
    decoding = []

    def slow_ingest(data, filename, s):  # every decode waits until the burst is over
        decoding.append(len(data))
        gate.wait(30)
        return {"study_id": "x" * 64}

    srv.ingest_bytes = slow_ingest

    async def main():
        inner = srv.create_app()

        async def app(scope, receive, send):  # as LangGraph's auth hands over a signed-in user's request
            from types import SimpleNamespace
            if scope["type"] == "http":
                scope = {**scope, "user": SimpleNamespace(identity="reader-1"), "auth": SimpleNamespace(scopes=[])}
            await inner(scope, receive, send)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = b"\\0" * (3 * 2**20)
            tasks = [asyncio.create_task(client.post("/cxr/studies", content=body)) for _ in range(12)]
            await asyncio.sleep(1.0)
            peak_during = srv.PRESSURE.peak_bytes
            gate.set()
            answers = [r.status_code for r in await asyncio.gather(*tasks)]
            return answers, peak_during

    answers, peak = asyncio.run(main())
    print(json.dumps({"answers": answers, "peak_bytes": peak, "decoding": len(decoding),
                      "left_bytes": srv.PRESSURE.bytes, "left_ingesting": srv.PRESSURE.ingesting,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def test_a_burst_of_uploads_is_held_to_the_caps(tmp_path):
    out = _child(UPLOAD_PROBE, str(tmp_path))
    answers = out["answers"]
    assert out["peak_bytes"] <= 8 * 2**20  # never more than the in-flight budget held at once
    assert out["decoding"] <= 2 and answers.count(201) == out["decoding"]  # one decoding, one queued
    assert answers.count(503) + answers.count(429) == len(answers) - answers.count(201) > 0
    assert out["left_bytes"] == 0 and out["left_ingesting"] == 0  # everything given back
