"""Tools that raise, hang or return garbage never escape the graph; the reply names them."""

from __future__ import annotations

import time

from graph_scripted import ScriptedTool, ScriptedVLM, classifier, retrieval

from cxr_agent.settings import DEMO_WARNING
from knowledge.evidence import Evidence


def test_tool_raising_is_reported_unavailable(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.")
    clf = classifier({}, raises=RuntimeError("weights missing: run `cxr-agent models download`"))
    out = make_graph(vlm, clf).invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    clf_ev = next(e for e in out["evidence"] if e.tool == "classifier")
    assert not clf_ev.ok and "weights missing" in clf_ev.error
    text = out["messages"][-1].content
    assert text.startswith(f"> **{DEMO_WARNING}**")
    assert "Unavailable this turn: **classifier** (classifier failed: RuntimeError: weights missing" in text
    assert "\nCardiomegaly.\n" in text  # the rest of the turn still answers
    assert out["messages"][-1].additional_kwargs["cxr"]["unavailable"] == ["classifier"]


def test_every_tool_failing_says_nothing_comes_from_the_image(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(raises=RuntimeError("RadVLM weights are not available"))
    clf = classifier({}, raises=RuntimeError("classifier weights missing"))
    out = make_graph(vlm, clf).invoke({"messages": [("user", "Is there a pneumothorax?")], "image": str(cxr_image)},
                                      thread())
    text = out["messages"][-1].content
    assert "Uncertain** — no tool gave a usable answer about pneumothorax" in text
    assert "No tool answered, so nothing above comes from this image." in text
    assert "rests on the remaining tools" not in text


def test_tool_timing_out(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.")
    slow = retrieval([["cardiomegaly"]], delay=6.0)
    g = make_graph(vlm, classifier({"cardiomegaly": 0.8}), slow, tool_timeout_s=0.3)
    t0 = time.perf_counter()
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    assert time.perf_counter() - t0 < 5.0  # did not wait for the hung tool
    ev = next(e for e in out["evidence"] if e.tool == "retrieval")
    assert not ev.ok and ev.error == "retrieval timed out after 0.3 s"
    assert "**retrieval** (retrieval timed out after 0.3 s)" in out["messages"][-1].content
    assert any(d.finding == "cardiomegaly" for d in out["decisions"])


def test_tool_returning_nothing_or_dict(make_graph, thread, cxr_image):
    nothing = ScriptedTool("nothing", {"report"}, lambda r: None, image_source=False)
    as_dict = ScriptedTool("as_dict", {"report"}, lambda r: {"answer": "dict answer"}, image_source=False)
    out = make_graph(ScriptedVLM(), nothing, as_dict).invoke(
        {"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    by = {e.tool: e for e in out["evidence"]}
    assert not by["nothing"].ok and "returned nothing" in by["nothing"].error
    assert by["as_dict"].ok and by["as_dict"].answer == "dict answer"
    assert "**as_dict**: dict answer" in out["messages"][-1].content


def test_every_tool_failing_still_replies(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(raises=ValueError("boom"))
    out = make_graph(vlm, classifier({}, raises=ValueError("bang"))).invoke(
        {"messages": [("user", "Is there a pneumothorax?")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "**Uncertain** — no tool gave a usable answer about pneumothorax" in text
    assert "**vlm**" in text and "**classifier**" in text
    assert all(isinstance(e, Evidence) and not e.ok for e in out["evidence"])


def test_retrieval_skipped_without_a_vlm_draft(make_graph, thread, cxr_image):
    ret = retrieval([["cardiomegaly"]])
    out = make_graph(ScriptedVLM(raises=RuntimeError("down")), classifier({"cardiomegaly": 0.8}), ret).invoke(
        {"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    assert ret.calls == 0
    ev = next(e for e in out["evidence"] if e.tool == "retrieval")
    assert ev.error == "not run: vlm produced no draft report to search with"
    assert "| Cardiomegaly | present |" in out["messages"][-1].content


def test_tool_raising_its_own_timeout_error_is_not_a_graph_timeout():
    from agents.turn.tool_runner import call_with_timeout

    def fn():
        raise TimeoutError("upstream server timed out")

    ev = call_with_timeout("vlm", fn, 5.0)
    assert not ev.ok and ev.error == "vlm failed: TimeoutError: upstream server timed out"
