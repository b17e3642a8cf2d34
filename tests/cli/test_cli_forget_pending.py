"""`cxr-agent forget THREAD_ID` keeps a study another conversation uploaded between the forgotten one's
turns and has not yet asked about, and says so."""

from __future__ import annotations

import time

from graph_scripted import ScriptedVLM, classifier
from typer.testing import CliRunner

from agents.memory.checkpointers import make_checkpointer
from cli.main import app
from graph import store_image


def test_forget_keeps_and_names_a_pending_upload_of_the_same_image(make_graph, settings, cxr_images, monkeypatch):
    from cxr_agent.settings import get_settings

    s = settings.model_copy(update={"checkpointer_url": None})
    saver = make_checkpointer(s)
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}), checkpointer=saver)
    sid = store_image(str(cxr_images[2]), graph=g)
    g.invoke({"messages": [("user", "Write a report")], "study_id": sid}, {"configurable": {"thread_id": "gone2"}})
    time.sleep(0.02)
    assert store_image(str(cxr_images[2]), graph=g) == sid  # another conversation's upload, no turn yet
    time.sleep(0.02)
    g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, {"configurable": {"thread_id": "gone2"}})
    saver.conn.close()
    monkeypatch.setenv("CXR_AGENT_DATA_DIR", str(s.data_dir))
    monkeypatch.delenv("CXR_AGENT_CHECKPOINTER_URL", raising=False)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["forget", "gone2"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert "Deleted conversation gone2: 0 study(ies)" in res.output and "is kept" in res.output
    assert list(s.studies_dir.rglob(f"{sid}.npy"))
