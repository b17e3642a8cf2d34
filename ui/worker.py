"""One background thread per browser session that answers its messages in order.

Streamlit reruns the page script on every input and stops the run in progress, so a turn run on the
script's thread was cut off by the next message. Here the turn runs on a worker thread: messages sent
meanwhile wait in its queue (shown as queued) and are answered after the running turn; the page only
reads snapshots (``snapshot``) and collects finished turns (``take_finished``). Kept free of Streamlit:
the worker never touches session state, so it works the same whatever the page is doing.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.stop import STOP_KEY
from ui.turn import TurnResult, run_turn

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0  # an idle worker thread ends (a closed tab leaves no thread behind); submit restarts it


@dataclass
class Job:
    """One message to answer, with the graph inputs taken when it was sent (a newly uploaded study)."""

    prompt: str
    thread_id: str
    inputs: dict[str, Any] = field(default_factory=dict)
    pending: Any = None  # the study id to send again if the turn fails
    label: str = "Working..."


@dataclass
class Live:
    """What the running turn has shown so far (copied out under the worker's lock)."""

    job: Job
    progress: list[str] = field(default_factory=list)
    text: str = ""  # tokens streamed while a tool writes
    work: str = ""  # long work inside a tool (the first-use index build)
    work_frac: float | None = None
    stopped: bool = False
    stop: threading.Event = field(default_factory=threading.Event)  # the tools of the turn see it (tools/stop.py)


class _Stoppable:
    """The graph as ``run_turn`` sees it, with the turn's stop event in every run's config: the turn's tools
    read it (a VLM generation ends at its next token) and a remote graph cancels the server's run."""

    def __init__(self, graph: Any, stop: threading.Event) -> None:
        self.graph, self.stop = graph, stop

    def stream(self, inputs: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        config = dict(config or {})
        config["configurable"] = {**(config.get("configurable") or {}), STOP_KEY: self.stop}
        return self.graph.stream(inputs, config=config, **kwargs)

    def get_state(self, config: Any) -> Any:
        return self.graph.get_state(config)


class TurnWorker:
    """Answers one session's messages in order on a thread of its own; ``stop`` ends the running one."""

    def __init__(self, graph: Any, runner: Callable[..., TurnResult] = run_turn) -> None:
        self.graph = graph
        self._run = runner
        self._lock = threading.Condition()
        self._queue: deque[Job] = deque()
        self._live: Live | None = None
        self._finished: list[tuple[Job, TurnResult]] = []
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        with self._lock:
            self._queue.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cxr-ui-turns", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    @property
    def busy(self) -> bool:
        """A turn is running or waiting (including a stopped turn still unwinding in the graph)."""
        with self._lock:
            return self._live is not None or bool(self._queue)

    def snapshot(self) -> tuple[Live | None, list[str]]:
        """The running turn (None when none, or it was stopped) and the queued messages, in order."""
        with self._lock:
            live = self._live
            shown = None
            if live is not None and not live.stopped:
                shown = Live(live.job, list(live.progress), live.text, live.work, live.work_frac)
            return shown, [j.prompt for j in self._queue]

    def has_finished(self) -> bool:
        with self._lock:
            return bool(self._finished)

    def take_finished(self) -> list[tuple[Job, TurnResult]]:
        with self._lock:
            out, self._finished = self._finished, []
            return out

    def stop(self) -> bool:
        """End the running turn now: it is finished as stopped (no answer kept), its tools are told (a VLM
        generation ends at its next token; a remote graph's run is cancelled on the server) and the graph's
        stream is closed at its next event, before any reply is written. Queued messages still get answered."""
        with self._lock:
            live = self._live
            if live is None or live.stopped:
                return False
            live.stopped = True
            live.stop.set()
            self._finished.append((live.job, TurnResult(user_text=live.job.prompt, progress=list(live.progress),
                                                        stopped=True)))
            return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until nothing runs or waits (tests and shutdown); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._live is None and not self._queue, timeout=timeout_s)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._lock.wait_for(lambda: bool(self._queue), timeout=IDLE_EXIT_S):
                    self._thread = None
                    return
                job = self._queue.popleft()
                live = self._live = Live(job)
            try:
                result = self._answer(live)
            except Exception as exc:  # noqa: BLE001 - run_turn never raises; a worker must outlive anything
                log.exception("turn worker failed")
                result = TurnResult(user_text=job.prompt, error=type(exc).__name__)
            with self._lock:
                if not live.stopped:
                    self._finished.append((job, result))
                self._live = None
                self._lock.notify_all()

    def _answer(self, live: Live) -> TurnResult:
        job = live.job

        def progress(line: str) -> None:
            with self._lock:
                live.progress.append(line)

        def token(text: str) -> None:
            with self._lock:
                live.text += text

        def work(tool: str, stage: str, done: int, total: int | None) -> None:
            with self._lock:
                live.work = f"{tool}: {stage} {done:,}/{total:,} prior reports" if total else f"{tool}: {stage} {done:,}"
                live.work_frac = min(1.0, max(0.0, done / total)) if total else None

        return self._run(_Stoppable(self.graph, live.stop), job.prompt, thread_id=job.thread_id, extra_inputs=job.inputs,
                         on_progress=progress, on_token=token, on_work=work, should_stop=lambda: live.stopped)
