"""The chat app over scripted tools (no models): a report turn that leaves cardiomegaly flagged, for the
review panel's browser test. Run with `streamlit run tests/ui/review_app.py`."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_scripted import ScriptedVLM, classifier  # noqa: E402

import graph as graph_module  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"

if not getattr(graph_module, "review_tools_installed", False):
    graph_module.graph = graph_module.build_graph(
        tools=[ScriptedVLM(report="Small right pneumothorax. No pleural effusion."),
               classifier({"pneumothorax": 0.82, "cardiomegaly": 0.9})], builtin_tools=False, plugins=False)
    graph_module.review_tools_installed = True

runpy.run_path(str(APP), run_name="__main__")
