"""Checkpointers from settings; conversations survive a restart; checkpoints stay small."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from graph_scripted import ScriptedVLM, classifier

from agents.memory import CheckpointerError, make_checkpointer, sqlite_path
from knowledge.evidence import Decision, Evidence

REPO = Path(__file__).resolve().parents[2]


def test_checkpointer_urls(tmp_path, settings):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    assert isinstance(make_checkpointer(url="memory"), InMemorySaver)
    saver = make_checkpointer(url=f"sqlite:///{tmp_path}/sub/c.sqlite")
    assert isinstance(saver, SqliteSaver) and (tmp_path / "sub" / "c.sqlite").exists()
    default = make_checkpointer(settings.model_copy(update={"checkpointer_url": None}))
    assert isinstance(default, SqliteSaver) and (settings.data_dir / "checkpoints.sqlite").exists()
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db" and sqlite_path("sqlite:///rel.db") == "rel.db"
    with pytest.raises(CheckpointerError, match="unsupported checkpointer URL 'redis://x'"):
        make_checkpointer(url="redis://x")


def test_postgres_without_extra_names_the_fix():
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
    except ImportError:
        with pytest.raises(CheckpointerError, match=r"pip install cxr-agent\[postgres\]"):
            make_checkpointer(url="postgresql://user:pw@localhost/db")
    else:
        pytest.skip("langgraph-checkpoint-postgres is installed here")


def _first_turn(make_graph, db: Path, image: Path) -> dict:
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}),
                   checkpointer=make_checkpointer(url=f"sqlite:///{db}"))
    return g.invoke({"messages": [("user", "Write a report")], "image": str(image)},
                    {"configurable": {"thread_id": "persist"}})


def test_conversation_survives_rebuild_on_same_sqlite_file(make_graph, tmp_path, cxr_image, caplog):
    db = tmp_path / "threads.sqlite"
    first = _first_turn(make_graph, db, cxr_image)
    vlm2, clf2 = ScriptedVLM(), classifier({})
    with caplog.at_level(logging.WARNING):
        g2 = make_graph(vlm2, clf2, checkpointer=make_checkpointer(url=f"sqlite:///{db}"))
        state = g2.get_state({"configurable": {"thread_id": "persist"}}).values
        out = g2.invoke({"messages": [("user", "why did you call cardiomegaly?")]},
                        {"configurable": {"thread_id": "persist"}})
    assert "unregistered type" not in caplog.text and "Blocked deserialization" not in caplog.text
    assert all(isinstance(d, Decision) for d in state["last_result"]["decisions"])
    assert all(isinstance(e, Evidence) for e in state["last_result"]["evidence"])
    assert state["study_id"] == first["study_id"]
    cardio = next(d for d in first["decisions"] if d.finding == "cardiomegaly")
    assert cardio.rationale in out["messages"][-1].content
    assert vlm2.calls == clf2.calls == 0
    assert len(out["messages"]) == 4


def test_conversation_survives_process_restart(make_graph, tmp_path, cxr_image, settings):
    db = tmp_path / "threads.sqlite"
    first = _first_turn(make_graph, db, cxr_image)
    script = textwrap.dedent(f"""
        import json, logging, sys
        logging.basicConfig(level=logging.WARNING)
        from cxr_agent.settings import Settings
        from agents.memory import make_checkpointer
        from graph import build_graph
        s = Settings(model_profile="tiny", data_dir={str(settings.data_dir)!r})
        g = build_graph(s, builtin_tools=False, plugins=False, checkpointer=make_checkpointer(url="sqlite:///{db}"))
        out = g.invoke({{"messages": [("user", "why did you call cardiomegaly?")]}},
                       {{"configurable": {{"thread_id": "persist"}}}})
        print(json.dumps({{"reply": out["messages"][-1].content, "n": len(out["messages"]),
                          "study": out["study_id"]}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANGGRAPH_STRICT_MSGPACK": "true"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    cardio = next(d for d in first["decisions"] if d.finding == "cardiomegaly")
    assert cardio.rationale in result["reply"]
    assert result["n"] == 4 and result["study"] == first["study_id"]
    assert "unregistered type" not in proc.stderr and "Blocked deserialization" not in proc.stderr


def test_checkpoints_hold_no_pixels(make_graph, tmp_path, cxr_image):
    db = tmp_path / "small.sqlite"
    _first_turn(make_graph, db, cxr_image)
    import sqlite3

    conn = sqlite3.connect(db)
    largest = conn.execute("select max(length(checkpoint)) from checkpoints").fetchone()[0]
    writes = conn.execute("select max(length(value)) from writes").fetchone()[0]
    assert largest < 50_000 and writes < 50_000  # the study is 1024 x 1024 float32 = 4 MB
