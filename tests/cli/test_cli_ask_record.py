"""`cxr-agent ask` prints what the turn's record says (reply, the study's decisions, evidence, unavailable
tools, artifacts), read from the graph's output: never from the thread's state or the reply's payload."""

from __future__ import annotations

import pytest
from graph_scripted import ScriptedTool, ScriptedVLM, classifier
from typer.testing import CliRunner

import graph as graph_module
from cli.main import app
from cli.turn_print import NoTurnRecord, record_of
from knowledge.evidence import Box

HEART = Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)


def test_ask_prints_the_turns_record(monkeypatch, settings, cxr_image):
    from agents.memory.checkpointers import make_checkpointer

    broken = ScriptedTool("second_opinion", {"report"}, raises=RuntimeError("weights missing"))
    clf = classifier({"cardiomegaly": 0.2, "pleural_effusion": 0.9}, {"pleural_effusion": HEART})
    clf.cacheable = True  # its read of the study answers the follow-up from the ledger
    tools = [ScriptedVLM(report="Cardiomegaly."), clf, broken]
    saver = make_checkpointer(url="memory")
    real_build = graph_module.build_graph
    built = []

    def no_state(*_a, **_kw):
        raise AssertionError("ask read the thread's state")

    def build(_settings=None, **_kw):
        g = real_build(settings.model_copy(update={"verify_conflicts": False}), tools=tools, builtin_tools=False,
                       plugins=False, checkpointer=saver)
        object.__setattr__(g, "get_state", no_state)  # the record alone tells the turn
        built.append(g)
        return g

    monkeypatch.setattr(graph_module, "build_graph", build)
    runner = CliRunner(env={"COLUMNS": "400"})
    res = runner.invoke(app, ["ask", str(cxr_image), "--thread", "rec1", "-q"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "Needs your review" in out and "Cardiomegaly." in out  # the reply
    decisions = out[out.index("Decisions on the study"):out.index("Evidence this turn")]
    for name in ("Cardiomegaly", "Pleural effusion"):
        row = next(line for line in decisions.splitlines() if name in line)
        assert "uncertain" in row and "yes" in row and "new" in row, row  # flagged, new this turn, with why
    assert "classifier (image)" in decisions
    assert "Unavailable this turn: second_opinion" in out
    assert "Artifacts: heatmap (Pleural effusion)" in out
    assert "thread: rec1" in out and len(built) == 1
    # a follow-up on the thread: the classifier's read comes from the study's ledger, and the record says so
    again = runner.invoke(app, ["ask", "-", "Is there a pleural effusion?", "--thread", "rec1", "-q"])
    assert again.exit_code == 0, again.output
    evidence = again.output[again.output.index("Evidence this turn"):]
    row = next(line for line in evidence.splitlines() if "classifier" in line)
    assert "reused" in row and clf.calls == 1, row


def test_a_graph_output_without_a_record_is_refused():
    with pytest.raises(NoTurnRecord, match="no 'record'"):
        record_of({"messages": []})
    rec = record_of({"record": {"reply": "hi", "study_id": "s1"}})  # a server's JSON record
    assert rec.reply == "hi" and rec.study_id == "s1"
