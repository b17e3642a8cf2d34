"""Where the server's Python memory grows, between two looks (tracemalloc; off unless asked for).

Every ``/metrics?format=json&heap=1`` (service identity only) reports the resident size, the C heap's own
counts (glibc ``mallinfo2``) and the process's threads by pool: native memory that Python does not trace
(torch keeps state per thread that runs it) shows there. With ``CXR_AGENT_SERVER_TRACEMALLOC=<frames>``
(e.g. 5), the first ``/metrics?format=json&heap=1`` also starts
tracing (so a warm-up, e.g. loading the models, runs at full speed) and every later one reports the traced
total and the tracebacks whose allocations grew most since the previous one (top 25). Only file names,
line numbers and thread names are reported, never values.
Tracing slows every allocation: a diagnosis setting, not a production one.
"""

from __future__ import annotations

import os
import re
import threading
import tracemalloc
from collections import Counter
from typing import Any

ENV = "CXR_AGENT_SERVER_TRACEMALLOC"
TOP = 25


class HeapWatch:
    """The last snapshot, and the growth since it."""

    def __init__(self) -> None:
        self.previous: tracemalloc.Snapshot | None = None
        self.lock = threading.Lock()

    @staticmethod
    def frames() -> int:
        """The frames per traceback ``CXR_AGENT_SERVER_TRACEMALLOC`` asks for (0: off); checked at start-up."""
        frames = os.environ.get(ENV, "").strip()
        if not frames:
            return 0
        if not frames.isdigit() or not 1 <= int(frames) <= 50:
            raise SystemExit(f"{ENV} must be a number of frames from 1 to 50 (got {frames!r})")
        return int(frames)

    def report(self) -> dict[str, Any]:
        """Resident MiB, C heap counts and threads; when traced, traced MiB and the tracebacks that grew
        most since the previous report (blocking)."""
        native = {"rss_mib": rss_mib(), "c_heap": c_heap(), "threads": threads_by_pool()}
        frames = self.frames()
        if not frames:
            return native
        with self.lock:
            if not tracemalloc.is_tracing():
                tracemalloc.start(frames)
            snapshot = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")))
            current, peak = tracemalloc.get_traced_memory()
            growth = []
            if self.previous is not None:
                for stat in snapshot.compare_to(self.previous, "traceback")[:TOP]:
                    where = [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}" for f in stat.traceback]
                    growth.append({"kib": round(stat.size_diff / 1024, 1), "count": stat.count_diff,
                                   "where": where[-frames:]})
            self.previous = snapshot
        return {"traced_mib": round(current / 2**20, 1), "peak_mib": round(peak / 2**20, 1), "growth": growth,
                **native}


def pool_name(thread_name: str) -> str:
    """A thread's name without its number ("cxr-tool-3", "ThreadPoolExecutor-0_1"): the pool it belongs to."""
    return re.sub(r"[-_ ]?\d+(_\d+)?$", "", thread_name) or thread_name


def threads_by_pool() -> dict[str, int]:
    """Live Python threads per pool: a pool that keeps growing shows here."""
    return dict(sorted(Counter(pool_name(t.name) for t in threading.enumerate()).items()))


def rss_mib() -> float | None:
    """This process's resident size, MiB (Linux ``/proc/self/status``); None elsewhere."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115 - read once, closed at exit
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def c_heap() -> dict[str, float] | None:
    """The C heap's own counts, MiB (glibc ``mallinfo2``): ``in_use`` (allocated by malloc), ``free_kept``
    (freed but not returned to the system: what ``malloc_trim`` may give back), ``mmapped`` (large
    blocks, given back on free), ``arena`` (the main and thread arenas' total); None without glibc >= 2.33."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    mib = 2**20
    return {"arena": round(info.arena / mib, 1), "in_use": round(info.uordblks / mib, 1),
            "free_kept": round(info.fordblks / mib, 1), "mmapped": round(info.hblkhd / mib, 1)}


def give_back() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``); False where there is none.

    Turns allocate from many threads (the run pool, tool pools, the event loop's thread pool), and glibc
    keeps what they freed in per-thread arenas: the process's resident memory then creeps up from round to
    round although Python's own heap stays flat. Trimming when the server falls idle gives that back."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.append(lib if hasattr(lib, "malloc_trim") else None)
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]
