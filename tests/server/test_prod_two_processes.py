"""Two production server processes on one Postgres database share its run queue: one thread's runs never
overlap whichever process took them, two threads' runs run at once on the two processes, a run created on
one is joined, streamed and cancelled from the other, a dead process's run is ended by the other after
its lease; a client that goes away cancels its run when it asked to; deleting a thread cancels its runs.

Runs are held mid-turn (their graph started, its first event sent) by a gate file
(tests/server/gated_prod_server.py); a cancelled one is stopped by the server as any run is."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prod_server import prod_server

pytestmark = pytest.mark.timeout(420)

LAUNCHER = Path(__file__).with_name("gated_prod_server.py")
HELLO = [{"role": "user", "content": "Hello"}]
LEASE_S = 4


@pytest.fixture(scope="module")
def gates(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, postgres_server, gates):
    import psycopg

    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "two_processes"')
    url = postgres_server.url.rsplit("/", 1)[0] + "/two_processes"
    shared = tmp_path_factory.mktemp("shared-data")  # studies on shared storage, as README asks
    env = {"CXR_TEST_GATES": str(gates), "CXR_AGENT_DATA_DIR": str(shared), "CXR_AGENT_VERIFY_CONFLICTS": "false"}
    args = ("--run-lease-s", str(LEASE_S))
    with prod_server(tmp_path_factory.mktemp("a"), url, env, jobs=2, launcher=LAUNCHER, extra_args=args) as a, \
            prod_server(tmp_path_factory.mktemp("b"), url, env, jobs=2, launcher=LAUNCHER, extra_args=args) as b:
        yield a, b, url


def _sdk(server):
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=server.url, api_key=None)


def _gate() -> str:
    return uuid.uuid4().hex[:12]


def _run(client, thread: str, gate: str | None = None, **kw):
    config = {"configurable": {"test_gate": gate}} if gate else None
    return client.runs.create(thread, "cxr_agent", input={"messages": HELLO}, config=config, **kw)


def _notes(gates: Path) -> list[dict]:
    path = gates / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _note(gates: Path, gate: str, what: str) -> dict | None:
    return next((n for n in _notes(gates) if n["gate"] == gate and n["what"] == what), None)


def _until(check, timeout_s: float = 60.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


def _open(gates: Path, gate: str) -> None:
    (gates / f"open-{gate}").touch()


def _status(client, thread: str, run_id: str) -> str:
    return client.runs.get(thread, run_id)["status"]


def _ended(client, thread: str, run_id: str, timeout_s: float = 120.0) -> str:
    return _until(lambda: (s := _status(client, thread, run_id)) not in ("pending", "running") and s,
                  timeout_s, f"the end of run {run_id}")


def test_one_threads_runs_never_overlap_and_two_threads_run_at_once_on_two_processes(servers, gates):
    import psycopg
    from langgraph_sdk.errors import ConflictError

    a, b, url = servers
    on_a, on_b = _sdk(a), _sdk(b)
    first, x, y = (on_a.threads.create()["thread_id"] for _ in range(3))
    g1, g2, gx, gy = _gate(), _gate(), _gate(), _gate()
    r1 = _run(on_a, first, g1)
    r2 = _run(on_b, first, g2)  # the same thread, queued on the other process
    rx, ry = _run(on_b, x, gx), _run(on_a, y, gy)
    held = [_until(lambda g=g: _note(gates, g, "start"), what="a run starting") for g in (g1, gx, gy)]
    assert len({n["pid"] for n in held}) == 2  # three at once: more than one process (2 jobs each) holds
    with pytest.raises(ConflictError):  # "reject" sees the other process's run
        _run(on_b, first, multitask_strategy="reject")
    time.sleep(1.5)  # several claim polls of both processes, one of which has a free job
    assert _note(gates, g2, "start") is None and _status(on_a, first, r2["run_id"]) == "pending"
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.UniqueViolation):  # the database says so
        conn.execute("UPDATE cxr_runs SET status = 'running' WHERE run_id = %s", (r2["run_id"],))
    _open(gates, g2)  # opening the queued run's gate early must not let it overtake run 1
    time.sleep(1.0)
    assert _note(gates, g2, "start") is None
    for gate in (g1, gx, gy):
        _open(gates, gate)
    for thread, run in ((first, r1), (first, r2), (x, rx), (y, ry)):
        assert _ended(on_a, thread, run["run_id"]) == "success"
    assert _note(gates, g2, "start")["t"] >= _note(gates, g1, "end")["t"]  # one after the other
    humans = [m["content"] for m in on_b.threads.get_state(first)["values"]["messages"] if m["type"] == "human"]
    assert humans == ["Hello", "Hello"]


def _elsewhere(servers, pid: int):
    """A client of the server process that is not running the run (pid: the process running it)."""
    a, b, _ = servers
    assert pid in (a.proc.pid, b.proc.pid)
    return _sdk(b if pid == a.proc.pid else a)


def test_a_run_created_on_one_process_is_streamed_joined_and_cancelled_from_the_other(servers, gates):
    a, _, _ = servers
    on_a = _sdk(a)
    thread = on_a.threads.create()["thread_id"]
    gate = _gate()
    run = _run(on_a, thread, gate)
    other = _elsewhere(servers, _until(lambda: _note(gates, gate, "start"), what="the run starting")["pid"])
    seen: list = []
    streamer = threading.Thread(target=lambda: seen.extend(other.runs.join_stream(thread, run["run_id"])))
    streamer.start()
    _until(lambda: any(p.event == "custom" and p.data.get("event") == "held" for p in seen), 30,
           "the held event reaching the other process's stream")
    assert _status(other, thread, run["run_id"]) == "running"
    _open(gates, gate)
    joined = other.runs.join(thread, run["run_id"])
    streamer.join(60)
    assert not streamer.is_alive()
    assert joined["messages"][-1]["type"] == "ai"
    assert joined == other.threads.get_state(thread)["values"]
    assert [p.data for p in seen if p.event == "values"][-1]["messages"] == joined["messages"]  # to the last event

    gate = _gate()
    held = _run(on_a, thread, gate)
    other = _elsewhere(servers, _until(lambda: _note(gates, gate, "start"), what="the second run starting")["pid"])
    other.runs.cancel(thread, held["run_id"])
    assert _until(lambda: _note(gates, gate, "cancelled"), 15, "the cancel reaching the running process")
    assert _ended(on_a, thread, held["run_id"]) == "interrupted"
    blocking_gate, pending_gate = _gate(), _gate()
    blocker, queued = _run(on_a, thread, blocking_gate), _run(on_a, thread, pending_gate)
    other = _elsewhere(servers, _until(lambda: _note(gates, blocking_gate, "start"), what="the blocking run")["pid"])
    other.runs.cancel(thread, queued["run_id"])  # pending behind a run on another process: it never starts
    assert _status(on_a, thread, queued["run_id"]) == "interrupted"
    other.runs.cancel(thread, blocker["run_id"])
    assert _ended(on_a, thread, blocker["run_id"]) == "interrupted"
    time.sleep(1.0)
    assert _note(gates, pending_gate, "start") is None


def test_a_client_that_goes_away_cancels_its_run_only_when_it_asked(servers, gates):
    a, _, _ = servers
    client = _sdk(a)
    thread = client.threads.create()["thread_id"]

    def stream_and_leave(gate: str, **kw) -> str:
        parts = client.runs.stream(thread, "cxr_agent", input={"messages": HELLO}, stream_mode=["custom"],
                                   config={"configurable": {"test_gate": gate}}, **kw)
        run_id = next(parts).data["run_id"]
        assert next(parts).data["event"] == "held"
        parts.close()  # the client goes away mid-run
        return run_id

    gate = _gate()
    run_id = stream_and_leave(gate, on_disconnect="cancel")
    assert _until(lambda: _note(gates, gate, "cancelled"), 15, "the disconnect cancelling the run")
    assert _ended(client, thread, run_id) == "interrupted"

    gate = _gate()
    run_id = stream_and_leave(gate)  # LangGraph Server's default: the run goes on
    time.sleep(1.5)
    assert _status(client, thread, run_id) == "running" and _note(gates, gate, "cancelled") is None
    _open(gates, gate)
    assert _ended(client, thread, run_id) == "success"

    gate = _gate()  # runs.wait alike: the client's read times out and it hangs up
    body = {"assistant_id": "cxr_agent", "input": {"messages": HELLO}, "on_disconnect": "cancel",
            "config": {"configurable": {"test_gate": gate}}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{a.url}/threads/{thread}/runs/wait", json=body, timeout=httpx.Timeout(30, read=2.0))
    assert _until(lambda: _note(gates, gate, "cancelled"), 15, "the wait's disconnect cancelling the run")
    assert client.runs.list(thread)[0]["status"] == "interrupted"
    r = httpx.post(f"{a.url}/threads/{thread}/runs/wait", json={**body, "on_disconnect": "later"})
    assert r.status_code == 422 and "on_disconnect" in r.json()["detail"]


def test_deleting_a_thread_cancels_its_running_and_pending_runs(servers, gates):
    import psycopg

    a, _, url = servers
    on_a = _sdk(a)
    thread = on_a.threads.create()["thread_id"]
    done = _run(on_a, thread)  # a checkpoint to delete
    assert _ended(on_a, thread, done["run_id"]) == "success"
    running_gate, pending_gate = _gate(), _gate()
    _run(on_a, thread, running_gate)
    _run(on_a, thread, pending_gate)
    runner = _until(lambda: _note(gates, running_gate, "start"), what="the run starting")["pid"]
    _elsewhere(servers, runner).threads.delete(thread)  # from the other process
    assert _note(gates, running_gate, "cancelled") is not None  # stopped before the delete answered
    _open(gates, pending_gate)
    time.sleep(1.5)
    assert _note(gates, pending_gate, "start") is None  # never started
    with psycopg.connect(url) as conn:
        for table in ("cxr_runs", "checkpoints"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE thread_id::text = %s",
                                (thread,)).fetchone()[0] == 0


def test_a_message_with_a_nul_character_runs_and_stays_out_of_the_log(servers):
    _, b, _ = servers
    client = _sdk(b)
    thread = client.threads.create()["thread_id"]
    said = "Hello from Jane Roe-Quist\u0000 at the front desk"
    out = client.runs.wait(thread, "cxr_agent", input={"messages": [{"role": "user", "content": said}]})
    row_said = said.replace("\u0000", "\ufffd")  # the thread's row (jsonb) cannot hold a NUL
    assert out["messages"][0]["content"] in (said, row_said)
    assert client.threads.get_state(thread)["values"]["messages"][0]["content"] == said  # the checkpoint keeps it
    assert client.runs.list(thread)[0]["status"] == "success"
    assert client.threads.get(thread)["status"] == "idle"  # its row took the values (a NUL sent as U+FFFD)
    assert client.threads.get(thread)["values"]["messages"][0]["content"] == row_said
    assert "Roe-Quist" not in b.log.read_text()


def test_a_process_that_stops_cleanly_ends_its_running_run_at_once(servers, gates):
    a, b, _ = servers
    thread = _sdk(a).threads.create()["thread_id"]
    gate = _gate()
    run = _run(_sdk(a), thread, gate)
    runner = _until(lambda: _note(gates, gate, "start"), what="the run starting")["pid"]
    stopping, survivor = (a, _sdk(b)) if runner == a.proc.pid else (b, _sdk(a))
    stopping.stop()  # SIGINT: uvicorn's shutdown
    try:
        assert _status(survivor, thread, run["run_id"]) == "error"  # at once, not after the lease
        assert "the server stopped before this run finished" in \
            survivor.runs.join(thread, run["run_id"])["__error__"]["message"]
        assert survivor.threads.get(thread)["status"] == "idle"
    finally:
        stopping.start()


def test_a_dead_processs_run_is_ended_by_the_other_after_its_lease(servers, gates):
    a, b, _ = servers
    thread = _sdk(a).threads.create()["thread_id"]
    gate = _gate()
    run = _run(_sdk(a), thread, gate)
    runner = _until(lambda: _note(gates, gate, "start"), what="the run starting")["pid"]
    dead, survivor = (a, _sdk(b)) if runner == a.proc.pid else (b, _sdk(a))
    os.killpg(dead.proc.pid, signal.SIGKILL)  # no shutdown: its lease simply stops being renewed
    dead.proc.wait()
    died = time.monotonic()
    assert _ended(survivor, thread, run["run_id"], timeout_s=4 * LEASE_S) == "error"
    assert time.monotonic() - died >= LEASE_S - 1.5
    assert "stopped before it finished" in survivor.runs.join(thread, run["run_id"])["__error__"]["message"]
    assert survivor.threads.get(thread)["status"] == "idle"
    after = _run(survivor, thread)  # the thread is free again
    assert _ended(survivor, thread, after["run_id"]) == "success"

