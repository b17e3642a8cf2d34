"""The run queue as Postgres rows, shared by every server process on the database.

A run waits as a ``pending`` row holding its input (``kwargs``) until a process with a free worker
claims it: ``FOR UPDATE SKIP LOCKED``, oldest first, and only the oldest pending run of a thread that
has none running. A unique partial index lets a thread hold one ``running`` row whatever the processes
race, so one thread's turns never overlap. The claiming process renews the run's lease
(``heartbeat_at``); a run whose lease ran out lost its process and any process ends it as an error.
A cancel ends a pending run at once and marks a running one (``cancel_requested``), which its process
polls. Stream events are kept in ``cxr_run_events`` for listeners on other processes, briefly.
A run's input is cleared when it ends: conversations live in the checkpoints, not here. Runs left
unfinished by a server from before the queue (no input kept, no lease) end as errors when the tables are set up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from server.standalone.threads import write_status
from server.standalone.wire import jsonb

SCHEMA = """
ALTER TABLE cxr_runs ADD COLUMN IF NOT EXISTS seq bigserial;
ALTER TABLE cxr_runs ADD COLUMN IF NOT EXISTS kwargs bytea;
ALTER TABLE cxr_runs ADD COLUMN IF NOT EXISTS home text;
ALTER TABLE cxr_runs ADD COLUMN IF NOT EXISTS worker text;
ALTER TABLE cxr_runs ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;
ALTER TABLE cxr_runs ADD COLUMN IF NOT EXISTS cancel_requested boolean NOT NULL DEFAULT false;
UPDATE cxr_runs SET status = 'error', error = 'the server stopped before this run finished', updated_at = now()
    WHERE (status = 'pending' AND kwargs IS NULL) OR (status = 'running' AND heartbeat_at IS NULL);
UPDATE cxr_threads t SET status = 'idle' WHERE status = 'busy'
    AND NOT EXISTS (SELECT 1 FROM cxr_runs r WHERE r.thread_id = t.thread_id AND r.status = 'running');
CREATE UNIQUE INDEX IF NOT EXISTS cxr_runs_one_running ON cxr_runs (thread_id) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS cxr_runs_pending ON cxr_runs (seq) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS cxr_run_events (
    run_id uuid NOT NULL REFERENCES cxr_runs(run_id) ON DELETE CASCADE,
    seq integer NOT NULL,
    event text NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""
_SCHEMA_LOCK = 0x63787252  # an advisory lock's key
_SCHEMA_POLL_S = 0.2


def _first(row: Any) -> Any:
    """The first column of a row, whichever row factory the pool uses."""
    return row["got"] if isinstance(row, dict) else row[0]


ENDED = ("success", "error", "interrupted", "timeout")
LOST = "the server process running this run stopped before it finished"

_CLAIM = """
WITH next AS (
    SELECT r.run_id FROM cxr_runs r
    WHERE r.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM cxr_runs x WHERE x.thread_id = r.thread_id AND x.status = 'running')
      AND NOT EXISTS (SELECT 1 FROM cxr_runs y WHERE y.thread_id = r.thread_id AND y.status = 'pending'
                      AND y.seq < r.seq)
    ORDER BY (r.home = %(worker)s) DESC, r.seq
    LIMIT 1
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE cxr_runs SET status = 'running', worker = %(worker)s, heartbeat_at = now(), updated_at = now()
FROM next WHERE cxr_runs.run_id = next.run_id
RETURNING cxr_runs.run_id, cxr_runs.thread_id, cxr_runs.kwargs
"""


class RunRows:
    """Claiming, leasing, cancelling and ending runs, and their events (synchronous; off the event loop)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """One process at a time creates or alters the tables (several may start together).

        The lock is polled, never waited for inside a statement: the checkpointer's set-up builds indexes
        CONCURRENTLY, which waits for every older open transaction, so a second process blocked in
        ``pg_advisory_lock`` would wait on the first while the first's index build waited on it, unseen by
        Postgres's deadlock detector."""
        with self.pool.connection() as conn:
            while not _first(conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_SCHEMA_LOCK,)).fetchone()):
                time.sleep(_SCHEMA_POLL_S)
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    def setup(self, thread_schema: str) -> None:
        """The threads and runs tables and the queue's columns (under ``schema_lock``)."""
        with self.pool.connection() as conn:
            for statement in filter(str.strip, (thread_schema + SCHEMA).split(";")):
                conn.execute(statement)

    def add(self, run_id: UUID, thread_id: UUID, assistant_id: str, metadata: dict[str, Any], strategy: str,
            kwargs: bytes, home: str) -> dict[str, Any] | None:
        """Queue a run; None when ``strategy`` is ``reject`` and the thread has one pending or running.

        ``kwargs`` is the run's input as JSON bytes, stored as they are (the database never parses a
        conversation, so none can appear in its error messages). The thread's row is locked while
        checking, so two processes cannot both pass the check."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM cxr_threads WHERE thread_id = %s FOR UPDATE", (thread_id,))
            if strategy == "reject" and self._busy(conn, thread_id):
                return None
            return conn.execute(
                "INSERT INTO cxr_runs (run_id, thread_id, assistant_id, metadata, multitask_strategy, kwargs, home) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (run_id, thread_id, assistant_id, jsonb(metadata), strategy, kwargs, home)).fetchone()

    @staticmethod
    def _busy(conn: psycopg.Connection, thread_id: UUID) -> bool:
        return conn.execute("SELECT 1 FROM cxr_runs WHERE thread_id = %s AND status IN ('pending', 'running') "
                            "LIMIT 1", (thread_id,)).fetchone() is not None

    def busy(self, thread_id: UUID) -> bool:
        """Whether the thread has a run pending or running on any process."""
        with self.pool.connection() as conn:
            return self._busy(conn, thread_id)

    def claim(self, worker: str) -> dict[str, Any] | None:
        """The next run this worker may start (now ``running`` under its lease), or None."""
        for _ in range(3):
            try:
                with self.pool.connection() as conn, conn.transaction():
                    row = conn.execute(_CLAIM, {"worker": worker}).fetchone()
                    if row is not None:
                        conn.execute("UPDATE cxr_threads SET status = 'busy', updated_at = now() WHERE thread_id = %s",
                                     (row["thread_id"],))
                    return row
            except psycopg.errors.UniqueViolation:  # another process started this thread's run first
                continue
        return None

    def renew(self, worker: str, run_ids: Sequence[UUID]) -> set[UUID]:
        """Renew these runs' lease; the ones still wanted (running here, not cancelled, not deleted)."""
        with self.pool.connection() as conn:
            rows = conn.execute("UPDATE cxr_runs SET heartbeat_at = now() WHERE run_id = ANY(%s) AND worker = %s "
                                "AND status = 'running' RETURNING run_id, cancel_requested",
                                (list(run_ids), worker)).fetchall()
        return {r["run_id"] for r in rows if not r["cancel_requested"]}

    def wanted(self, worker: str, run_ids: Sequence[UUID]) -> set[UUID]:
        """Of these runs, the ones still running here and not cancelled (a cheap poll between renewals)."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT run_id FROM cxr_runs WHERE run_id = ANY(%s) AND worker = %s "
                                "AND status = 'running' AND NOT cancel_requested", (list(run_ids), worker)).fetchall()
        return {r["run_id"] for r in rows}

    def end(self, run_id: UUID, thread_id: UUID, status: str, error: str | None, values: Any) -> None:
        """The run's end, its input cleared, and its thread's status and latest values; nothing when the run
        was already ended for this process (its lease ran out, or the process is stopping)."""
        thread_status = "error" if status == "error" else "idle"
        with self.pool.connection() as conn, conn.transaction():
            if conn.execute("UPDATE cxr_runs SET status = %s, error = %s, kwargs = NULL, updated_at = now() "
                            "WHERE run_id = %s AND status = 'running' RETURNING 1",
                            (status, error, run_id)).fetchone() is None:
                return
            write_status(conn, thread_id, thread_status, values)

    def cancel(self, run_ids: Iterable[UUID]) -> dict[UUID, str]:
        """End these runs if pending, mark them if running; each one that was still on, with its status before."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "UPDATE cxr_runs r SET cancel_requested = true, updated_at = now(), "
                "status = CASE WHEN r.status = 'pending' THEN 'interrupted' ELSE r.status END, "
                "kwargs = CASE WHEN r.status = 'pending' THEN NULL ELSE r.kwargs END "
                "FROM cxr_runs prev WHERE r.run_id = prev.run_id AND r.run_id = ANY(%s) "
                "AND r.status IN ('pending', 'running') RETURNING r.run_id, prev.status",
                (list(run_ids),)).fetchall()
        return {r["run_id"]: r["status"] for r in rows}

    def unfinished(self, thread_id: UUID) -> list[UUID]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT run_id FROM cxr_runs WHERE thread_id = %s AND status IN ('pending', 'running')",
                                (thread_id,)).fetchall()
        return [r["run_id"] for r in rows]

    def running(self, thread_id: UUID) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM cxr_runs WHERE thread_id = %s AND status = 'running'",
                                (thread_id,)).fetchone() is not None

    def state(self, run_id: UUID) -> dict[str, Any] | None:
        """A run's status and error (None once its thread is deleted)."""
        with self.pool.connection() as conn:
            return conn.execute("SELECT status, error FROM cxr_runs WHERE run_id = %s", (run_id,)).fetchone()

    def write_events(self, rows: list[tuple[UUID, int, str, bytes]]) -> None:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO cxr_run_events (run_id, seq, event, data) VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT DO NOTHING", rows)

    def events(self, run_id: UUID, after: int) -> list[tuple[str, bytes]]:
        """The run's events from index ``after`` on, in order."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT event, data FROM cxr_run_events WHERE run_id = %s AND seq >= %s ORDER BY seq",
                                (run_id, after)).fetchall()
        return [(r["event"], bytes(r["data"])) for r in rows]

    def reap(self, lease_s: float, keep_events_s: float) -> int:
        """End as errors the runs whose process stopped renewing their lease; drop old runs' events."""
        with self.pool.connection() as conn, conn.transaction():
            lost = conn.execute("UPDATE cxr_runs SET status = 'error', error = %s, kwargs = NULL, updated_at = now() "
                                "WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %s) "
                                "RETURNING thread_id", (LOST, lease_s)).fetchall()
            if lost:
                conn.execute("UPDATE cxr_threads SET status = 'idle', updated_at = now() WHERE thread_id = ANY(%s) "
                             "AND status = 'busy'", ([r["thread_id"] for r in lost],))
            conn.execute("DELETE FROM cxr_run_events e USING cxr_runs r WHERE e.run_id = r.run_id "
                         "AND r.status <> 'pending' AND r.status <> 'running' "
                         "AND r.updated_at < now() - make_interval(secs => %s)", (keep_events_s,))
        return len(lost)

    def abandon(self, worker: str, reason: str) -> None:
        """At shutdown: this process's running runs end as errors (their threads go idle)."""
        with self.pool.connection() as conn, conn.transaction():
            rows = conn.execute("UPDATE cxr_runs SET status = 'error', error = %s, kwargs = NULL, updated_at = now() "
                                "WHERE worker = %s AND status = 'running' RETURNING thread_id",
                                (reason, worker)).fetchall()
            if rows:
                conn.execute("UPDATE cxr_threads SET status = 'idle', updated_at = now() WHERE thread_id = ANY(%s)",
                             ([r["thread_id"] for r in rows],))
