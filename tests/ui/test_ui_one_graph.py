"""The app builds no graph of its own: it uses the module's ``graph.graph`` (one per process) and
stores uploads in that graph's study store. Run in a fresh process, so the module graph is built
with the same settings the app reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ui_helpers import APP

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
import graph
from streamlit.testing.v1 import AppTest

built = []
real = graph.build_graph
graph.build_graph = lambda *a, **k: built.append(1) or real(*a, **k)
at = AppTest.from_file(sys.argv[1], default_timeout=120)
at.run()
assert not at.exception, [e.value for e in at.exception]
at.file_uploader[0].upload("x.png", open(sys.argv[2], "rb").read(), "image/png")
at.run()
assert not at.exception, [e.value for e in at.exception]
study = at.session_state["cxr_study"]
at.chat_input[0].set_value("Why did you say that?")  # explain: no tool runs, the study is handed over
at.run()
assert not at.exception, [e.value for e in at.exception]
studies = graph.runtime(graph.graph).studies
print("graphs built by the app:", len(built))
print("study in the module graph's store:", study.id in studies.store, study.id in studies.cached)
"""


def test_app_uses_the_module_graph_and_its_study_store(ui_env, tmp_path, cxr_image):
    env = {**os.environ, **ui_env, "PYTHONPATH": str(REPO), "CXR_AGENT_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(APP), str(cxr_image)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert "graphs built by the app: 0" in lines
    assert "study in the module graph's store: True True" in lines  # one ingestion path: the graph's studies
