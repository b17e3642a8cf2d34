"""Reconciler: the policy's promises, one test each, plus a seeded random sweep of invariants."""

from __future__ import annotations

import random

import pytest

from agents.reconciling.decide import Policy, conflicts, decide, resolve
from knowledge.evidence import Box, Evidence, FindingCall, Status
from knowledge.vocabulary import FINDINGS

P, A, U = Status.present, Status.absent, Status.uncertain
LEFT_BASE = Box(x1=0.55, y1=0.6, x2=0.9, y2=0.92)
RIGHT_APEX = Box(x1=0.05, y1=0.05, x2=0.3, y2=0.3)


def clf(finding: str, score: float, box: Box | None = None) -> FindingCall:
    status = P if score >= 0.6 else A if score <= 0.4 else U
    return FindingCall(finding=finding, status=status, score=score, score_kind="op_norm", source="classifier", box=box)


def vlm(finding: str, status: Status, text: str = "", box: Box | None = None) -> FindingCall:
    return FindingCall(finding=finding, status=status, source="vlm", text=text or None, box=box)


def ret(finding: str, fraction: float) -> FindingCall:
    status = P if fraction >= 0.5 else A
    return FindingCall(finding=finding, status=status, score=fraction, score_kind="neighbor_fraction", source="retrieval")


def one(calls, policy=None):
    ds = decide(calls, policy or Policy())
    assert len(ds) == 1, ds
    return ds[0]


def by_finding(decisions):
    return {d.finding: d for d in decisions}


def test_agreement_raises_confidence():
    alone = one([clf("pleural_effusion", 0.71)])
    both = one([clf("pleural_effusion", 0.71), vlm("pleural_effusion", P, "small left effusion")])
    assert alone.status is both.status is P
    assert both.confidence > alone.confidence
    assert both.agreeing == ["classifier", "vlm"] and not both.conflict
    assert "0.71" in both.rationale and "small left effusion" in both.rationale and "agree" in both.rationale
    neg = one([clf("pneumothorax", 0.1), vlm("pneumothorax", A, "no pneumothorax")])
    assert neg.status is A and neg.confidence > one([clf("pneumothorax", 0.1)]).confidence


def test_disagreement_is_a_flagged_conflict():
    d = one([clf("pleural_effusion", 0.3), vlm("pleural_effusion", P, "small left effusion")])
    assert d.conflict and d.needs_review
    assert d.status is U
    assert "classifier" in d.rationale.lower() and "vlm" in d.rationale.lower()
    assert set(d.agreeing) | set(d.disagreeing) == {"classifier", "vlm"}
    assert conflicts([d]) == [d]


def test_uncertain_statement_lowers_confidence():
    sure = one([clf("atelectasis", 0.75)])
    hedged = one([clf("atelectasis", 0.75), vlm("atelectasis", U, "possible basilar atelectasis")])
    assert hedged.status is P and not hedged.conflict
    assert hedged.confidence < sure.confidence
    assert "possible basilar atelectasis" in hedged.rationale
    only_unc = one([vlm("atelectasis", U, "possible atelectasis")])
    assert only_unc.status is U and only_unc.confidence <= Policy().uncertain_cap
    assert not only_unc.needs_review and not only_unc.conflict  # low confidence is shown, not a conflict


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_retrieval_never_flips_an_image_decision(fraction):
    for calls in (
        [clf("edema", 0.8), vlm("edema", P, "mild edema")],
        [clf("edema", 0.2), vlm("edema", A, "no edema")],
        [clf("edema", 0.3), vlm("edema", P, "edema")],
    ):
        base = one(calls)
        with_prior = one([*calls, ret("edema", fraction)])
        assert with_prior.status is base.status
        assert with_prior.conflict == base.conflict
        assert abs(with_prior.confidence - base.confidence) <= Policy().prior_shift + 1e-9
        assert "retrieval" not in with_prior.agreeing + with_prior.disagreeing


def test_retrieval_prior_shifts_confidence_in_its_direction():
    calls = [clf("edema", 0.8)]
    assert one([*calls, ret("edema", 0.9)]).confidence > one(calls).confidence > one([*calls, ret("edema", 0.1)]).confidence


def test_retrieval_alone_is_never_present():
    d = one([ret("pneumonia", 1.0)])
    assert d.status is U and d.confidence <= Policy().prior_only_confidence
    assert not d.agreeing and "prior" in d.rationale.lower()
    assert conflicts([d]) == []


def test_high_confidence_positive_never_dropped():
    # one strong positive vs one absent: flagged conflict, never 'absent'
    d = one([clf("pneumothorax", 0.92), vlm("pneumothorax", A, "no pneumothorax")])
    assert d.status is not A and d.conflict and d.needs_review
    assert "not dropped" in d.rationale
    # even outvoted by two absent image sources
    custom_absent = FindingCall(finding="pneumothorax", status=A, score=0.05, score_kind="op_norm", source="ptx_net")
    d2 = one([clf("pneumothorax", 0.92), vlm("pneumothorax", A, "no pneumothorax"), custom_absent])
    assert d2.status is not A and d2.conflict


def test_no_finding_conflicts_with_a_present_finding():
    ds = by_finding(decide([vlm("no_finding", P, "No acute cardiopulmonary process."), clf("cardiomegaly", 0.85)]))
    card = ds["cardiomegaly"]
    assert card.conflict and card.needs_review and card.status is U  # 'normal' implies absent: a real disagreement
    assert "normal" in card.rationale
    assert [d.finding for d in conflicts(list(ds.values()))] == ["cardiomegaly"]
    # 'no finding' cannot stand, but the disputed finding carries the one review flag (and the re-ask)
    nf = ds["no_finding"]
    assert nf.status is U and not nf.needs_review and "carries the review flag" in nf.rationale
    # an undisputed present finding beside 'no finding' (here the VLM contradicts itself) is flagged there
    ds = by_finding(decide([vlm("no_finding", P, "No acute process."), vlm("nodule", P, "8 mm nodule")]))
    assert ds["nodule"].status is P and not ds["nodule"].conflict
    assert ds["no_finding"].status is U and ds["no_finding"].conflict and ds["no_finding"].needs_review


def test_no_finding_stands_when_nothing_else_is_present():
    ds = by_finding(decide([vlm("no_finding", P, "Normal chest."), clf("cardiomegaly", 0.2),
                            vlm("support_devices", P, "ET tube in place")]))
    assert ds["no_finding"].status is P and not ds["no_finding"].conflict
    assert ds["cardiomegaly"].status is A and not ds["support_devices"].conflict


def test_custom_image_source_votes_and_retrieval_like_sources_do_not():
    custom = FindingCall(finding="nodule", status=P, score=0.8, score_kind="op_norm", source="nodule_net")
    d = one([custom, vlm("nodule", P, "8 mm nodule")])
    assert d.status is P and "nodule_net" in d.agreeing
    d_conf = one([custom, clf("nodule", 0.2)])
    assert d_conf.conflict
    # a custom tool declared as a prior source gives a prior only
    pol = Policy(prior_sources=frozenset({"retrieval", "atlas"}))
    atlas = FindingCall(finding="nodule", status=P, score=0.9, source="atlas")
    assert one([atlas], pol).status is U
    # custom weights apply
    low = Policy(default_weight=0.3)
    assert one([custom], low).confidence < one([custom]).confidence


def test_same_source_contradiction_is_uncertain_not_a_conflict():
    d = one([vlm("pleural_effusion", P, "small effusion"), vlm("pleural_effusion", A, "no effusion")])
    assert d.status is U and not d.conflict


def test_box_prefers_vlm_then_classifier():
    d = one([clf("nodule", 0.8, box=RIGHT_APEX), vlm("nodule", P, "nodule", box=LEFT_BASE)])
    assert d.box == LEFT_BASE
    assert one([clf("nodule", 0.8, box=RIGHT_APEX), vlm("nodule", P, "nodule")]).box == RIGHT_APEX


def test_policy_from_settings():
    from cxr_agent.settings import Settings

    pol = Policy.from_settings(Settings(classifier_margin=0.2))
    assert pol.classifier_margin == 0.2
    assert Policy.from_settings(Settings(), box_iou_min=0.3).box_iou_min == 0.3


# ---- resolve(): each branch of the rule ---------------------------------------------------


def _conflict(vlm_status=P, score=0.35, vlm_box=None):
    d = one([clf("pleural_effusion", score, box=LEFT_BASE), vlm("pleural_effusion", vlm_status, "left effusion", box=vlm_box)])
    assert d.conflict
    return d


def _answer(status, box=None, ok=True):
    if not ok:
        return Evidence.failure("vlm", "timed out after 300 s")
    return Evidence(tool="vlm", calls=[vlm("pleural_effusion", status, "answer to re-ask", box=box)], answer="...")


def test_resolve_agreement_after_reask():
    r = resolve(_conflict(), _answer(A), classifier_box=LEFT_BASE, policy=Policy())
    assert r.status is A and not r.conflict and not r.needs_review
    assert r.confidence == Policy().resolved_confidence
    assert "re-ask" in r.verification and "agreeing" in r.rationale


def test_resolve_strong_classifier_positive_vs_vlm():
    d = one([clf("pneumothorax", 0.95), vlm("pneumothorax", A, "no pneumothorax")])
    # the VLM maintains 'absent': a strong positive is never dropped -> unresolved, flagged
    kept = resolve(d, Evidence(tool="vlm", calls=[vlm("pneumothorax", A, "no")]), classifier_box=None)
    assert kept.status is U and kept.conflict and kept.needs_review
    # the VLM now sees it: agreement
    agreed = resolve(d, Evidence(tool="vlm", calls=[vlm("pneumothorax", P, "yes, right apical")]), classifier_box=None)
    assert agreed.status is P and not agreed.conflict and agreed.agreeing == ["classifier", "vlm"]


def test_resolve_vlm_withdrawal_is_recorded():
    d = one([clf("pneumothorax", 0.2), vlm("pneumothorax", P, "large right pneumothorax")])
    r = resolve(d, Evidence(tool="vlm", calls=[vlm("pneumothorax", A, "no")]), classifier_box=None)
    assert r.status is A and "withdraw" in r.rationale and "withdraw" in r.verification


def test_resolve_maintained_with_overlapping_box():
    r = resolve(_conflict(), _answer(P, box=Box(x1=0.6, y1=0.65, x2=0.88, y2=0.9)), classifier_box=LEFT_BASE, policy=Policy())
    assert r.status is P and not r.conflict
    assert r.confidence == Policy().resolved_confidence
    assert "IoU" in r.verification and "IoU" in r.rationale
    assert r.box == Box(x1=0.6, y1=0.65, x2=0.88, y2=0.9)


def test_resolve_maintained_without_overlap_is_unresolved():
    d = _conflict()
    r = resolve(d, _answer(P, box=RIGHT_APEX), classifier_box=LEFT_BASE, policy=Policy())
    assert r.status is U and r.conflict and r.needs_review
    assert r.confidence <= Policy().unresolved_cap
    assert "does not overlap" in r.verification and "review" in r.rationale
    no_box = resolve(d, _answer(P), classifier_box=LEFT_BASE, policy=Policy())
    assert no_box.status is U and no_box.conflict and "no box" in no_box.verification


def test_resolve_failed_or_uncertain_reask_is_unresolved():
    d = _conflict()
    for ev in (_answer(U), _answer(P, ok=False), Evidence(tool="vlm", calls=[])):
        r = resolve(d, ev, classifier_box=LEFT_BASE, policy=Policy())
        assert r.status is U and r.conflict and r.needs_review and r.verification


# ---- invariants over random inputs ---------------------------------------------------------


def _random_call(rng: random.Random) -> FindingCall:
    finding = rng.choice(FINDINGS[:8])
    source = rng.choice(["vlm", "classifier", "retrieval", "custom_a", "custom_b"])
    status = rng.choice([P, A, U])
    score = None if source == "vlm" and rng.random() < 0.8 else rng.random()
    kind = {"classifier": "op_norm", "retrieval": "neighbor_fraction"}.get(source, rng.choice([None, "probability"]))
    box = None
    if rng.random() < 0.3:
        x, y = rng.random() * 0.5, rng.random() * 0.5
        box = Box(x1=x, y1=y, x2=x + rng.random() * 0.5, y2=y + rng.random() * 0.5)
    return FindingCall(finding=finding, status=status, score=score, score_kind=kind, source=source,
                       text=rng.choice([None, "some sentence"]), box=box)


def test_random_sweep_invariants():
    rng = random.Random(1234)
    pol = Policy()
    for _ in range(400):
        calls = [_random_call(rng) for _ in range(rng.randint(1, 9))]
        ds = decide(calls, pol)
        assert len({d.finding for d in ds}) == len(ds)
        for d in ds:
            assert 0.0 <= d.confidence <= 1.0
            assert d.rationale
            image_calls = [c for c in d.calls if c.source != "retrieval"]
            if not image_calls:
                assert d.status is not P  # retrieval alone never makes a finding present
            if d.status is A:
                assert not any(c.status is P and c.source == "classifier" and (c.score or 0) >= 0.7 for c in d.calls)
            if d.status is U and d.finding != "no_finding":
                assert d.confidence <= pol.uncertain_cap
            for src in d.agreeing + d.disagreeing:
                assert src != "retrieval"
            assert d.needs_review == d.conflict  # review means image sources disagree, nothing else
        for d in conflicts(ds, pol):
            ans = Evidence(tool="vlm", calls=[_random_call(rng).model_copy(update={"finding": d.finding, "source": "vlm"})])
            r = resolve(d, ans, classifier_box=rng.choice([None, LEFT_BASE]), policy=pol)
            assert 0.0 <= r.confidence <= 1.0 and r.verification and r.rationale
            assert r.conflict == r.needs_review or (not r.conflict)


def test_empty_input_and_vocabulary_order():
    assert decide([]) == []
    ds = decide([clf("pneumothorax", 0.9), clf("cardiomegaly", 0.9), clf("atelectasis", 0.1)])
    assert [d.finding for d in ds] == ["cardiomegaly", "atelectasis", "pneumothorax"]


def test_policy_is_a_hashable_picklable_value():
    import pickle

    pol = Policy(source_weights={"vlm": 0.9, "classifier": 1.0})
    assert pickle.loads(pickle.dumps(pol)) == pol and hash(pol) == hash(Policy(source_weights={"classifier": 1, "vlm": 0.9}))
    assert pol.weight("vlm") == 0.9 and pol.weight("my_tool") == pol.default_weight
    down = Policy(source_weights={"vlm": 0.5, "classifier": 1.0})
    calls = [vlm("edema", P, "edema")]
    assert one(calls, down).confidence < one(calls).confidence


def test_rationale_cites_sources_and_scores():
    d = one([clf("pleural_effusion", 0.71), vlm("pleural_effusion", P, "small left effusion"), ret("pleural_effusion", 0.4)])
    assert d.rationale.startswith("Pleural effusion:")
    for needle in ("classifier", "0.71", "above threshold", "VLM", "small left effusion", "40% of similar prior reports"):
        assert needle.lower() in d.rationale.lower(), needle
    assert "\n" not in d.rationale
    assert {c.source for c in d.calls} == {"classifier", "vlm", "retrieval"}


def test_silence_in_a_full_report_is_a_weak_absent_only_when_asked():
    calls = [clf("cardiomegaly", 0.85), vlm("pleural_effusion", P, "small effusion"), clf("pleural_effusion", 0.7)]
    default = by_finding(decide(calls))
    assert default["cardiomegaly"].status is P and not default["cardiomegaly"].conflict  # silence is no vote
    strict = by_finding(decide(calls, report_sources={"vlm"}))
    card = strict["cardiomegaly"]
    assert card.conflict and card.status is U and "does not mention" in card.rationale
    assert [d.finding for d in conflicts(list(strict.values()))] == ["cardiomegaly"]
    assert not strict["pleural_effusion"].conflict
    # the re-ask settles it: the VLM now sees it
    r = resolve(card, Evidence(tool="vlm", calls=[vlm("cardiomegaly", P, "the heart is enlarged")]), classifier_box=None)
    assert r.status is P and not r.conflict


def test_absent_decision_carries_no_box_and_uncertain_mentions_the_prior():
    d = one([clf("nodule", 0.1, box=RIGHT_APEX), vlm("nodule", A, "no nodule")])
    assert d.status is A and d.box is None
    u = one([vlm("nodule", U, "possible nodule", box=RIGHT_APEX), ret("nodule", 0.8)])
    assert u.status is U and u.box == RIGHT_APEX and "80% of similar prior reports" in u.rationale


# ---- the review flag: "a person must look at this" ------------------------------------------


@pytest.mark.parametrize("score", [0.42, 0.47, 0.55, 0.58])
def test_uncertain_band_alone_is_uncertain_and_not_flagged(score):
    d = one([clf("edema", score)])
    assert d.status is U and d.confidence <= Policy().uncertain_cap
    assert not d.conflict and not d.needs_review and conflicts([d]) == []
    assert f"{score:.2f}" in d.rationale and "near threshold" in d.rationale


@pytest.mark.parametrize("score", [0.42, 0.58])
def test_uncertain_band_with_silent_full_report_is_a_low_confidence_absent(score):
    calls = [vlm("cardiomegaly", P, "the heart is enlarged"), clf("cardiomegaly", 0.8), clf("edema", score)]
    # without report_sources a report's silence is no vote: the classifier's own uncertainty stands
    assert by_finding(decide(calls))["edema"].status is U
    d = by_finding(decide(calls, report_sources={"vlm"}))["edema"]
    assert d.status is A and d.confidence < Policy().review_below
    assert not d.conflict and not d.needs_review and d.box is None
    assert "does not mention" in d.rationale and f"{score:.2f}" in d.rationale and "low confidence" in d.rationale


def test_uncertain_band_against_a_normal_study_is_a_low_confidence_absent():
    ds = by_finding(decide([vlm("no_finding", P, "No acute cardiopulmonary process."), clf("edema", 0.52)]))
    assert ds["edema"].status is A and not ds["edema"].needs_review
    assert ds["edema"].confidence < Policy().review_below and "normal" in ds["edema"].rationale
    assert ds["no_finding"].status is P and not ds["no_finding"].needs_review  # an uncertain call does not dispute it
    # an explicit VLM negative against the band: absent, not a conflict
    d = one([vlm("edema", A, "no edema"), clf("edema", 0.55)])
    assert d.status is A and not d.needs_review


def test_low_confidence_single_source_positive_is_not_flagged():
    weak = FindingCall(finding="nodule", status=P, score=0.55, score_kind="probability", source="nodule_net")
    d = one([weak])
    assert d.status is P and d.confidence < Policy().review_below and not d.needs_review


def test_unresolved_high_confidence_conflict_stays_flagged():
    for answer in (A, U):
        d = one([clf("pneumothorax", 0.85), vlm("pneumothorax", A, "no pneumothorax")])
        assert d.needs_review
        r = resolve(d, Evidence(tool="vlm", calls=[vlm("pneumothorax", answer, "answer")]), classifier_box=None)
        assert r.status is U and r.conflict and r.needs_review  # never dropped, never silently settled


def test_resolve_moderate_positive_denied_by_the_vlm_is_a_low_confidence_absent():
    pol = Policy()
    for calls, rs in (([clf("edema", 0.64), vlm("edema", A, "no edema")], ()),
                      ([clf("edema", 0.64), vlm("cardiomegaly", P, "enlarged heart")], {"vlm"})):
        d = by_finding(decide(calls, pol, report_sources=rs))["edema"]
        assert d.conflict and d.needs_review  # before the re-ask: a disagreement
        r = resolve(d, Evidence(tool="vlm", calls=[vlm("edema", A, "no, the lungs are clear")]), classifier_box=None)
        assert r.status is A and not r.conflict and not r.needs_review
        assert r.confidence == pol.overruled_confidence < pol.resolved_confidence
        assert "0.64" in r.rationale and "not dropped" in r.rationale and r.box is None
        assert r.disagreeing == ["classifier"] and "0.70" in r.verification
    # an uncertain answer leaves it disputed
    d = one([clf("edema", 0.64), vlm("edema", A, "no edema")])
    r = resolve(d, Evidence(tool="vlm", calls=[vlm("edema", U, "cannot tell")]), classifier_box=None)
    assert r.status is U and r.needs_review


# ---- structured reasons and typed implied calls ----------------------------------


def test_implied_calls_are_typed_not_text_markers():
    from knowledge.evidence import FindingCall as FC

    ds = by_finding(decide([vlm("no_finding", P, "No acute cardiopulmonary process."), clf("cardiomegaly", 0.8)]))
    implied = [c for c in ds["cardiomegaly"].calls if c.source == "vlm"]
    assert [(c.status, c.implied, c.text) for c in implied] == [(A, "normal_study", "No acute cardiopulmonary process.")]
    silent = by_finding(decide([vlm("pleural_effusion", P, "effusion"), clf("cardiomegaly", 0.8)],
                               report_sources={"vlm"}))["cardiomegaly"]
    s = next(c for c in silent.calls if c.source == "vlm")
    assert s.implied == "report_silence" and s.text is None and s.task == "report"
    # a v0.1 checkpoint stored the markers as text: they load into the typed field
    old = FC.model_validate({"finding": "edema", "status": "absent", "source": "vlm",
                             "text": "implied by a no-finding statement: Normal chest."})
    assert (old.implied, old.text) == ("normal_study", "Normal chest.")
    old = FC.model_validate({"finding": "edema", "status": "absent", "source": "vlm",
                             "text": "not mentioned in its full report"})
    assert (old.implied, old.text) == ("report_silence", None)
    assert FC(finding="edema", status=A, source="vlm", text="no edema").implied is None


def test_decisions_carry_structured_reasons_worded_by_the_responder():
    from agents.replying.phrases import rationale

    d = one([clf("pleural_effusion", 0.85), vlm("pleural_effusion", A, "no effusion")])
    (r,) = d.reasons
    assert r.rule == "conflict" and r.status is d.status and r.kept_high_confidence
    assert [(c.source, c.score) for c in r.present] == [("classifier", 0.85)]
    assert [(c.source, c.text) for c in r.absent] == [("vlm", "no effusion")]
    assert d.rationale == rationale(d.finding, d.reasons)

    agree = one([clf("edema", 0.8), vlm("edema", P, "edema"), ret("edema", 0.3)])
    assert [r.rule for r in agree.reasons] == ["agree", "prior_shift"] and agree.reasons[1].prior.score == 0.3
    ds = by_finding(decide([vlm("no_finding", P), clf("edema", 0.9), vlm("edema", A)]))
    assert ds["no_finding"].reasons[-1].rule == "no_finding_contradicted"
    assert ds["no_finding"].reasons[-1].findings == ["edema"]


def test_reask_reasons_hold_the_numbers():
    d = one([clf("atelectasis", 0.3, box=LEFT_BASE), vlm("atelectasis", P, "basilar atelectasis")])
    assert d.conflict
    ans = Evidence(tool="vlm", calls=[vlm("atelectasis", P, "yes", box=Box(x1=0.5, y1=0.55, x2=0.9, y2=0.9))])
    r = resolve(d, ans, classifier_box=LEFT_BASE)
    last = r.reasons[-1]
    assert last.rule == "reask_box_overlap" and last.threshold == Policy().box_iou_min
    assert last.iou == pytest.approx(ans.calls[0].box.iou(LEFT_BASE)) and last.answer.text == "yes"
    assert [x.rule for x in r.reasons] == ["conflict", "reask_box_overlap"]
    failed = resolve(d, Evidence.failure("vlm", "timeout"), classifier_box=LEFT_BASE)
    assert (failed.reasons[-1].rule, failed.reasons[-1].cause, failed.reasons[-1].error) == \
        ("reask_unresolved", "tool_failed", "timeout")
    assert "timeout" in failed.rationale and "timeout" in failed.verification


# ---- the VLM's abnormality classification -----------------------------------------

CHEXPERT_13 = ["atelectasis", "cardiomegaly", "consolidation", "edema", "enlarged_cardiomediastinum", "fracture",
               "lung_lesion", "lung_opacity", "pleural_effusion", "pleural_other", "pneumonia", "pneumothorax",
               "support_devices"]


def classification(*listed: str) -> list[FindingCall]:
    """What the VLM emits for one classification answer: every label, listed -> present, else absent."""
    calls = [FindingCall(finding=f, status=P if f in listed else A, source="vlm", task="classification")
             for f in CHEXPERT_13]
    return calls + [FindingCall(finding="no_finding", status=A if listed else P, source="vlm", task="classification")]


def test_a_listed_label_is_a_moderate_positive():
    pol = Policy()
    listed = by_finding(decide(classification("pleural_effusion")))["pleural_effusion"]
    stated = one([vlm("pleural_effusion", P, "small left effusion")])
    assert listed.status is P and listed.reasons[0].rule == "single_source"
    assert listed.confidence == pytest.approx(pol.classification_present) and listed.confidence < stated.confidence
    assert "lists it among the abnormalities" in listed.rationale
    # a listed label is never a "high-confidence positive": the classifier's denial makes it a conflict
    # that a re-ask can settle either way, not one that stays open whatever the VLM answers
    d = by_finding(decide([*classification("pneumothorax"), clf("pneumothorax", 0.2)]))["pneumothorax"]
    assert d.conflict and d.status is U and not d.reasons[0].kept_high_confidence
    r = resolve(d, Evidence(tool="vlm", calls=[vlm("pneumothorax", A, "No.")]))
    assert r.status is A and not r.conflict and r.reasons[-1].withdrawn


def test_a_listed_label_beside_only_uncertain_evidence_stays_uncertain():
    """Rule 9 for a hedge-prone list: the classifier at its threshold and a listed label do not make a present."""
    d = by_finding(decide([*classification("atelectasis"), clf("atelectasis", 0.52)]))["atelectasis"]
    assert d.status is U and not d.conflict and d.confidence <= Policy().uncertain_cap
    assert d.reasons[0].rule == "listed_only" and "may be a hedge" in d.rationale
    # the report's own words, or a classifier above the band, still make it present
    stated = by_finding(decide([*classification("atelectasis"), vlm("atelectasis", P, "basilar atelectasis"),
                                clf("atelectasis", 0.52)]))["atelectasis"]
    assert stated.status is P
    assert by_finding(decide([*classification("atelectasis"), clf("atelectasis", 0.75)]))["atelectasis"].status is P


def test_an_unlisted_label_is_an_explicit_absence_stronger_than_silence():
    pol = Policy()
    calls = [*classification("cardiomegaly"), clf("pleural_effusion", 0.55)]  # classifier near threshold
    with_cls = by_finding(decide(calls, pol, report_sources={"vlm"}))["pleural_effusion"]
    silent = by_finding(decide([vlm("cardiomegaly", P, "cardiomegaly"), clf("pleural_effusion", 0.55)], pol,
                               report_sources={"vlm"}))["pleural_effusion"]
    assert with_cls.status is A and silent.status is A
    vlm_calls = [c for c in with_cls.calls if c.source == "vlm"]
    assert [(c.task, c.implied) for c in vlm_calls] == [("classification", None)]  # no silence implied
    assert [c.implied for c in silent.calls if c.source == "vlm"] == ["report_silence"]
    assert with_cls.confidence > silent.confidence
    assert "leaves it out of its abnormality list" in with_cls.rationale
    # against a high-confidence classifier positive the explicit absence is a conflict to re-ask
    d = by_finding(decide([*classification(), clf("pleural_effusion", 0.9)], pol))["pleural_effusion"]
    assert d.conflict and d.reasons[0].kept_high_confidence


def test_report_silence_is_only_the_fallback_for_labels_classification_does_not_cover():
    calls = [*classification("cardiomegaly"), vlm("cardiomegaly", P, "enlarged heart"),
             clf("nodule", 0.85), clf("pleural_effusion", 0.85)]
    ds = by_finding(decide(calls, report_sources={"vlm"}))
    nodule_vlm = [c for c in ds["nodule"].calls if c.source == "vlm"]  # nodule is not a CheXpert-13 label
    eff_vlm = [c for c in ds["pleural_effusion"].calls if c.source == "vlm"]
    assert [c.implied for c in nodule_vlm] == ["report_silence"]
    assert [(c.task, c.status, c.implied) for c in eff_vlm] == [("classification", A, None)]
    assert ds["nodule"].conflict and ds["pleural_effusion"].conflict
    # the report's own statement and the classification agree: one vote, the report's stronger words
    assert ds["cardiomegaly"].status is P and "enlarged heart" in ds["cardiomegaly"].rationale
    # "no abnormalities" -> no_finding present, and an uncovered finding is implied absent by it
    normal = by_finding(decide([*classification(), clf("emphysema", 0.9)]))
    implied = [c for c in normal["emphysema"].calls if c.source == "vlm"]
    assert [c.implied for c in implied] == ["normal_study"] and normal["emphysema"].conflict


def test_statement_sources_and_box_preference_come_from_the_policy_not_tool_names():
    """A custom report writer gets the built-in VLM's standing when the graph names it (by capability)."""
    from agents.reconciling.policy import is_high_confidence

    mine = FindingCall(finding="edema", status=P, source="my_vlm", box=RIGHT_APEX)
    other = FindingCall(finding="edema", status=P, source="classifier", score=0.9, score_kind="op_norm", box=LEFT_BASE)
    assert not is_high_confidence(mine, Policy())
    pol = Policy(statement_sources={"my_vlm"}, box_preference=("my_vlm", "classifier"))
    assert is_high_confidence(mine, pol) and hash(pol)
    assert one([other, mine]).box == LEFT_BASE  # default preference: the classifier before an unknown tool
    assert one([other, mine], pol).box == RIGHT_APEX
