"""server/standalone/heap.py: the production server's look at its own memory, native included."""

from __future__ import annotations

import threading

from server.standalone import heap


def test_the_report_names_native_memory_and_threads_without_tracing(monkeypatch):
    monkeypatch.delenv(heap.ENV, raising=False)
    started, release = threading.Event(), threading.Event()

    def worker() -> None:
        started.set()
        release.wait(10)

    pool = [threading.Thread(target=worker, name=f"cxr-probe-{n}") for n in range(3)]
    for t in pool:
        t.start()
    try:
        started.wait(10)
        report = heap.HeapWatch().report()
    finally:
        release.set()
        for t in pool:
            t.join()
    assert report["threads"]["cxr-probe"] == 3 and report["threads"]["MainThread"] == 1
    assert report["rss_mib"] > 0 and "growth" not in report
    assert report["c_heap"]["in_use"] > 0 and set(report["c_heap"]) == {"arena", "in_use", "free_kept", "mmapped"}


def test_c_heap_sees_what_python_does_not_trace():
    import ctypes

    before = heap.c_heap()["in_use"]
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    blocks = [libc.malloc(64 * 1024) for _ in range(320)]  # 20 MiB in the C heap (below the mmap threshold)
    try:
        assert heap.c_heap()["in_use"] - before >= 19
    finally:
        libc.free.argtypes = [ctypes.c_void_p]
        for b in blocks:
            libc.free(b)


def test_pool_names_lose_only_their_numbers():
    names = {"cxr-tool-12": "cxr-tool", "cxr-run_3": "cxr-run", "AnyIO worker thread": "AnyIO worker thread",
             "MainThread": "MainThread", "ThreadPoolExecutor-0_1": "ThreadPoolExecutor"}
    for name, pool in names.items():
        t = threading.Thread(name=name)
        assert heap.pool_name(t.name) == pool
