"""The chat app over scripted tools (no models) for the review panel's comparison browser test: a classifier
that scores an effusion on every film and a comparing tool that says it resolved (a flagged change). Run with
`streamlit run tests/ui/review_compare_app.py`."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_scripted import classifier  # noqa: E402

import graph as graph_module  # noqa: E402
from knowledge.evidence import Evidence  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


class Comparer:
    """Says the effusion resolved and the heart improved, whatever the films."""

    name, intents, compares_priors, label = "cmp", frozenset(), True, "the comparer"

    def run(self, request):
        raise AssertionError("asked only to compare")

    def compare(self, prior, current, *, finding=None, thread_id=None, cancel=None):
        items = [{"finding": "pleural_effusion", "change": "resolved", "text": "The effusion has resolved."}]
        if finding is None:
            items.append({"finding": "cardiomegaly", "change": "improved", "text": "The heart is smaller."})
        return Evidence(tool="cmp", answer=" ".join(i["text"] for i in items), meta={"changes": items})


if not getattr(graph_module, "review_compare_tools_installed", False):
    graph_module.graph = graph_module.build_graph(
        tools=[classifier({"pleural_effusion": 0.85, "cardiomegaly": 0.9}), Comparer()], builtin_tools=False,
        plugins=False)
    graph_module.review_compare_tools_installed = True

runpy.run_path(str(APP), run_name="__main__")
