"""Custom tools: protocol objects, LangChain tools, overriding built-ins, lazy built-ins."""

from __future__ import annotations

import pytest
from graph_scripted import ScriptedTool, ScriptedVLM
from langchain_core.tools import tool

from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.registry import LazyTool, as_cxr_tool, resolve_tools


def test_langchain_tool_is_adapted(make_graph, thread, cxr_image):
    @tool
    def second_opinion(text: str, study_id: str) -> str:
        """A second opinion on the study."""
        return f"second opinion on {study_id[:8]} for: {text}"

    second_opinion.metadata = {"cxr_intents": ["report", "chat"]}
    g = make_graph(ScriptedVLM(), second_opinion)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    ev = next(e for e in out["evidence"] if e.tool == "second_opinion")
    assert ev.ok and ev.answer == f"second opinion on {out['study_id'][:8]} for: Write a report"
    assert f"**second_opinion**: {ev.answer}" in out["messages"][-1].content


def test_custom_tool_runs_only_for_its_intents(make_graph, thread, cxr_image):
    extra = ScriptedTool("extra", {"locate"}, Evidence(tool="extra", answer="located"), image_source=False)
    g = make_graph(ScriptedVLM(), extra)
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    assert extra.calls == 0
    g.invoke({"messages": [("user", "Where is the nodule?")]}, cfg)
    assert extra.calls == 1 and extra.requests[0].finding == "nodule"


def test_custom_tool_replaces_builtin_by_name(settings):
    vlm = ScriptedVLM()
    reg = resolve_tools(settings, [vlm], builtins=True, plugins=False)
    assert reg["vlm"] is vlm and isinstance(reg["classifier"], LazyTool)
    assert set(reg) == {"vlm", "classifier", "retrieval"}


def test_invalid_custom_tools_are_refused_with_reason():
    class NoIntents:
        name = "x"

        def run(self, request):
            return Evidence(tool="x")

    with pytest.raises(TypeError, match="must declare `intents`"):
        as_cxr_tool(NoIntents())
    with pytest.raises(TypeError, match="no `name`"):
        as_cxr_tool(object())


def test_lazy_builtin_failure_becomes_evidence(settings):
    t = LazyTool("ghost", "cxr_no_such_module_xyz:Tool", {"report"}, image_source=True, settings=settings)
    ev = t.run(ToolRequest(intent="report"))
    assert not ev.ok and "ghost tool could not be loaded (ModuleNotFoundError" in ev.error


def test_import_graph_loads_no_models(tmp_path):
    """`import graph` builds the module-level graph without torch, weights or model code."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    code = ("import sys, graph; heavy = [m for m in ('torch', 'torchxrayvision', 'transformers', "
            "'sentence_transformers', 'faiss') if m in sys.modules]; "
            "tools = graph.runtime(graph.graph).tools; "
            "print(heavy, sorted(tools), [t._tool for t in tools.values()])")
    env = {**os.environ, "PYTHONPATH": str(repo), "CXR_AGENT_DATA_DIR": str(tmp_path), "CXR_AGENT_MODEL_PROFILE": "real"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[] ['classifier', 'retrieval', 'vlm'] [None, None, None]"


def test_image_source_flag_decides_whether_a_custom_tool_votes(make_graph, thread, cxr_image):
    from knowledge.evidence import FindingCall, Status

    def calls(name):
        return Evidence(tool=name, calls=[FindingCall(finding="pneumothorax", status=Status.present, source=name,
                                                      text="pneumothorax")])

    prior = ScriptedTool("atlas", {"report"}, calls("atlas"), image_source=False)
    reader = ScriptedTool("reader", {"report"}, calls("reader"), image_source=True)
    out = make_graph(ScriptedVLM(report="Mild cardiomegaly."), prior).invoke(
        {"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    assert next(d for d in out["decisions"] if d.finding == "pneumothorax").status != Status.present
    # An image source votes: against the report's silence its positive is a conflict, never dropped ...
    out = make_graph(ScriptedVLM(report="Mild cardiomegaly."), reader).invoke(
        {"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    ptx = next(d for d in out["decisions"] if d.finding == "pneumothorax")
    assert "reader" in ptx.agreeing and ptx.status != Status.absent and ptx.needs_review
    # ... and when the VLM's targeted re-ask confirms it, it is present.
    confirm = lambda f: Evidence(tool="vlm", answer="Yes.",  # noqa: E731
                                 calls=[FindingCall(finding=f, status=Status.present, source="vlm")])
    out = make_graph(ScriptedVLM(report="Mild cardiomegaly.", verify=confirm), reader).invoke(
        {"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    assert next(d for d in out["decisions"] if d.finding == "pneumothorax").status == Status.present


def test_cacheable_is_declared_never_assumed(settings):
    from tools.base import capabilities
    from tools.classifier.tool import ClassifierTool
    from tools.registry import builtin_tools
    from tools.retrieval.tool import RetrievalTool
    from tools.vlm.tool import VLMTool

    builtins = {t.name: capabilities(t).cacheable for t in builtin_tools(settings)}
    assert builtins == {"vlm": True, "classifier": True, "retrieval": False}
    # the loaded tools declare what their lazy stand-ins promise
    assert (VLMTool.cacheable, ClassifierTool.cacheable, getattr(RetrievalTool, "cacheable", False)) == (True, True, False)

    plain = ScriptedTool("plain", {"report"}, Evidence(tool="plain"))
    assert capabilities(as_cxr_tool(plain)).cacheable is False
    scores = ScriptedTool("scores", {"report"}, Evidence(tool="scores"))
    scores.cacheable = True
    assert capabilities(as_cxr_tool(scores)).cacheable is True

    @tool
    def density(study_id: str) -> str:
        """Breast-density-like score of the study (depends on the pixels only)."""
        return "0.4"

    density.metadata = {"cxr_intents": ["report"], "cxr_cacheable": True}
    assert capabilities(as_cxr_tool(density)).cacheable is True

    # a replacement of a cacheable built-in inherits its other capabilities, never cacheable
    stand_in = ScriptedTool("classifier", {"report"}, Evidence(tool="classifier"))
    registry = resolve_tools(settings, [stand_in], plugins=False)
    caps = capabilities(registry["classifier"])
    assert caps.image_source is True and caps.cacheable is False
