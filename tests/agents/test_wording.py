"""The responder's words for the reconciler's data: implied calls, classification calls, reasons."""

from __future__ import annotations

import pytest

from agents.reconciling.decide import decide
from agents.replying import compose as responder
from agents.replying import phrases as wording
from knowledge.evidence import Decision, Evidence, FindingCall, Status

P, A = Status.present, Status.absent


def _vlm(finding: str, status: Status, **kw) -> FindingCall:
    return FindingCall(finding=finding, status=status, source="vlm", **kw)


def test_implied_and_classification_calls_are_worded_from_their_fields():
    normal = _vlm("edema", A, implied="normal_study", text="No acute process.")
    silent = _vlm("edema", A, implied="report_silence")
    listed = _vlm("edema", P, task="classification")
    left_out = _vlm("edema", A, task="classification")
    assert wording.describe_call(normal) == "the VLM calls the study normal ('No acute process.')"
    assert wording.describe_call(silent) == "the VLM report does not mention it"
    assert "lists it among the abnormalities" in wording.describe_call(listed)
    assert "leaves it out of its abnormality list" in wording.describe_call(left_out)
    # citations name what an implied call was implied from (the field, not a text prefix)
    assert wording.cite(normal) == "vlm says absent, implied by a no-finding statement: No acute process."
    assert wording.cite(silent) == "vlm says absent, not mentioned in its full report"
    assert wording.said_text(listed) is None


def test_report_reply_names_the_classification_when_it_contradicts():
    clf = FindingCall(finding="pleural_effusion", status=P, score=0.9, score_kind="op_norm", source="classifier")
    cls = _vlm("pleural_effusion", A, task="classification")
    ev = [Evidence(tool="vlm", report="Heart size normal. Lungs clear.", calls=[cls]),
          Evidence(tool="classifier", calls=[clf])]
    ds = decide([cls, clf], report_sources={"vlm"})
    text = responder.compose({"intent": "report"}, ev, ds)
    assert "not in VLM list" in text
    assert "VLM report “" not in text  # the report itself said nothing about it: nothing is quoted from it


def test_sources_are_described_by_score_kind_and_label_not_by_name():
    custom = FindingCall(finding="edema", status=P, score=0.8, score_kind="op_norm", source="chexnet")
    labels = {"chexnet": "the CheXNet classifier"}
    assert wording.describe_call(custom) == "tool 'chexnet' op-point score 0.80 (above threshold)"
    assert wording.describe_call(custom, labels) == "CheXNet classifier op-point score 0.80 (above threshold)"
    prob = FindingCall(finding="edema", status=P, score=0.8, score_kind="probability", source="classifier")
    assert wording.describe_call(prob) == "classifier probability 0.80 (present)"  # never called an op-point score
    silent = FindingCall(finding="edema", status=A, implied="report_silence", source="scribe")
    assert wording.describe_call(silent, {"scribe": "the scribe"}) == "the scribe report does not mention it"


def test_side_line_says_what_the_boxes_show_about_the_side_asked():
    from agents.replying.phrases import side_line
    from knowledge.evidence import Box

    image_right = Box(x1=0.6, y1=0.55, x2=0.9, y2=0.9)  # PA film: the patient's left
    image_left = Box(x1=0.1, y1=0.55, x2=0.4, y2=0.9)
    wrong = side_line("right", [image_right], "PA", "pleural effusion")
    assert "patient's left" in wrong and "nothing here shows a right-sided pleural effusion" in wrong
    assert side_line("left", [image_right], "PA", "pleural effusion").startswith("**Side:** the boxes lie on the patient's left")
    assert "nothing here shows a bilateral" in side_line("bilateral", [image_right], "PA", "pleural effusion")
    assert "patient's left and right" in side_line("bilateral", [image_right, image_left], "PA", "pleural effusion")
    assert side_line("right", [], "PA", "pneumothorax").startswith("**Side not checked:**")
    assert "lateral view cannot tell" in side_line("right", [image_left], "LATERAL", "pneumothorax")
    central = side_line("left", [Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)], "PA", "cardiomegaly")
    assert "across the midline" in central


@pytest.mark.parametrize("text, side", [
    ("Is there a right pleural effusion?", "right"), ("any left-sided pneumothorax", "left"),
    ("Are there bilateral effusions?", "bilateral"), ("effusion on the right or the left?", "bilateral"),
    ("Is there a pleural effusion?", None),
])
def test_the_side_a_question_asks_about(text, side):
    from agents.routing.rules import asked_side

    assert asked_side(text) == side


@pytest.mark.parametrize("text, aspect", [
    ("How big is the effusion?", "size"), ("Is it a small pneumothorax?", "size"), ("How severe is the edema?", "size"),
    ("Is the line in a good position?", "position"), ("Where is the tip of the NG tube?", "position"),
    ("Is the ET tube too high?", "position"), ("Can you rule out a pneumothorax?", "rule_out"),
    ("Exclude pneumonia please", "rule_out"), ("Is there a pleural effusion?", None), ("Write a report", None),
])
def test_the_aspect_a_question_asks_about(text, aspect):
    from agents.routing.rules import asked_aspect

    assert asked_aspect(text) == aspect


def test_aspect_line_names_what_a_yes_no_does_not_settle():
    from agents.replying.phrases import aspect_line

    assert aspect_line("size", "pleural_effusion", "pleural effusion").startswith("**Size not graded:**")
    assert aspect_line("size", "cardiomegaly", "cardiomegaly") is None  # "is the heart size normal?" is the finding
    assert aspect_line("position", "support_devices", "support devices").startswith("**Position not judged:**")
    absent = Decision(finding="pneumothorax", status=A, confidence=0.59)
    said = aspect_line("rule_out", "pneumothorax", "pneumothorax", absent)
    assert said.startswith("**Rule-out:** the tools call pneumothorax absent at confidence 0.59")
    assert "does not make one" in said
    unsure = Decision(finding="pneumothorax", status=Status.uncertain, confidence=0.4)
    assert aspect_line("rule_out", "pneumothorax", "pneumothorax", unsure) == "**Not ruled out:** the tools do not exclude pneumothorax."
