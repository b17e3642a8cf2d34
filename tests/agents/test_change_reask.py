"""The change rule's re-ask rule: a comparing source asked again about a conflict with the classifier."""

from __future__ import annotations

import pytest

from agents.comparing.decide import ChangeCall, StudyRead, compare
from agents.comparing.policy import ChangePolicy
from agents.turn.change_reads import change_calls
from knowledge.evidence import Evidence, FindingCall, Status


def clf(score: float) -> Evidence:
    st = Status.present if score >= 0.6 else Status.absent if score <= 0.4 else Status.uncertain
    return Evidence(tool="classifier", calls=[FindingCall(finding="pleural_effusion", status=st, score=score,
                                                          score_kind="op_norm", source="classifier")])


def said(change: str, text: str | None = None) -> ChangeCall:
    return ChangeCall(finding="pleural_effusion", change=change, source="cmp", text=text)


def decide(before: float, now: float, first: str, again: str | None):
    prior = StudyRead(study_id="a", view="PA", evidence=[clf(before)])
    current = StudyRead(study_id="b", view="PA", evidence=[clf(now)])
    reasks = [] if again is None else [said(again, f"It is {again}.")]
    (d,) = compare(prior, current, ChangePolicy(), score_sources=["classifier"], change_calls=[said(first)],
                   findings=["pleural_effusion"], reasks=reasks)
    return d


def test_the_conflict_before_any_reask():
    d = decide(0.8, 0.85, "resolved", None)  # still called present: resolved does not fit
    assert (d.change, d.conflict, d.needs_review) == ("cannot_compare", True, True)
    assert sorted(d.disagreeing) == ["classifier", "cmp"]


def test_an_answer_the_classifier_supports_settles_it():
    d = decide(0.8, 0.85, "resolved", "worse")
    assert (d.change, d.conflict, d.needs_review) == ("worse", False, False)
    assert sorted(d.agreeing) == ["classifier", "cmp"] and d.confidence == pytest.approx(0.75)
    reask = next(r for r in d.reasons if r.rule.startswith("reask"))
    assert (reask.rule, reask.source, reask.change, reask.detail) == ("reask_agrees", "cmp", "worse", "It is worse.")


def test_the_same_answer_again_leaves_it_for_review():
    d = decide(0.8, 0.85, "resolved", "resolved")
    assert (d.change, d.conflict, d.needs_review) == ("cannot_compare", True, True)
    assert [r.rule for r in d.reasons if r.rule.startswith("reask")] == ["reask_maintained"]


def test_another_unsupported_answer_or_none_leaves_it_for_review():
    for again in ("new", "cannot_compare"):
        d = decide(0.8, 0.85, "resolved", again)
        assert (d.change, d.conflict) == ("cannot_compare", True)
        assert [r.rule for r in d.reasons if r.rule.startswith("reask")] == ["reask_unresolved"]


def test_a_reask_never_makes_worse_from_a_score_alone():
    d = decide(0.2, 0.9, "worse", "worse")  # absent then present: the classifier supports only "new"
    assert d.change == "cannot_compare" and d.conflict


def test_a_reask_without_a_conflict_changes_nothing():
    d = decide(0.8, 0.85, "worse", "stable")
    assert d.change == "worse" and not any(r.rule.startswith("reask") for r in d.reasons)
    lone = compare(StudyRead(study_id="a"), StudyRead(study_id="b"), ChangePolicy(), change_calls=[said("worse")],
                   findings=["pleural_effusion"], reasks=[said("stable")])[0]
    assert lone.change == "worse" and not any(r.rule.startswith("reask") for r in lone.reasons)


def test_statements_are_read_as_the_tools_own():
    ev = Evidence(tool="cmp", meta={"changes": [
        {"finding": "pleural_effusion", "change": "worse", "text": "Bigger.", "source": "someone else"},
        {"finding": "no_such_thing", "change": "worse", "text": "?"},
        {"finding": "edema", "change": "much worse", "text": "?"}, "not a mapping"]})
    assert [(c.finding, c.change, c.source, c.text) for c in change_calls(ev)] == [
        ("pleural_effusion", "worse", "cmp", "Bigger.")]
    assert [(c.finding, c.change) for c in change_calls(ev, finding="edema")] == [("edema", "cannot_compare")]
    assert change_calls(Evidence.failure("cmp", "down")) == []
