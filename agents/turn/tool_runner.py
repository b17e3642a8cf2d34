"""Running tools: a bounded pool of daemon workers, timeouts, cancellation and the turn deadline.

Every tool call of every turn goes through ``call_with_timeout``: it never raises, and turns an
exception, a timeout, a full pool or an unusable return value into Evidence(ok=False). A timed-out
call cannot be killed (Python threads cannot be), so the runner sets the call's ``cancel`` event
(``ToolRequest.cancel``) for tools that can stop early, and the call keeps its worker until it
returns: that is why the pool is bounded and refuses new calls when full instead of growing.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from knowledge.evidence import Evidence
from tools.registry import to_evidence

if TYPE_CHECKING:
    from agents.replying.roles import ToolRoles

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8


class PoolFull(RuntimeError):
    """Every worker stayed busy (some may hold timed-out calls) for as long as the call could wait."""


class ToolPool:
    """Reusable daemon worker threads for tool calls, at most ``max_workers`` of them.

    Not a ThreadPoolExecutor: its workers are joined at interpreter exit, so one tool that hangs
    forever would hang the app's shutdown. Idle workers are reused, so a turn does not pay for
    starting threads. At most ``max_workers`` calls run at once: ``submit`` waits up to ``wait_s``
    for one to finish and then raises PoolFull instead of starting another thread. A call is handed
    over as a ``_Call`` whose lock is released when it finishes: one C-level lock per call instead of
    a Future's Condition machinery.
    """

    def __init__(self, max_workers: int = DEFAULT_WORKERS, prefix: str = "cxr-tool") -> None:
        self.max_workers = max(1, int(max_workers))
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.max_workers)  # calls in flight, timed out ones too
        self._idle = 0
        self._lock = threading.Lock()
        self._prefix = prefix
        self._count = 0

    @property
    def workers(self) -> int:
        """Worker threads started so far (idle or busy)."""
        return self._count

    @property
    def busy(self) -> int:
        with self._lock:
            return self._count - self._idle

    def submit(self, fn: Callable[[], Any], wait_s: float = 0.0) -> _Call:
        if not self._slots.acquire(timeout=min(max(0.0, wait_s), threading.TIMEOUT_MAX)):
            raise PoolFull(f"all {self.max_workers} tool workers stayed busy")
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:  # fewer than max_workers threads exist: the slot guarantees it
                self._count += 1
                threading.Thread(target=self._work, name=f"{self._prefix}-{self._count}", daemon=True).start()
        call = _Call(fn)
        self._jobs.put(call)
        return call

    def _work(self) -> None:
        while True:
            call = self._jobs.get()
            try:
                call.result = call.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting node
                call.error = exc
            finally:
                call.fn = None
                with self._lock:  # idle before the waiter wakes: its next submit reuses this worker
                    self._idle += 1
                self._slots.release()
                call.finished.release()


class _Call:
    """One call handed to a ToolPool worker: ``finished`` is released once result/error is set."""

    __slots__ = ("fn", "result", "error", "finished")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn: Callable[[], Any] | None = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = threading.Lock()
        self.finished.acquire()

    def wait(self, timeout_s: float) -> bool:
        """True when the call finished within ``timeout_s`` seconds."""
        return self.finished.acquire(timeout=min(max(0.0, timeout_s), threading.TIMEOUT_MAX))


_POOLS: dict[int, ToolPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(max_workers: int = DEFAULT_WORKERS) -> ToolPool:
    """The process-wide pool for this size (every graph with the same setting shares its workers)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(max_workers)
        if pool is None:
            pool = _POOLS[max_workers] = ToolPool(max_workers)
        return pool


@dataclass(frozen=True)
class Deadline:
    """When the whole turn must be done (``time.monotonic()`` seconds)."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + float(seconds))

    def left(self) -> float:
        return self.at - time.monotonic()

    def budget(self, tool_timeout_s: float) -> float:
        """The time one call may take: its own timeout, capped by what is left of the turn."""
        return max(0.0, min(float(tool_timeout_s), self.left()))


def call_with_timeout(
    name: str,
    fn: Callable[[], Any],
    timeout_s: float,
    *,
    cancel: threading.Event | None = None,
    pool: ToolPool | None = None,
) -> Evidence:
    """Run ``fn`` on a pool worker; stop waiting after ``timeout_s`` (queueing for a worker included). Never raises.

    A timed-out call keeps running on its worker (Python cannot kill a thread): ``cancel`` is set so
    a tool that checks it can stop, and its late result is discarded.
    """
    t0 = time.perf_counter()
    context = contextvars.copy_context()  # the run's config: stream writer, callbacks, tracing
    try:  # waiting for a free worker counts against the call's own timeout
        call = (pool or shared_pool()).submit(lambda: context.run(fn), wait_s=timeout_s)
    except PoolFull as exc:
        latency = (time.perf_counter() - t0) * 1000
        return Evidence.failure(name, f"{name} was not run: {exc} for {timeout_s:g} s (raise "
                                      "CXR_AGENT_TOOL_WORKERS, or retry when the running calls finish)",
                                latency_ms=latency)
    if not call.wait(timeout_s - (time.perf_counter() - t0)):
        if cancel is not None:
            cancel.set()
        latency = (time.perf_counter() - t0) * 1000
        return Evidence.failure(name, f"{name} timed out after {timeout_s:g} s", latency_ms=latency)
    latency = (time.perf_counter() - t0) * 1000
    if call.error is not None:  # a tool that raises TimeoutError itself lands here, not as a timeout
        exc = call.error
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc)
        return Evidence.failure(name, f"{name} failed: {type(exc).__name__}: {exc}", latency_ms=latency)
    out = call.result
    try:
        ev = to_evidence(name, out)
    except Exception as exc:  # noqa: BLE001 - a custom tool returned something unusable
        return Evidence.failure(name, f"{name} returned {type(out).__name__}, not Evidence ({exc})", latency_ms=latency)
    if ev.latency_ms is None:
        ev = ev.model_copy(update={"latency_ms": latency})
    return ev


def call_many_with_timeout(
    name: str,
    fn: Callable[[], Sequence[Any]],
    count: int,
    timeout_s: float,
    *,
    cancel: threading.Event | None = None,
    pool: ToolPool | None = None,
) -> list[Evidence]:
    """Like call_with_timeout for a call that answers ``count`` questions at once (a batched
    verification): a failure of the whole call becomes ``count`` failures, each answer is mapped
    onto Evidence, and the call's latency is shared out."""
    box: list[Sequence[Any]] = []

    def run() -> Evidence:
        box.append(fn())
        return Evidence(tool=name)

    whole = call_with_timeout(name, run, timeout_s, cancel=cancel, pool=pool)
    if not whole.ok or not box:
        return [whole.model_copy() for _ in range(count)]
    answers = list(box[0])[:count]
    out: list[Evidence] = []
    for answer in answers:
        try:
            ev = to_evidence(name, answer)
        except Exception as exc:  # noqa: BLE001
            ev = Evidence.failure(name, f"{name} returned {type(answer).__name__}, not Evidence ({exc})")
        if ev.latency_ms is None:
            ev = ev.model_copy(update={"latency_ms": (whole.latency_ms or 0.0) / max(1, len(answers))})
        out.append(ev)
    out += [Evidence.failure(name, f"{name} gave no answer", latency_ms=0.0) for _ in range(count - len(out))]
    return out


def plan_chains(intent: str, roles: ToolRoles, names: list[str]) -> list[list[str]]:
    """Parallel branches, each a sequence of tool names.

    A tool that needs a draft (``roles.drafted``, e.g. retrieval) runs right after a report writer
    (``roles.writers``, e.g. the VLM) in that writer's branch, so it can query with the draft (a far
    better query than "write a report"); every other tool runs in its own branch. Retrieval costs
    ~25 ms against the VLM's seconds, so the turn's critical path grows by one retrieval only.
    Only a report turn has a draft; otherwise, or without a report writer among ``names``, a
    draft-needing tool runs alone (on the turn's text). ``roles``: the graph's one reading of its tools.
    """
    if intent != "report":
        return [[n] for n in names]
    writers = [n for n in names if n in roles.writers]
    followers = [n for n in names if n in roles.drafted]
    if not writers or not followers:
        return [[n] for n in names]
    lead = writers[0]
    return [[lead, *followers], *([n] for n in names if n != lead and n not in followers)]
