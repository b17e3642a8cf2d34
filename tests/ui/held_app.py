"""The chat app with one extra custom tool, ``held``, that answers report turns only when the test says so.

The browser tests need a turn that is still running when they act (send another message, press Stop).
The tool's n-th call writes ``started-<n>`` into ``CXR_TEST_HOLD_DIR`` and then waits on a
threading.Event, which a watcher thread sets once the test has created ``release-<n>`` there: the turn
ends exactly when the test decides, never after a fixed delay. Run with `streamlit run tests/ui/held_app.py`.
"""

from __future__ import annotations

import itertools
import os
import runpy
import threading
import time
from pathlib import Path

import graph as graph_module
from knowledge.evidence import Evidence
from tools.base import ToolRequest

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


class HeldTool:
    """A report-intent note that waits for the test's release."""

    name = "held"
    intents = frozenset({"report"})

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls = itertools.count(1)

    def run(self, request: ToolRequest) -> Evidence:
        n = next(self.calls)
        released = threading.Event()

        def watch() -> None:  # turns the test's file into the event this call waits on
            while not (self.folder / f"release-{n}").exists():
                time.sleep(0.05)
            released.set()

        threading.Thread(target=watch, daemon=True).start()
        (self.folder / f"started-{n}").write_text("")
        released.wait()
        # A long note makes a long reply, one that does not fit the chat pane.
        long_note = " ".join(f"Held note line {i} of call {n}." for i in range(1, 121))
        return Evidence(tool=self.name, answer=long_note)


if not getattr(graph_module, "held_tool_installed", False):
    graph_module.graph = graph_module.build_graph(tools=[HeldTool(Path(os.environ["CXR_TEST_HOLD_DIR"]))])
    graph_module.held_tool_installed = True

runpy.run_path(str(APP), run_name="__main__")
