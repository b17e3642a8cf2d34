"""The change rule, one outcome at a time, and the wrong-patient guard."""

from __future__ import annotations

import pytest

from agents.comparing.decide import ChangeCall, StudyRead, compare
from agents.comparing.patient import same_patient
from agents.comparing.policy import ChangePolicy
from knowledge.evidence import Decision, Evidence, FindingCall, Status

P, A, U = Status.present, Status.absent, Status.uncertain


def clf(scores: dict[str, float]) -> Evidence:
    calls = [FindingCall(finding=f, status=P if s >= 0.6 else A if s <= 0.4 else U, score=s, score_kind="op_norm",
                         source="classifier") for f, s in scores.items()]
    return Evidence(tool="classifier", calls=calls)


def vlm(statuses: dict[str, Status]) -> Evidence:
    return Evidence(tool="vlm", calls=[FindingCall(finding=f, status=s, source="vlm", task="report")
                                       for f, s in statuses.items()])


def read(sid: str, *evidence: Evidence, view: str = "PA", decided: dict[str, Status] | None = None) -> StudyRead:
    decisions = [Decision(finding=f, status=s, confidence=0.7) for f, s in (decided or {}).items()]
    return StudyRead(study_id=sid, view=view, evidence=list(evidence), decisions=decisions)


def one(prior: StudyRead, current: StudyRead, finding: str = "pleural_effusion", **kw):
    kw.setdefault("score_sources", ["classifier"])
    kw.setdefault("statement_sources", ["vlm"])
    (d,) = compare(prior, current, ChangePolicy(), findings=[finding], **kw)
    return d


def test_new_when_the_classifier_calls_it_only_now():
    d = one(read("a", clf({"pleural_effusion": 0.2}), decided={"pleural_effusion": A}),
            read("b", clf({"pleural_effusion": 0.8}), decided={"pleural_effusion": P}))
    assert (d.change, d.before, d.now, d.agreeing, d.conflict) == ("new", A, P, ["classifier"], False)
    assert d.confidence == pytest.approx(0.6)
    assert any(r.rule == "score_new" and r.before_score == 0.2 and r.now_score == 0.8 for r in d.reasons)


def test_resolved_when_the_classifier_called_it_only_before():
    d = one(read("a", clf({"pleural_effusion": 0.85})), read("b", clf({"pleural_effusion": 0.1})))
    assert d.change == "resolved" and d.agreeing == ["classifier"]


def test_a_higher_score_on_both_films_is_stable_never_worse():
    d = one(read("a", clf({"pleural_effusion": 0.65})), read("b", clf({"pleural_effusion": 0.98})))
    assert d.change == "stable"
    assert any(r.rule == "score_persistent" for r in d.reasons)


def test_worse_needs_a_source_that_compares_priors():
    prior, current = read("a", clf({"pleural_effusion": 0.7})), read("b", clf({"pleural_effusion": 0.9}))
    d = one(prior, current, change_calls=[ChangeCall(finding="pleural_effusion", change="worse", source="cmp")])
    assert (d.change, sorted(d.agreeing)) == ("worse", ["classifier", "cmp"])
    assert d.confidence == pytest.approx(0.75)  # two sources agree


def test_improved_stated_by_a_comparing_source():
    d = one(read("a", clf({"pleural_effusion": 0.9})), read("b", clf({"pleural_effusion": 0.7})),
            change_calls=[ChangeCall(finding="pleural_effusion", change="improved", source="cmp")])
    assert d.change == "improved"


def test_a_comparing_source_against_the_classifier_is_a_conflict_not_a_change():
    d = one(read("a", clf({"pleural_effusion": 0.1})), read("b", clf({"pleural_effusion": 0.1})),
            change_calls=[ChangeCall(finding="pleural_effusion", change="worse", source="cmp")])
    assert (d.change, d.conflict, d.needs_review, d.confidence) == ("cannot_compare", True, True, 0.0)
    assert sorted(d.disagreeing) == ["classifier", "cmp"]


def test_uncertain_before_and_present_now_is_new():
    assert one(read("a", clf({"pleural_effusion": 0.5})), read("b", clf({"pleural_effusion": 0.8}))).change == "new"


def test_uncertain_now_cannot_compare():
    d = one(read("a", clf({"pleural_effusion": 0.8})), read("b", clf({"pleural_effusion": 0.5})))
    assert d.change == "cannot_compare" and any(r.rule == "score_uncertain" for r in d.reasons)


def test_score_jitter_below_the_policy_delta_is_no_change():
    policy = ChangePolicy(min_score_delta=0.5)
    (d,) = compare(read("a", clf({"pleural_effusion": 0.35})), read("b", clf({"pleural_effusion": 0.65})), policy,
                   score_sources=["classifier"], findings=["pleural_effusion"])
    assert d.change == "cannot_compare"


def test_a_report_writer_alone_is_at_most_a_possible_change():
    d = one(read("a", vlm({"pleural_effusion": A})), read("b", vlm({"pleural_effusion": P})))
    assert (d.change, d.possible_change, d.needs_review, d.agreeing) == ("cannot_compare", True, True, [])
    assert any(r.rule == "statement_differs" and r.source == "vlm" for r in d.reasons)


def test_a_report_writer_that_contradicts_the_classifier_flags_review():
    d = one(read("a", clf({"pleural_effusion": 0.8}), vlm({"pleural_effusion": A})),
            read("b", clf({"pleural_effusion": 0.8}), vlm({"pleural_effusion": P})))
    assert (d.change, d.possible_change, d.needs_review, d.disagreeing) == ("stable", True, True, ["vlm"])
    assert d.confidence == pytest.approx(0.5)


def test_a_report_writer_that_agrees_is_listed_without_adding_confidence():
    d = one(read("a", clf({"pleural_effusion": 0.1}), vlm({"pleural_effusion": A})),
            read("b", clf({"pleural_effusion": 0.9}), vlm({"pleural_effusion": P})))
    assert (d.change, d.agreeing, d.confidence, d.needs_review) == ("new", ["classifier", "vlm"], 0.6, False)


def test_ap_versus_pa_lowers_confidence_and_is_said():
    d = one(read("a", clf({"pleural_effusion": 0.1}), view="PA"), read("b", clf({"pleural_effusion": 0.9}), view="AP"))
    assert d.change == "new" and d.confidence == pytest.approx(0.4) and d.needs_review
    assert any(r.rule == "view_differs" and r.detail == "PA before, AP now" for r in d.reasons)


def test_a_change_that_does_not_fit_the_studies_decisions_needs_review():
    d = one(read("a", clf({"mass": 0.72}), decided={"mass": P}), read("b", clf({"mass": 0.78}), decided={"mass": U}),
            finding="mass")
    assert (d.change, d.needs_review) == ("stable", True)
    assert any(r.rule == "decisions_differ" for r in d.reasons)
    fits = one(read("a", clf({"mass": 0.72}), decided={"mass": P}), read("b", clf({"mass": 0.78}), decided={"mass": P}),
               finding="mass")
    assert not fits.needs_review


def test_no_evidence_claims_no_change():
    d = one(read("a"), read("b"))
    assert d.change == "cannot_compare" and any(r.rule == "unsupported" for r in d.reasons)


def test_default_rows_are_the_findings_not_absent_on_either_study():
    out = compare(read("a", decided={"cardiomegaly": P, "pneumothorax": A, "no_finding": A}),
                  read("b", decided={"pneumothorax": A, "pleural_effusion": U}))
    assert [d.finding for d in out] == ["cardiomegaly", "pleural_effusion"]


def test_a_change_call_for_an_unknown_finding_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown finding id 'lung_thing'"):
        ChangeCall(finding="lung_thing", change="new", source="cmp")


@pytest.mark.parametrize(("prior", "current", "verdict"), [
    ({"patient_sex": "M", "patient_age": "60-69"}, {"patient_sex": "F", "patient_age": "60-69"}, "mismatch"),
    ({"patient_sex": "M", "patient_age": "20-29"}, {"patient_sex": "M", "patient_age": "60-69"}, "mismatch"),
    ({"patient_sex": "M", "patient_age": "50-59"}, {"patient_sex": "M", "patient_age": "60-69"}, "consistent"),
    ({}, {}, "unconfirmed"),
    ({"patient_sex": "F"}, {}, "unconfirmed"),
])
def test_wrong_patient_guard(prior, current, verdict):
    assert same_patient(prior, current).verdict == verdict


def test_compares_priors_is_declared_never_assumed():
    from langchain_core.tools import tool

    from tools.base import capabilities
    from tools.registry import BUILTINS, LangChainToolAdapter
    from tools.vlm.adapters.radvlm import RadVLMAdapter

    class Plain:
        name, intents = "plain", frozenset({"report"})

    class Comparing(Plain):
        compares_priors = True

    @tool
    def reader(text: str) -> str:
        """Reads two films."""
        return text

    reader.metadata = {"cxr_compares_priors": True}
    assert not capabilities(Plain()).compares_priors and capabilities(Comparing()).compares_priors
    assert capabilities(LangChainToolAdapter(reader)).compares_priors
    assert not any(c.compares_priors for _, c in BUILTINS.values())
    assert RadVLMAdapter.compares_priors is False
