"""The production server (``python -m server.standalone``, same arguments) with test gates on its runs.

A run whose config names ``configurable.test_gate`` waits, before its turn starts, until the test
creates ``<CXR_TEST_GATES>/open-<gate>``, and stops if it is cancelled while waiting (the test's way to
hold a run "running" on one process). Each gated run appends its start and end (time, process id) to
``<CXR_TEST_GATES>/runs.jsonl`` and sends one custom ``held`` event first. Ungated runs are untouched.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import server.standalone.app as app
from server.standalone.__main__ import main

GATES = Path(os.environ["CXR_TEST_GATES"])
_turn = app.execute


def _note(**entry: object) -> None:
    with (GATES / "runs.jsonl").open("a") as log:
        log.write(json.dumps({**entry, "pid": os.getpid(), "t": time.time()}) + "\n")


def gated(run, emit):
    gate = (run.config.get("configurable") or {}).get("test_gate")
    if not gate:
        return _turn(run, emit)
    _note(gate=gate, what="start", thread=str(run.thread_id))
    emit("custom", {"event": "held", "gate": gate})
    while not (GATES / f"open-{gate}").exists():
        if run.cancelled.is_set():
            _note(gate=gate, what="cancelled")
            return "interrupted", None, None
        time.sleep(0.05)
    try:
        return _turn(run, emit)
    finally:
        _note(gate=gate, what="end")


app.execute = gated

if __name__ == "__main__":
    main()
