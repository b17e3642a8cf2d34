"""With no re-ask, the conflicts left unchecked are said once, without naming a finding a second time:
each flagged finding is named once outside the report (its own review line)."""

from __future__ import annotations

from graph_scripted import ScriptedTool, ScriptedVLM, classifier

from bench.replies import namings, outside_text
from knowledge.evidence import Evidence, FindingCall, Status


def _flagged_named_once(out) -> str:
    reply = out["messages"][-1].content
    report = next((e.report for e in out["evidence"] if e.ok and e.report), None)
    flagged = [d.finding for d in out["decisions"] if d.needs_review]
    named = namings(outside_text(reply, report))
    assert len(flagged) == 2 and all(named.get(f) == 1 for f in flagged), (named, reply)
    assert all(n == 1 for n in named.values()), named
    return reply


def test_re_asks_turned_off_are_said_once(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.")
    g = make_graph(vlm, classifier({"cardiomegaly": 0.2, "pleural_effusion": 0.9}), verify_conflicts=False)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    reply = _flagged_named_once(out)
    assert vlm.verify_calls == []
    assert reply.count("not re-checked") == 1
    assert "2 conflicts were not re-checked: verification is turned off (CXR_AGENT_VERIFY_CONFLICTS=false); " \
           "they stay flagged for review." in reply


def test_no_usable_verifier_is_said_once(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(raises=RuntimeError("CUDA out of memory"))
    reader = ScriptedTool("second_reader", {"report"}, Evidence(tool="second_reader", report="Big heart.", calls=[
        FindingCall(finding="cardiomegaly", status=Status.present, source="second_reader", text="Big heart")]))
    reader.writes_report = True
    g = make_graph(vlm, classifier({"cardiomegaly": 0.2, "pleural_effusion": 0.9}), reader)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    reply = _flagged_named_once(out)
    assert reply.count("not re-checked") == 1 and "2 conflicts were not re-checked: vlm is unavailable" in reply
