"""Decisions read back for findings whose calls are unchanged: the same decisions as deciding afresh."""

from __future__ import annotations

import pytest

from agents.reconciling.decide import decide
from agents.reconciling.memo import DECISIONS, DecisionMemo, call_key
from agents.reconciling.policy import Policy
from knowledge.evidence import Box, FindingCall, Status


@pytest.fixture()
def memo():
    DECISIONS.clear()
    yield DECISIONS
    DECISIONS.clear()


def _calls(cardio: float = 0.82) -> list[FindingCall]:
    box = Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)
    return [
        FindingCall(finding="cardiomegaly", status=Status.present if cardio >= 0.6 else Status.absent, score=cardio,
                    score_kind="op_norm",
                    source="classifier", box=box),
        FindingCall(finding="cardiomegaly", status=Status.absent, source="vlm", text="heart size is normal",
                    task="report"),
        FindingCall(finding="pleural_effusion", status=Status.absent, source="vlm", text="effusion", task="report"),
        FindingCall(finding="pleural_effusion", status=Status.absent, score=0.2, score_kind="op_norm",
                    source="classifier"),
        FindingCall(finding="nodule", status=Status.present, score=0.66, score_kind="op_norm", source="classifier"),
        FindingCall(finding="no_finding", status=Status.absent, source="vlm", task="report"),
    ]


def test_unchanged_findings_are_read_back_equal_to_a_fresh_decision(memo) -> None:
    first = decide(_calls(), report_sources={"vlm"})
    assert memo.hits == 0 and memo.misses == len(first)
    again = decide(_calls(), report_sources={"vlm"})
    assert memo.hits == len(first)
    memo.clear()
    fresh = decide(_calls(), report_sources={"vlm"})
    assert [d.model_dump() for d in again] == [d.model_dump() for d in first] == [d.model_dump() for d in fresh]


def test_new_evidence_on_one_finding_re_decides_that_finding_only(memo) -> None:
    before = {d.finding: d for d in decide(_calls(0.82), report_sources={"vlm"})}
    hits = memo.hits
    after = {d.finding: d for d in decide(_calls(0.2), report_sources={"vlm"})}
    assert memo.hits - hits == len(after) - 1  # every finding but cardiomegaly read back
    assert after["cardiomegaly"] != before["cardiomegaly"]
    assert not after["cardiomegaly"].conflict and before["cardiomegaly"].conflict
    assert after["nodule"] == before["nodule"]


def test_another_policy_never_reads_this_one(memo) -> None:
    default = decide(_calls())
    stricter = decide(_calls(), Policy(text_absent=0.95, source_labels={"vlm": "the reader"}))
    assert memo.hits == 0
    cardio = {d.finding: d for d in default}["cardiomegaly"], {d.finding: d for d in stricter}["cardiomegaly"]
    assert "the reader" in cardio[1].rationale and "the reader" not in cardio[0].rationale


def test_the_key_holds_every_field_of_a_call() -> None:
    """A field added to FindingCall or Box must be added to the key, or two different calls would share a decision."""
    box = Box(x1=0.1, y1=0.2, x2=0.3, y2=0.4, label="x")
    call = FindingCall(finding="mass", status=Status.present, score=0.7, score_kind="op_norm", raw_score=0.3,
                       source="classifier", box=box, text="mass", span=(0, 4), implied="normal_study",
                       task="classification")
    assert len(call_key(call)) == len(FindingCall.model_fields)
    assert len(call_key(call)[6]) == len(Box.model_fields)
    for field, other in [("score", 0.71), ("raw_score", 0.31), ("text", "a mass"), ("span", (1, 4)),
                         ("implied", "report_silence"), ("task", "report"), ("score_kind", "probability"),
                         ("box", box.model_copy(update={"label": "y"}))]:
        assert call_key(call) != call_key(call.model_copy(update={field: other})), field


def test_memo_is_bounded() -> None:
    small = DecisionMemo(maxsize=2)
    policy = Policy()
    for finding in ("mass", "nodule", "edema"):
        calls = [FindingCall(finding=finding, status=Status.present, source="vlm")]
        small.put(policy, small.key(finding, calls), decide(calls)[0])
    assert len(small) == 2
    assert small.get(policy, small.key("mass", [FindingCall(finding="mass", status=Status.present, source="vlm")])) \
        is None
