"""Stop reaches the tool the turn is blocked in: the real graph (tiny settings) with one custom tool held on
an event, run by the session's turn worker. Stop must release the tool through the turn's stop event
(tools/stop.py) long before its own release or its timeout, and the stopped turn leaves no answer."""

from __future__ import annotations

import threading

from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.stop import turn_stop
from ui.worker import Job, TurnWorker

HOLD_S = 60.0  # the tool's own limit: far past the waits below, so only Stop can end it in time


class HeldTool:
    """A report tool that waits until the test releases it or the reader stops the turn."""

    name = "held"
    intents = frozenset({"report"})

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.saw_stop = threading.Event()

    def run(self, request: ToolRequest) -> Evidence:
        stop = turn_stop()
        self.started.set()
        for _ in range(int(HOLD_S / 0.05)):
            if self.release.is_set():
                return Evidence(tool=self.name, answer="released")
            if stop is not None and stop.is_set():
                self.saw_stop.set()
                return Evidence.failure(self.name, "stopped by the reader")
            self.release.wait(0.05)
        return Evidence(tool=self.name, answer="held to the end")


def test_stop_releases_the_tool_the_turn_is_blocked_in(make_graph, cxr_image):
    tool = HeldTool()
    graph = make_graph(tool, tool_timeout_s=HOLD_S * 2, turn_timeout_s=HOLD_S * 3)
    worker = TurnWorker(graph)
    worker.submit(Job("Write a report", "stop-1", {"image": str(cxr_image)}))
    assert tool.started.wait(60), "the held tool never ran"
    assert worker.stop()
    assert tool.saw_stop.wait(10), "Stop did not reach the tool it was blocked in"
    assert worker.wait_idle(30)  # the worker is free for the next message, not stuck behind the tool
    (job, result), = worker.take_finished()
    assert result.stopped and not result.reply
    messages = graph.get_state({"configurable": {"thread_id": "stop-1"}}).values.get("messages") or []
    assert not any(getattr(m, "type", "") == "ai" for m in messages)  # nothing half-done kept as an answer
    # The next turn on the same conversation runs normally (its own stop event is fresh).
    tool.started.clear()
    worker.submit(Job("Write a report", "stop-1"))
    assert tool.started.wait(60)
    tool.release.set()
    assert worker.wait_idle(60)
    (_, second), = worker.take_finished()
    assert second.answered, second.error
