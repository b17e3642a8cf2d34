"""Runs: a bounded pool of turns, one at a time per thread, with their events for streaming clients.

``jobs`` turns run at once (worker threads: the graph and its tools are synchronous); a thread's runs
run one after another in the order they came (``multitask_strategy="enqueue"``) or a second one is
refused while one is pending or running (``"reject"``, HTTP 409). Each run keeps its stream events in
memory only until it ends and its listeners have read them; the run's row (status, error) and the
thread's checkpoints are in Postgres, so nothing about a finished run stays in this process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from server.standalone.heap import give_back

log = logging.getLogger(__name__)

STRATEGIES = ("enqueue", "reject")
STREAM_MODES = ("values", "updates", "custom", "messages", "debug", "tasks", "checkpoints")


class RunRefused(Exception):
    """A run the server will not start; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Run:
    """One run in this process, from accepted to ended."""

    run_id: UUID
    thread_id: UUID
    input: Any
    command: Any
    config: dict[str, Any]
    stream_mode: list[str]
    options: dict[str, Any]
    status: str = "pending"
    events: list[tuple[str, Any]] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    final_values: Any = None

    def push(self, event: str, data: Any) -> None:
        """Record an event and wake the listeners (on the event loop)."""
        self.events.append((event, data))
        self._wake.set()
        self._wake = asyncio.Event()

    async def follow(self) -> AsyncIterator[tuple[str, Any]]:
        """Every event of the run, from the first, until it ends."""
        i = 0
        while True:
            wake = self._wake
            while i < len(self.events):
                yield self.events[i]
                i += 1
            if self.ended.is_set():
                return
            await wake.wait()


Executor = Callable[[Run, Callable[[str, Any], None]], tuple[str, Any, str | None]]
"""Runs a turn in a worker thread: ``(run, emit) -> (status, final values, error)``."""
Recorder = Callable[[Run, str, Any, str | None], Any]
"""Awaitable that records a run's end (its row, its thread's status and values)."""


class RunQueue:
    """Runs of many threads at once (``jobs``), those of one thread in order."""

    def __init__(self, jobs: int, execute: Executor, record_end: Recorder, record_start: Recorder) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1 (got {jobs})")
        self.jobs = jobs
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cxr-run")
        self.execute, self.record_end, self.record_start = execute, record_end, record_start
        self.active: dict[UUID, Run] = {}  # runs not yet ended, by run id
        self.waiting: dict[UUID, deque[Run]] = {}  # per thread, in arrival order; the head is running
        self.slots = asyncio.Semaphore(jobs)  # a run is "running" only once a worker is free for it
        self.running = 0
        self.most_at_once = 0

    def busy(self, thread_id: UUID) -> bool:
        return bool(self.waiting.get(thread_id))

    def submit(self, run: Run, strategy: str) -> None:
        if strategy not in STRATEGIES:
            raise RunRefused(422, f"multitask_strategy must be one of {', '.join(STRATEGIES)} (got {strategy!r})")
        queue = self.waiting.setdefault(run.thread_id, deque())
        if queue and strategy == "reject":
            raise RunRefused(409, "this thread already has a run pending or running (multitask_strategy='reject')")
        self.active[run.run_id] = run
        queue.append(run)
        if len(queue) == 1:
            asyncio.get_running_loop().create_task(self._run(run))

    async def _run(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        status, values, error = "error", None, None
        try:
            async with self.slots:
                if run.cancelled.is_set():
                    status = "interrupted"
                else:
                    run.status = "running"
                    await self.record_start(run, "running", None, None)

                    def emit(event: str, data: Any) -> None:
                        loop.call_soon_threadsafe(run.push, event, data)

                    self.running += 1
                    self.most_at_once = max(self.most_at_once, self.running)
                    try:
                        status, values, error = await loop.run_in_executor(self.pool, self.execute, run, emit)
                    finally:
                        self.running -= 1
        except Exception as exc:  # noqa: BLE001 - the run ends as an error; the server goes on
            log.exception("run failed outside the graph")
            error = type(exc).__name__
        finally:
            await self._end(run, status, values, error)

    async def _end(self, run: Run, status: str, values: Any, error: str | None) -> None:
        run.status, run.final_values = status, values
        try:
            await self.record_end(run, status, values, error)
        finally:
            run.ended.set()
            run._wake.set()
            self.active.pop(run.run_id, None)
            queue = self.waiting.get(run.thread_id)
            if queue and queue[0] is run:  # the thread's running run ended: start its next one
                queue.popleft()
                if queue:
                    asyncio.get_running_loop().create_task(self._run(queue[0]))
            elif queue and run in queue:  # a waiting run was cancelled: the running one goes on
                queue.remove(run)
            if not queue:
                self.waiting.pop(run.thread_id, None)
            if not self.waiting:  # idle: hand the C heap's freed pages back (server/standalone/heap.py)
                asyncio.get_running_loop().run_in_executor(None, give_back)

    async def cancel(self, run_id: UUID) -> bool:
        """Stop a run: a pending one never starts, a running one stops at its next step."""
        run = self.active.get(run_id)
        if run is None:
            return False
        run.cancelled.set()
        queue = self.waiting.get(run.thread_id)
        if run.status == "pending" and queue and queue[0] is not run:
            await self._end(run, "interrupted", None, None)
        return True

    async def stop_thread(self, thread_id: UUID, timeout_s: float = 30.0) -> None:
        """Cancel a thread's runs and wait (bounded) until none is running, so a deleted thread's
        checkpoints are not written again after they are deleted."""
        runs = list(self.waiting.get(thread_id) or ())
        for run in runs:
            await self.cancel(run.run_id)
        if runs:
            try:
                await asyncio.wait_for(asyncio.gather(*(r.ended.wait() for r in runs)), timeout_s)
            except TimeoutError:
                log.warning("a deleted thread's run did not stop within %.0f s", timeout_s)

    def shutdown(self) -> None:
        for run in list(self.active.values()):
            run.cancelled.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
