"""Runs: claimed from the Postgres queue (``run_rows.py``) by any server process, ``jobs`` at once here.

Several processes (or machines) may serve one database: each claims pending runs while it has a free
worker, runs them in worker threads (the graph and its tools are synchronous), keeps their events in
memory for its own listeners and writes them to the database for listeners on other processes. A
thread's runs run one after another in the order they came (``multitask_strategy="enqueue"``) or a
second one is refused while one is pending or running (``"reject"``, HTTP 409), across processes.
Cancelling, joining and streaming work from any process: they read and write the run's row.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import orjson
from starlette.concurrency import run_in_threadpool

from server.standalone.heap import give_back
from server.standalone.run_rows import ENDED, RunRows
from server.standalone.wire import dumps

log = logging.getLogger(__name__)

STRATEGIES = ("enqueue", "reject")
STREAM_MODES = ("values", "updates", "custom", "messages", "debug", "tasks", "checkpoints")


def _kind(exc: BaseException) -> str:
    """What failed, without its message: a database error quotes the row it refused (a conversation)."""
    return type(exc).__name__


@dataclass
class Run:
    """One run this process claimed, from claimed to ended."""

    run_id: UUID
    thread_id: UUID
    input: Any
    command: Any
    config: dict[str, Any]
    stream_mode: list[str]
    options: dict[str, Any]
    status: str = "running"
    events: list[tuple[str, Any]] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    final_values: Any = None
    error: dict[str, Any] | None = None
    written: int = 0  # events already in the database

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Run:
        kw = orjson.loads(row["kwargs"]) if row["kwargs"] else {}
        return cls(run_id=row["run_id"], thread_id=row["thread_id"], input=kw.get("input"),
                   command=kw.get("command"), config=kw.get("config") or {},
                   stream_mode=kw.get("stream_mode") or ["values"], options=kw.get("options") or {})

    def push(self, event: str, data: Any) -> None:
        """Record an event and wake the listeners (on the event loop)."""
        self.events.append((event, data))
        if event == "error":
            self.error = data
        self._wake.set()
        self._wake = asyncio.Event()

    async def follow(self, start: int = 0) -> AsyncIterator[tuple[str, Any]]:
        """Every event of the run from index ``start``, until it ends."""
        i = start
        while True:
            wake = self._wake
            while i < len(self.events):
                yield self.events[i]
                i += 1
            if self.ended.is_set():
                return
            await wake.wait()


@dataclass(frozen=True)
class Outcome:
    """How a run ended, wherever it ran."""

    status: str
    values: Any = None
    error: dict[str, Any] | None = None


Executor = Callable[[Run, Callable[[str, Any], None]], tuple[str, Any, str | None]]
"""Runs a turn in a worker thread: ``(run, emit) -> (status, final values, error)``."""


class RunQueue:
    """This process's workers on the shared queue: claim, run, renew the lease, notice cancels."""

    def __init__(self, jobs: int, rows: RunRows, execute: Executor, *, lease_s: float = 60.0,
                 poll_s: float = 0.25) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1 (got {jobs})")
        if lease_s < 3 * poll_s:
            raise ValueError(f"the run lease ({lease_s} s) must be at least three polls ({3 * poll_s} s)")
        self.jobs, self.rows, self.execute = jobs, rows, execute
        self.lease_s, self.poll_s = lease_s, poll_s
        self.worker = uuid4().hex  # this process, in the runs it claims and creates
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cxr-run")
        self.local: dict[UUID, Run] = {}  # runs executing here
        self.most_at_once = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> int:
        return len(self.local)

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(t) for t in (self._claimer(), self._keeper())]

    def nudge(self) -> None:
        """A run was queued or ended here: look for work now rather than at the next poll."""
        self._wake.set()

    # --- claiming and running ------------------------------------------------------------------------
    async def _claimer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while len(self.local) < self.jobs:
                    row = await run_in_threadpool(self.rows.claim, self.worker)
                    if row is None:
                        break
                    run = Run.from_row(row)
                    self.local[run.run_id] = run
                    self.most_at_once = max(self.most_at_once, len(self.local))
                    asyncio.get_running_loop().create_task(self._run(run))
            except Exception as exc:  # noqa: BLE001 - the database is away for a moment: try again at the next poll
                log.warning("claiming a run failed: %s", _kind(exc))

    async def _run(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        status, values, error = "error", None, None

        def emit(event: str, data: Any) -> None:
            loop.call_soon_threadsafe(run.push, event, data)

        try:
            status, values, error = await loop.run_in_executor(self.pool, self.execute, run, emit)
        except Exception as exc:  # noqa: BLE001 - the run ends as an error; the server goes on
            log.warning("a run failed outside the graph: %s", _kind(exc))
            error = type(exc).__name__
        await asyncio.sleep(0)  # the worker's last events reach run.events first
        run.status, run.final_values = status, values
        try:
            await self._write_events(run)
            await run_in_threadpool(self.rows.end, run.run_id, run.thread_id, status, error, values)
        except Exception as exc:  # noqa: BLE001 - its lease runs out and another process ends it
            log.warning("recording a run's end failed: %s", _kind(exc))
        finally:
            run.ended.set()
            run._wake.set()
            self.local.pop(run.run_id, None)
            self.nudge()
            if not self.local:  # idle: hand the C heap's freed pages back (server/standalone/heap.py)
                loop.run_in_executor(None, give_back)

    async def _write_events(self, run: Run) -> None:
        new = run.events[run.written:]
        if new:
            rows = [(run.run_id, run.written + i, event, dumps(data)) for i, (event, data) in enumerate(new)]
            await run_in_threadpool(self.rows.write_events, rows)
            run.written += len(new)

    async def _keeper(self) -> None:
        """Every poll: write new events, notice cancels; every third of a lease: renew it, reap lost runs."""
        loop = asyncio.get_running_loop()
        last_renewal = 0.0
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                runs = list(self.local.values())
                for run in runs:
                    await self._write_events(run)
                renew = loop.time() - last_renewal >= self.lease_s / 3
                if runs:
                    ids = [r.run_id for r in runs]
                    check = self.rows.renew if renew else self.rows.wanted
                    wanted = await run_in_threadpool(check, self.worker, ids)
                    for run in runs:
                        if run.run_id not in wanted and not run.ended.is_set():
                            run.cancelled.set()
                if renew:
                    last_renewal = loop.time()
                    lost = await run_in_threadpool(self.rows.reap, self.lease_s, 60.0)
                    if lost:
                        log.warning("%d run(s) ended as errors: their server process stopped renewing them", lost)
                        self.nudge()
            except Exception as exc:  # noqa: BLE001 - the database is away for a moment: try again at the next poll
                log.warning("keeping the runs failed: %s", _kind(exc))

    # --- from any process ----------------------------------------------------------------------------
    async def cancel(self, run_ids: list[UUID]) -> dict[UUID, str]:
        """Stop runs wherever they are: a pending one never starts, a running one stops at its next step."""
        for rid in run_ids:
            if rid in self.local:
                self.local[rid].cancelled.set()
        return await run_in_threadpool(self.rows.cancel, run_ids)

    async def outcome(self, run_id: UUID) -> Outcome:
        """Wait until the run ends (here or on another process); how it ended."""
        while True:
            run = self.local.get(run_id)
            if run is not None:
                await run.ended.wait()
                return Outcome(run.status, run.final_values, run.error)
            row = await run_in_threadpool(self.rows.state, run_id)
            if row is None:
                return Outcome("interrupted")  # its thread was deleted
            if row["status"] in ENDED:
                error = None
                if row["status"] == "error":
                    failed = [orjson.loads(d) for e, d in await run_in_threadpool(self.rows.events, run_id, 0)
                              if e == "error"]
                    error = failed[-1] if failed else {"error": "RunError", "message": row["error"] or "the run failed"}
                return Outcome(row["status"], None, error)
            await asyncio.sleep(self.poll_s)

    async def follow(self, run_id: UUID) -> AsyncIterator[tuple[str, Any]]:
        """Every event of the run, from the first, until it ends: from memory where it runs here, else
        from the database."""
        i = 0
        while True:
            run = self.local.get(run_id)
            if run is not None:
                async for item in run.follow(i):
                    yield item
                return
            row = await run_in_threadpool(self.rows.state, run_id)  # read before the events: none is missed
            for event, data in await run_in_threadpool(self.rows.events, run_id, i):
                yield event, orjson.loads(data)
                i += 1
            if row is None or row["status"] in ENDED:
                return
            await asyncio.sleep(self.poll_s)

    async def stop_thread(self, thread_id: UUID, timeout_s: float = 30.0) -> None:
        """Cancel a thread's runs and wait (bounded) until none runs anywhere, so a deleted thread's
        checkpoints are not written again after they are deleted."""
        ids = await run_in_threadpool(self.rows.unfinished, thread_id)
        if not ids:
            return
        await self.cancel(ids)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await run_in_threadpool(self.rows.running, thread_id):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("a deleted thread's run did not stop within %.0f s", timeout_s)
                return
            await asyncio.sleep(self.poll_s / 2)

    def busy(self, thread_id: UUID) -> bool:
        """Whether the thread has a run pending or running on any process (blocking)."""
        return self.rows.busy(thread_id)

    async def shutdown(self) -> None:
        """Stop claiming; this process's running runs end as errors saying why, then their turns stop."""
        for task in self._tasks:
            task.cancel()
        if self.local:
            await run_in_threadpool(self.rows.abandon, self.worker, "the server stopped before this run finished")
        for run in list(self.local.values()):
            run.cancelled.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
