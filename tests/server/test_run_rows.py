"""The production server's run queue as rows in a real Postgres (server/standalone/run_rows.py): workers
racing to claim never start two runs of one thread, a thread's runs start in the order they came, a lost
run is ended after its lease, a cancel ends a pending run and marks a running one, and runs left by a server
from before the queue end as errors when the tables are set up."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from server.standalone.run_rows import LOST, RunRows
from server.standalone.threads import SCHEMA, ThreadTable

OLD_RUNS = """
CREATE TABLE cxr_threads (thread_id uuid PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(), metadata jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'idle', "values" jsonb);
CREATE TABLE cxr_runs (run_id uuid PRIMARY KEY, thread_id uuid NOT NULL REFERENCES cxr_threads(thread_id)
    ON DELETE CASCADE, assistant_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(), status text NOT NULL DEFAULT 'pending',
    metadata jsonb NOT NULL DEFAULT '{}', multitask_strategy text NOT NULL DEFAULT 'enqueue', error text)
"""


def _pool(url: str):
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    return ConnectionPool(url, min_size=1, max_size=8, open=True,
                          kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})


@pytest.fixture
def rows(postgres_url):
    pool = _pool(postgres_url)
    queue = RunRows(pool)
    with queue.schema_lock():
        queue.setup(SCHEMA)
    yield queue
    pool.close()


def _thread(rows: RunRows) -> uuid.UUID:
    tid = uuid.uuid4()
    ThreadTable(rows.pool).create(tid, {})
    return tid


def _add(rows: RunRows, tid: uuid.UUID, text: str = "hi", strategy: str = "enqueue"):
    return rows.add(uuid.uuid4(), tid, "cxr_agent", {}, strategy, json.dumps({"input": {"text": text}}).encode(),
                    home="w0")


def _text(row) -> str:
    return json.loads(row["kwargs"])["input"]["text"]


def test_racing_workers_never_start_two_runs_of_one_thread_and_keep_its_order(rows):
    threads = [_thread(rows) for _ in range(3)]
    for n in range(4):
        for tid in threads:
            _add(rows, tid, f"turn {n}")
    claimed: list[dict] = []
    gate = threading.Barrier(6)

    def worker(name: str) -> None:
        gate.wait()
        row = rows.claim(name)
        if row is not None:
            claimed.append(row)

    workers = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(r["thread_id"] for r in claimed) == sorted(threads)  # one per thread, no more
    assert {_text(r) for r in claimed} == {"turn 0"}  # each thread's first
    assert rows.claim("w9") is None  # every thread has a running run
    first = claimed[0]
    rows.end(first["run_id"], first["thread_id"], "success", None, {"messages": []})
    nxt = rows.claim("w9")
    assert nxt["thread_id"] == first["thread_id"] and _text(nxt) == "turn 1"
    assert rows.state(first["run_id"]) == {"status": "success", "error": None}
    with rows.pool.connection() as conn:  # the ended run's input is not kept
        assert conn.execute("SELECT kwargs FROM cxr_runs WHERE run_id = %s", (first["run_id"],)).fetchone() == \
            {"kwargs": None}


def test_reject_refuses_while_a_run_is_pending_or_running(rows):
    tid = _thread(rows)
    assert _add(rows, tid, strategy="reject") is not None
    assert _add(rows, tid, strategy="reject") is None  # pending
    run = rows.claim("w1")
    assert _add(rows, tid, strategy="reject") is None  # running
    rows.end(run["run_id"], tid, "success", None, None)
    assert _add(rows, tid, strategy="reject") is not None


def test_a_cancel_ends_a_pending_run_and_marks_a_running_one(rows):
    tid = _thread(rows)
    running, pending = _add(rows, tid), _add(rows, tid)
    assert rows.claim("w1")["run_id"] == running["run_id"]
    before = rows.cancel([running["run_id"], pending["run_id"]])
    assert before == {running["run_id"]: "running", pending["run_id"]: "pending"}
    assert rows.state(pending["run_id"])["status"] == "interrupted"
    assert rows.state(running["run_id"])["status"] == "running"  # its process stops it
    assert rows.wanted("w1", [running["run_id"]]) == set()
    assert rows.cancel([pending["run_id"]]) == {}  # already over
    rows.end(running["run_id"], tid, "interrupted", None, None)
    assert rows.claim("w1") is None  # the cancelled pending run never starts


def test_a_run_whose_lease_ran_out_ends_as_an_error_and_frees_its_thread(rows):
    tid = _thread(rows)
    lost, kept = _add(rows, tid), _add(rows, _thread(rows))
    rows.claim("dead")
    rows.claim("alive")
    time.sleep(1.2)
    assert rows.renew("alive", [kept["run_id"]]) == {kept["run_id"]}
    assert rows.reap(lease_s=1.0, keep_events_s=60) == 1
    assert rows.state(lost["run_id"]) == {"status": "error", "error": LOST}
    assert rows.state(kept["run_id"])["status"] == "running"
    assert ThreadTable(rows.pool).get(tid, None)["status"] == "idle"
    rows.end(lost["run_id"], tid, "success", None, {"late": True})  # the lost process wakes up: too late
    assert rows.state(lost["run_id"])["status"] == "error"
    assert ThreadTable(rows.pool).get(tid, None)["values"] == {}
    _add(rows, tid)
    assert rows.claim("alive")["thread_id"] == tid


def test_runs_left_by_a_server_from_before_the_queue_end_as_errors(postgres_url):
    pool = _pool(postgres_url)
    tid, running, pending = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with pool.connection() as conn:
        for statement in OLD_RUNS.split(";"):
            conn.execute(statement)
        conn.execute("INSERT INTO cxr_threads (thread_id, status) VALUES (%s, 'busy')", (tid,))
        for rid, status in ((running, "running"), (pending, "pending")):
            conn.execute("INSERT INTO cxr_runs (run_id, thread_id, assistant_id, status) VALUES (%s, %s, 'g', %s)",
                         (rid, tid, status))
    rows = RunRows(pool)
    with rows.schema_lock():
        rows.setup(SCHEMA)
    assert rows.state(running)["status"] == rows.state(pending)["status"] == "error"
    assert ThreadTable(pool).get(tid, None)["status"] == "idle"
    assert rows.claim("w1") is None
    pool.close()


def test_a_second_process_waiting_for_the_schema_never_blocks_the_first_ones_checkpointer_setup(postgres_url):
    """Two processes starting together on an empty database: the second waits for the schema lock while the
    first sets up the checkpointer, whose indexes are built CONCURRENTLY (they wait for older transactions).
    Waiting inside ``pg_advisory_lock`` deadlocked them, unseen by Postgres."""
    import psycopg

    from agents.memory.checkpointers import make_checkpointer

    first, second = RunRows(_pool(postgres_url)), RunRows(_pool(postgres_url))
    second_in = threading.Event()

    def second_start() -> None:
        with second.schema_lock():
            second_in.set()

    set_up = threading.Event()
    with first.schema_lock():
        waiter = threading.Thread(target=second_start, daemon=True)
        waiter.start()
        time.sleep(1.0)  # the second process is now waiting for the lock
        assert not second_in.is_set()

        def checkpointer_setup() -> None:
            make_checkpointer(url=postgres_url)  # runs the saver's migrations, CREATE INDEX CONCURRENTLY
            set_up.set()

        builder = threading.Thread(target=checkpointer_setup, daemon=True)
        builder.start()
        builder.join(timeout=30)
        if not set_up.is_set():  # deadlocked: free the waiting sessions so the test can end
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert set_up.is_set(), "the checkpointer's set-up waited on the process waiting for the schema lock"
        first.setup(SCHEMA)
    waiter.join(timeout=30)
    assert second_in.is_set()
    first.pool.close()
    second.pool.close()
