"""Conflict -> targeted VLM re-ask -> decision: agreement, resolved, unresolved, skipped."""

from __future__ import annotations

from graph_scripted import ScriptedTool, ScriptedVLM, classifier

from knowledge.evidence import Box, Evidence, FindingCall, Status

HEART = Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)


def _answer(status: Status, box: Box | None = None):
    return lambda f: Evidence(tool="vlm", answer="Yes." if status == Status.present else "No.",
                              calls=[FindingCall(finding=f, status=status, source="vlm", box=box)])


def _run(make_graph, thread, image, vlm, clf, **over):
    g = make_graph(vlm, clf, **over)
    return g.invoke({"messages": [("user", "Write a report")], "image": str(image)}, thread())


def test_agreement_needs_no_verification(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.", verify=_answer(Status.present))
    out = _run(make_graph, thread, cxr_image, vlm, classifier({"cardiomegaly": 0.85}, {"cardiomegaly": HEART}))
    d = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert d.status == Status.present and not d.conflict and set(d.agreeing) == {"vlm", "classifier"}
    assert vlm.verify_calls == []
    assert "No conflicts between image sources; every decision matches the report." in out["messages"][-1].content


def test_disagreement_resolved_by_reask_agreeing_with_classifier(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.", verify=_answer(Status.absent))
    out = _run(make_graph, thread, cxr_image, vlm, classifier({"cardiomegaly": 0.2}, {"cardiomegaly": HEART}))
    assert vlm.verify_calls == ["cardiomegaly"]
    d = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert d.status == Status.absent and not d.conflict and d.verification
    assert len([x for x in out["decisions"] if x.finding == "cardiomegaly"]) == 1  # replaced, not duplicated
    text = out["messages"][-1].content
    assert "- **Cardiomegaly** (Contradicted): VLM report “Cardiomegaly” (present)" in text and "→ absent" in text
    assert "\nCardiomegaly.\n" in text  # the VLM text itself is left as written


def test_disagreement_resolved_by_overlapping_boxes(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.", verify=_answer(Status.present, Box(x1=0.35, y1=0.45, x2=0.7, y2=0.8)))
    out = _run(make_graph, thread, cxr_image, vlm, classifier({"cardiomegaly": 0.3}, {"cardiomegaly": HEART}))
    d = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert d.status == Status.present and not d.conflict
    assert "IoU" in (d.verification or "")


def test_disagreement_unresolved_is_flagged(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.", verify=_answer(Status.present, Box(x1=0.0, y1=0.0, x2=0.1, y2=0.1)))
    out = _run(make_graph, thread, cxr_image, vlm, classifier({"cardiomegaly": 0.2}, {"cardiomegaly": HEART}))
    d = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert d.conflict and d.needs_review and d.status == Status.uncertain
    text = out["messages"][-1].content
    assert "- **Cardiomegaly** (Contradicted, flagged):" in text and "→ uncertain" in text
    verification = [e for e in out["evidence"] if e.meta.get("verification") == "cardiomegaly"]
    assert len(verification) == 1 and verification[0].ok


def test_verification_turned_off_is_said(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.", verify=_answer(Status.absent))
    out = _run(make_graph, thread, cxr_image, vlm, classifier({"cardiomegaly": 0.2}), verify_conflicts=False)
    assert vlm.verify_calls == []
    assert "verification is turned off" in out["messages"][-1].content
    d = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert d.conflict and d.needs_review


def test_verification_skipped_when_vlm_unavailable(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(raises=RuntimeError("CUDA out of memory"))
    reader = ScriptedTool("second_reader", {"report"}, Evidence(tool="second_reader", calls=[
        FindingCall(finding="cardiomegaly", status=Status.present, source="second_reader", text="big heart")]))
    g = make_graph(vlm, classifier({"cardiomegaly": 0.2}), reader)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    d = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert d.conflict and d.needs_review
    text = out["messages"][-1].content
    assert "not re-checked: vlm is unavailable (vlm failed: RuntimeError: CUDA out of memory)" in text
    assert vlm.verify_calls == []
