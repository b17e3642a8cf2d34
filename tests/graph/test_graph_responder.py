"""The responder is a pure function: citations, score wording, demo warning, disclaimer."""

from __future__ import annotations

from agents.replying.compose import cite, compose, payload, region
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Box, Decision, Evidence, FindingCall, Status


def _clf(score: float, status: Status) -> FindingCall:
    return FindingCall(finding="pneumothorax", status=status, score=score, score_kind="op_norm", source="classifier",
                       text="densenet: Pneumothorax op_norm 0.71")


def test_op_norm_is_cited_as_op_point_score_never_probability():
    c = _clf(0.71, Status.present)
    assert cite(c) == "classifier op-point score 0.71 (threshold 0.5) says present"
    p = FindingCall(finding="pneumothorax", status=Status.present, score=0.7, score_kind="probability", source="x")
    assert cite(p).startswith("x probability 0.70")
    v = FindingCall(finding="pneumothorax", status=Status.absent, source="vlm", text="No pneumothorax.",
                    box=Box(x1=0.1, y1=0.2, x2=0.3, y2=0.4))
    assert cite(v) == 'vlm says absent, "No pneumothorax.", box x 0.10–0.30, y 0.20–0.40'


def test_region_names_patient_side():
    assert region(Box(x1=0.05, y1=0.1, x2=0.35, y2=0.3)) == "right upper zone (image left)"
    assert region(Box(x1=0.6, y1=0.7, x2=0.9, y2=0.95)) == "left lower zone (image right)"
    assert region(Box(x1=0.4, y1=0.4, x2=0.6, y2=0.6)) == "mid central chest"


def test_demo_warning_only_in_demo_and_disclaimer_on_reports():
    route = {"intent": "report", "tools": ["vlm"], "needs_image": True}
    ev = [Evidence(tool="vlm", report="No acute findings.")]
    demo = compose(route, ev, [], demo=True, study={"id": "x"})
    real = compose(route, ev, [], demo=False, study={"id": "x"})
    assert demo.startswith(f"> **{DEMO_WARNING}**") and DEMO_WARNING not in real
    assert DISCLAIMER in demo and DISCLAIMER in real
    chat = compose({"intent": "chat"}, [Evidence(tool="vlm", answer="Hi.")], [], demo=False)
    assert chat.strip() == "Hi." and DISCLAIMER not in chat


def test_unavailable_tools_are_named_and_in_payload():
    route = {"intent": "report", "needs_image": True}
    ev = [Evidence(tool="vlm", report="No acute findings."), Evidence.failure("retrieval", "index missing")]
    d = Decision(finding="pneumothorax", status=Status.present, confidence=0.8, agreeing=["classifier"],
                 rationale="Pneumothorax: classifier only.", calls=[_clf(0.8, Status.present)])
    text = compose(route, ev, [d], study={"id": "s"})
    assert "**retrieval** (index missing)" in text
    assert "Added: Pneumothorax" in text
    p = payload(route, ev, [d], study_id="s", demo=False)
    assert p["unavailable"] == ["retrieval"] and p["study_id"] == "s" and p["demo"] is False
