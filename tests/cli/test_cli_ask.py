"""`cxr-agent ask IMAGE "question" --thread ID` prints the reply and the evidence table."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier
from typer.testing import CliRunner

import graph as graph_module
from cli.main import app


def test_ask_prints_reply_and_evidence_and_continues_thread(monkeypatch, settings, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.")
    clf = classifier({"cardiomegaly": 0.8})
    from agents.memory.checkpointers import make_checkpointer

    saver = make_checkpointer(url="memory")
    real_build = graph_module.build_graph

    def fake_build(_settings=None, **_kw):
        return real_build(settings, tools=[vlm, clf], builtin_tools=False, plugins=False,
                                        checkpointer=saver)

    monkeypatch.setattr(graph_module, "build_graph", fake_build)
    runner = CliRunner(env={"COLUMNS": "400"})
    res = runner.invoke(app, ["ask", str(cxr_image), "Is there cardiomegaly?", "--thread", "cli1"])
    assert res.exit_code == 0, res.output
    assert "Yes" in res.output and "Evidence this turn" in res.output
    assert "classifier" in res.output and "cardiomegaly 0.80" in res.output
    res2 = runner.invoke(app, ["ask", "-", "Why did you call cardiomegaly?", "--thread", "cli1"])
    assert res2.exit_code == 0, res2.output
    assert "no tool was re-run" in res2.output and vlm.calls == 1
    bad = runner.invoke(app, ["ask", "/no/such/file.png", "hello"])
    assert bad.exit_code != 0 and "no such file" in bad.output
