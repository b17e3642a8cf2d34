"""What v0.1 wrote still loads: a conversation checkpointed and a study stored by commit d7ce11d.

The fixtures (tests/fixtures/migration_v0_1, written by its make_fixture.py on the old layout) hold the
evidence types serialised by module path and the study pixels as float32 .npy. A move that breaks either
would lose every existing user's conversations and studies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from graph_scripted import ScriptedVLM, classifier, retrieval
from langchain_core.messages import AIMessage

from cxr_agent.settings import Settings
from knowledge.evidence import Decision, Evidence, Status

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "migration_v0_1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
CONFIG = {"configurable": {"thread_id": EXPECTED["thread_id"]}}


@pytest.fixture
def old_data(tmp_path: Path) -> Path:
    """A writable copy of the v0.1 data (checkpoints + study store)."""
    root = tmp_path / "v0_1"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.py", "expected.json"))
    return root


def _graph(root: Path, *tools):
    from graph import build_graph

    settings = Settings(model_profile="tiny", offline=True, data_dir=root / "data", tool_timeout_s=10,
                        checkpointer_url=f"sqlite:///{root / 'checkpoints.sqlite'}")
    tools = tools or (ScriptedVLM(), classifier({"pleural_effusion": 0.8}), retrieval([["pleural_effusion"]]))
    return build_graph(settings, tools=list(tools), builtin_tools=False, plugins=False)


def test_v0_1_study_loads_with_its_id_and_pixels(old_data: Path):
    from tools.ingestion.store import StudyStore

    study = StudyStore(old_data / "data" / "studies").get(EXPECTED["study_id"])
    assert study.id == EXPECTED["study_id"]
    assert list(study.pixels.shape) == EXPECTED["pixels_shape"]
    assert 0.0 <= float(study.pixels.min()) < float(study.pixels.max()) <= 1.0


def test_v0_1_conversation_loads_as_current_types(old_data: Path):
    state = _graph(old_data).get_state(CONFIG).values
    assert len(state["messages"]) == EXPECTED["messages"]
    assert state["study_id"] == EXPECTED["study_id"]
    last = state["last_result"]
    assert all(isinstance(d, Decision) and isinstance(d.status, Status) for d in last["decisions"])
    assert {d.finding: d.status.value for d in last["decisions"]} == EXPECTED["decisions"]
    assert all(isinstance(e, Evidence) for e in last["evidence"])
    assert sorted(e.tool for e in last["evidence"]) == EXPECTED["evidence_tools"]
    assert state["messages"][-1].content == EXPECTED["last_reply"]


def test_v0_1_conversation_continues_on_its_stored_study(old_data: Path):
    graph = _graph(old_data)
    out = graph.invoke({"messages": [("user", "Why did you call cardiomegaly?")]}, CONFIG)
    reply = out["messages"][-1]
    assert isinstance(reply, AIMessage) and len(out["messages"]) == EXPECTED["messages"] + 2
    assert "cardiomegaly" in reply.content.lower()
    assert "no longer available" not in reply.content  # the v0.1 study was found in the store
    assert out["study_id"] == EXPECTED["study_id"]


def test_v0_1_memory_is_read_into_the_studys_ledger(old_data: Path):
    """The next reconciling turn reads v0.1's ``last_result`` into the ledger (its evidence becomes the
    study's first entries, its decisions the ones a change is measured against) and clears it."""
    from agents.memory.ledger import study_decisions

    clf = classifier({"pleural_effusion": 0.8})
    clf.cacheable = True  # v0.1's classifier output answers: the study is not read again
    graph = _graph(old_data, ScriptedVLM(), clf, retrieval([["pleural_effusion"]]))
    before = study_decisions(graph.get_state(CONFIG).values)
    assert {d.finding: d.status.value for d in before} == EXPECTED["decisions"]
    out = graph.invoke({"messages": [("user", "Is there a pleural effusion?")]}, CONFIG)
    values = graph.get_state(CONFIG).values
    ledger = values["ledger"]
    assert ledger.study_id == EXPECTED["study_id"] and values.get("last_result") is None
    assert sorted({e.key.tool for e in ledger.entries}) == EXPECTED["evidence_tools"] and clf.calls == 0
    # v0.1's re-ask about cardiomegaly is kept as the settlement of that conflict: not asked again
    assert [e.key.ask.kind for e in ledger.entries if e.key.tool == "vlm"] == ["report", "verify", "finding_question"]
    assert [e.turn for e in ledger.entries if e.key.tool == "retrieval"] == [1]  # v0.1's, kept
    after = {d.finding: d.status.value for d in out["decisions"]}
    assert {f: after[f] for f in ("cardiomegaly", "pneumothorax")} == {"cardiomegaly": "present",
                                                                      "pneumothorax": "absent"}
    assert "cardiomegaly" not in {c.finding for c in out["record"].changed}


def test_v0_1_checkpoint_blobs_decode_through_the_allow_list(old_data: Path):
    """Every stored write decodes through the msgpack allow-list into today's classes (evidence types are
    serialised by module path: moving knowledge.evidence would break this)."""
    import sqlite3

    from agents.memory.checkpointers import serializer

    serde = serializer()
    conn = sqlite3.connect(old_data / "checkpoints.sqlite")
    rows = conn.execute("SELECT channel, type, value FROM writes WHERE type = 'msgpack'").fetchall()
    conn.close()
    decoded = {channel: serde.loads_typed((kind, value)) for channel, kind, value in rows}
    assert decoded["evidence"] and all(isinstance(e, Evidence) for e in decoded["evidence"])
    assert decoded["decisions"] and all(isinstance(d, Decision) for d in decoded["decisions"])
    assert all(isinstance(d, Decision) for d in decoded["last_result"]["decisions"])
