"""The production server (``python -m server.standalone``, same arguments) with test gates on its runs.

A run whose config names ``configurable.test_gate`` is held mid-turn: the graph has started (its input
is checkpointed) and the run's first graph event is sent, then the worker waits inside that event until
the test creates ``<CXR_TEST_GATES>/open-<gate>``, or goes on at once when the run is cancelled (the
server then stops the turn at its next step, as for any run). Each gated run appends its start, its
end and whether it ended cancelled (time, process id) to ``<CXR_TEST_GATES>/runs.jsonl``, and sends one
custom ``held`` event first. Ungated runs are untouched.
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
    held = []

    def holding(event, data):
        emit(event, data)
        if not held:
            held.append(event)
            while not (GATES / f"open-{gate}").exists() and not run.cancelled.is_set():
                time.sleep(0.05)

    outcome = _turn(run, holding)
    if outcome[0] == "interrupted":
        _note(gate=gate, what="cancelled")
    _note(gate=gate, what="end")
    return outcome


app.execute = gated

if __name__ == "__main__":
    main()
