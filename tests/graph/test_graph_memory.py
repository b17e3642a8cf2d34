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

from agents.memory.checkpointers import CheckpointerError, make_checkpointer, sqlite_path
from agents.memory.ledger import StudyLedger
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


def test_postgres_without_extra_names_the_fix(monkeypatch):
    """Without the postgres extra the URL fails with the pip command (the extra is installed here,
    so its absence is simulated: a None entry in sys.modules makes the import raise ImportError)."""
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres", None)
    with pytest.raises(CheckpointerError, match=r"pip install cxr-agent\[postgres\]") as ei:
        make_checkpointer(url="postgresql://user:pw@localhost/db")
    assert "'localhost/db'" in str(ei.value) and "pw" not in str(ei.value)


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
    assert all(isinstance(d, Decision) for d in state["decisions"])
    assert isinstance(state["ledger"], StudyLedger) and state["ledger"].study_id == first["study_id"]
    assert all(isinstance(e, Evidence) for e in state["ledger"].evidence())
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
        from agents.memory.checkpointers import make_checkpointer
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
    writes = conn.execute("select max(length(value)) from writes").fetchone()[0] or 0
    assert largest < 50_000 and writes < 50_000  # the study is 1024 x 1024 float32 = 4 MB


# --- no raw input or file names in storage ----------------------------------------------
def _probes(data: bytes, n: int = 8, size: int = 16) -> list[bytes]:
    """Distinctive runs from the file's second half (pixel data), spread out."""
    half = len(data) // 2
    step = (len(data) - half - size) // n
    return [data[half + i * step: half + i * step + size] for i in range(n)]


def test_checkpoint_files_hold_neither_input_bytes_nor_names(make_graph, tmp_path, shared_data, cxr_image):
    import shutil
    import sqlite3

    db = tmp_path / "ckpt" / "threads.sqlite"
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}),
                   checkpointer=make_checkpointer(url=f"sqlite:///{db}"))
    dicom = (shared_data / "dicom" / "CR-MONO1-10-chest.dcm").read_bytes()
    named = tmp_path / "DOE_JANE_MRN456.png"
    shutil.copy(cxr_image, named)
    cfg = {"configurable": {"thread_id": "phi"}}
    first = g.invoke({"messages": [("user", "Write a report")], "image": dicom, "image_name": "DOE_JOHN_MRN123.dcm"}, cfg)
    assert first["study_id"] and not first.get("ingest_error")
    second = g.invoke({"messages": [("user", "Write a report")], "image": str(named)}, cfg)
    assert second["study_id"] and second["study_id"] != first["study_id"]
    files = [f for f in db.parent.iterdir() if f.name.startswith(db.name)]  # the database, -wal, -shm, -journal
    assert db in files
    needles = [*_probes(dicom), *_probes(named.read_bytes()), b"DOE_JOHN", b"MRN123", b"DOE_JANE", b"MRN456",
               str(named).encode()]
    for f in files:
        raw = f.read_bytes()
        assert not [n for n in needles if n in raw], f"{f.name} holds raw input"
        assert f.stat().st_mode & 0o077 == 0, f"{f.name} is readable by others"
    conn = sqlite3.connect(db)  # and per row (a run split over two pages would hide from the file grep)
    for table, col in (("checkpoints", "checkpoint"), ("checkpoints", "metadata"), ("writes", "value")):
        for needle in (b"DOE_", b"MRN", dicom[len(dicom) // 2: len(dicom) // 2 + 16]):
            hits = conn.execute(f"select count(*) from {table} where instr({col}, ?) > 0", (needle,)).fetchone()[0]
            assert hits == 0, (table, col, needle)
    # The running graph still saw the image: the thread kept both studies' results.
    assert g.get_state(cfg).values["study_id"] == second["study_id"]


def test_every_saver_kind_is_scrubbing(make_graph, cxr_image):
    from langgraph.checkpoint.memory import InMemorySaver

    from agents.memory.checkpointers import scrubbing

    mem = make_checkpointer(url="memory")
    assert isinstance(mem, InMemorySaver) and getattr(mem, "_cxr_scrubbing", False)
    foreign = scrubbing(InMemorySaver())  # a saver a caller builds itself
    assert isinstance(foreign, InMemorySaver) and scrubbing(foreign) is foreign
    g = make_graph(ScriptedVLM(report="Clear."), classifier({}), checkpointer=mem)
    data = cxr_image.read_bytes()
    g.invoke({"messages": [("user", "Write a report")], "image": data, "image_name": "DOE_JOHN_MRN123.png"},
             {"configurable": {"thread_id": "m"}})
    stored = repr(mem.storage) + repr(mem.writes) + repr(mem.blobs)
    assert "DOE_JOHN" not in stored and not [p for p in _probes(data) if repr(p)[2:-1] in stored]
    assert not any(d for d in mem.blobs.values() if isinstance(d, tuple) and data[1000:1016] in d[1])


def test_a_turn_is_checkpointed_once_and_nothing_twice(make_graph, tmp_path, cxr_image):
    """One checkpoint per turn (``checkpoint_durability="exit"``), holding the study's ledger and its
    decisions once: no copy of the decisions under another key, no turn record."""
    import sqlite3

    from agents.memory.checkpointers import serializer

    db = tmp_path / "once.sqlite"
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85, "nodule": 0.7}),
                   checkpointer=make_checkpointer(url=f"sqlite:///{db}"))
    cfg = {"configurable": {"thread_id": "once"}}
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    conn = sqlite3.connect(db)
    assert conn.execute("select count(*) from checkpoints").fetchone()[0] == 2
    kind, blob = conn.execute("select type, checkpoint from checkpoints order by checkpoint_id desc").fetchone()
    values = serializer().loads_typed((kind, blob))["channel_values"]
    assert {"ledger", "decisions"} <= set(values) and not {"last_result", "record", "decisions_before"} & set(values)
    in_replies = serializer().dumps_typed(values["messages"])[1].count(b"rationale")  # the replies' payloads
    assert blob.count(b"rationale") - in_replies == len(values["decisions"])  # the state holds each decision once


STRICT_CONVERSATION = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, "tests")
    from graph_scripted import ScriptedVLM, classifier
    from langgraph.checkpoint.memory import InMemorySaver
    from agents.memory.checkpointers import make_checkpointer
    from cxr_agent.settings import Settings
    from graph import build_graph
    s = Settings(model_profile="tiny", offline=True, data_dir=sys.argv[1], tool_timeout_s=30)
    savers = {"plain": InMemorySaver(), "ours": make_checkpointer(url=f"sqlite:///{sys.argv[1]}/c.sqlite")}
    out = {}
    for name, saver in savers.items():
        g = build_graph(s, tools=[ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85, "nodule": 0.7})],
                        builtin_tools=False, plugins=False, checkpointer=saver)
        cfg = {"configurable": {"thread_id": name}}
        g.invoke({"messages": [("user", "Write a report")], "image": sys.argv[2]}, cfg)
        g.invoke({"messages": [("user", "Is there a nodule?")]}, cfg)
        why = g.invoke({"messages": [("user", "Why?")]}, cfg)
        values = g.get_state(cfg).values
        out[name] = {"n": len(values["messages"]), "ledger": type(values["ledger"]).__name__,
                     "decisions": sorted({type(d).__name__ for d in values["decisions"]}),
                     "why": why["messages"][-1].content}
    print(json.dumps(out))
""")


def test_a_conversation_under_strict_deserialization(tmp_path, cxr_image):
    """Under LANGGRAPH_STRICT_MSGPACK=true every type in the state loads: with a plain saver (as a
    LangGraph server has) the graph's typed state schema registers them, with ours its serializer does."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANGGRAPH_STRICT_MSGPACK": "true", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", STRICT_CONVERSATION, str(tmp_path), str(cxr_image)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("plain", "ours"):
        assert result[name]["n"] == 6 and result[name]["ledger"] == "StudyLedger", result[name]
        assert result[name]["decisions"] == ["Decision"]
        assert "Nodule" in result[name]["why"] and "nothing to explain" not in result[name]["why"]
    assert "Blocked deserialization" not in proc.stderr and "unregistered type" not in proc.stderr
