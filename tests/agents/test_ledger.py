"""The study's evidence ledger: recorded once per tool and ask, bounded, reused only when complete,
and decisions reconciled from the whole of it (the same ledger always gives the same decisions)."""

from __future__ import annotations

import random

import pytest

from agents.memory.checkpointers import serializer
from agents.memory.ledger import (
    MAX_ENTRIES,
    Ask,
    StudyLedger,
    from_legacy,
    key_for,
    study_decisions,
    words_hash,
)
from agents.reconciling.policy import Policy
from agents.reconciling.settle import resolve
from agents.reconciling.study import reconcile_study, signature, unasked
from knowledge.evidence import Decision, Evidence, FindingCall, Status
from knowledge.vocabulary import FINDINGS

POLICY = Policy(prior_sources=frozenset({"retrieval"}), statement_sources=frozenset({"vlm"}))
STUDY = "s" * 64


def _ev(tool: str, calls: list[tuple[str, Status, float | None]], *, report: str | None = None,
        answer: str | None = None, kind: str = "report", **kw) -> Evidence:
    task = {"vlm": "report" if kind == "report" else None}.get(tool)
    return Evidence(tool=tool, report=report, answer=answer, meta={"ask": {"kind": kind}, "model": f"{tool}-m"},
                    calls=[FindingCall(finding=f, status=s, score=sc, score_kind="op_norm" if sc is not None else None,
                                       source=tool, task=task, text=f"{f} {s.value}" if tool == "vlm" else None)
                           for f, s, sc in calls], **kw)


def _key(tool: str, ask: Ask, ev: Evidence | None = None):
    return key_for(STUDY, tool, ask, ev, runner="r1")


def test_a_newer_entry_for_the_same_tool_and_ask_replaces_the_older_and_failures_are_not_recorded():
    first = _ev("classifier", [("cardiomegaly", Status.present, 0.8)])
    second = _ev("classifier", [("cardiomegaly", Status.absent, 0.2)])
    ledger = StudyLedger(study_id=STUDY).record([(_key("classifier", Ask(kind="image"), first), first, None)])
    ledger = ledger.record([(_key("classifier", Ask(kind="image"), second), second, None),
                            (_key("vlm", Ask(kind="report")), Evidence.failure("vlm", "timed out"), None)])
    assert [e.evidence for e in ledger.entries] == [second]
    assert ledger.entries[0].key.model_id == "classifier-m" and ledger.turns == 2
    assert ledger.lookup("classifier", Ask(kind="image"), "r1").evidence == second
    assert ledger.lookup("classifier", Ask(kind="image"), "other-settings") is None
    assert ledger.lookup("vlm", Ask(kind="report")) is None


def test_only_complete_evidence_is_reused():
    cut = _ev("vlm", [("cardiomegaly", Status.present, None)], report="There is cardiomeg", truncated=True)
    ledger = StudyLedger(study_id=STUDY).record([(_key("vlm", Ask(kind="report"), cut), cut, None)])
    assert ledger.entries and ledger.lookup("vlm", Ask(kind="report")) is None


def test_the_ledger_is_bounded():
    ledger = StudyLedger(study_id=STUDY)
    for i in range(MAX_ENTRIES + 20):
        ev = _ev("vlm", [], answer="no", kind="finding_question")
        ledger = ledger.record([(_key("vlm", Ask(kind="finding_question", words=words_hash(f"q{i}"))), ev, None)])
    assert len(ledger.entries) == MAX_ENTRIES


def test_a_truncated_reports_silence_is_not_read_as_absence():
    clf = _ev("classifier", [("nodule", Status.present, 0.8)], kind="image")
    whole = _ev("vlm", [("cardiomegaly", Status.present, None)], report="Cardiomegaly.")
    cut = whole.model_copy(update={"truncated": True})
    nodule = {d.finding: d for d in reconcile_study([whole, clf], [], POLICY)}["nodule"]
    assert nodule.conflict and any(c.implied == "report_silence" for c in nodule.calls)
    nodule = {d.finding: d for d in reconcile_study([cut, clf], [], POLICY)}["nodule"]
    assert not nodule.conflict and nodule.status is Status.present
    assert not any(c.implied == "report_silence" for c in nodule.calls)


def test_a_source_contradicting_itself_across_turns_is_flagged_with_both_answers():
    report = _ev("vlm", [("cardiomegaly", Status.present, None)], report="There is cardiomegaly.")
    asked = Evidence(tool="vlm", answer="No, the heart size is normal.", meta={"ask": {"kind": "finding_question"}},
                     calls=[FindingCall(finding="cardiomegaly", status=Status.absent, source="vlm")])
    clf = _ev("classifier", [("cardiomegaly", Status.present, 0.62)], kind="image")
    d = {d.finding: d for d in reconcile_study([report, clf, asked], [], POLICY)}["cardiomegaly"]
    assert d.needs_review and d.conflict and d.status is Status.uncertain
    vote = d.reasons[0]
    assert vote.rule == "conflict"
    assert [c.text for c in vote.present if c.source == "vlm"] == ["cardiomegaly present"]
    assert [c.text for c in vote.absent] == ["No, the heart size is normal."]
    assert "cardiomegaly present" in d.rationale and "No, the heart size is normal." in d.rationale
    # one output saying both (a report and its own list) is today's collapse, not a flag
    both = _ev("vlm", [("cardiomegaly", Status.present, None), ("cardiomegaly", Status.absent, None)],
               report="x")
    assert not {d.finding: d for d in reconcile_study([both], [], POLICY)}["cardiomegaly"].needs_review


def test_a_reask_settles_only_the_conflict_it_was_asked_about():
    report = _ev("vlm", [("cardiomegaly", Status.present, None)], report="Cardiomegaly.")
    clf = _ev("classifier", [("cardiomegaly", Status.present, 0.7), ("nodule", Status.present, 0.62)], kind="image")
    first = {d.finding: d for d in reconcile_study([report, clf], [], POLICY)}
    assert [d.finding for d in unasked(list(first.values()), POLICY)] == ["nodule"]
    answer = Evidence(tool="vlm", meta={"verification": "nodule"},
                      calls=[FindingCall(finding="nodule", status=Status.absent, source="vlm", task="verification")])
    sig = signature(first["nodule"], POLICY)
    settled = {d.finding: d for d in reconcile_study([report, clf], [(answer, sig)], POLICY)}
    assert settled["nodule"] == resolve(first["nodule"], answer, policy=POLICY)
    assert not settled["nodule"].needs_review and unasked(list(settled.values()), POLICY) == []
    assert settled["cardiomegaly"] == first["cardiomegaly"]
    # a later direct answer makes a new conflict: the old re-ask does not settle it
    asked = Evidence(tool="vlm", answer="Yes.", meta={"ask": {"kind": "finding_question"}},
                     calls=[FindingCall(finding="nodule", status=Status.present, source="vlm")])
    again = {d.finding: d for d in reconcile_study([report, clf, asked], [(answer, sig)], POLICY)}
    assert again["nodule"].status is Status.present and not again["nodule"].needs_review
    assert not any(r.rule.startswith("reask_") for r in again["nodule"].reasons)
    assert again["cardiomegaly"] == first["cardiomegaly"]


def _random_ledger(rng: random.Random) -> list[Evidence]:
    findings = [f for f in FINDINGS if f != "no_finding"]
    entries: list[Evidence] = []
    for tool, kind in (("vlm", "report"), ("classifier", "image"), ("retrieval", "report"), ("vlm", "finding_question"),
                       ("vlm", "locate"), ("custom", "image")):
        if rng.random() < 0.3:
            continue
        calls = []
        for f in rng.sample(findings, rng.randint(0, 8)):
            status = rng.choice(list(Status))
            score = None if tool == "vlm" else round(rng.random(), 3)
            calls.append((f, status, score))
        if tool == "vlm" and kind == "report" and rng.random() < 0.3:
            calls.append(("no_finding", Status.present, None))
        entries.append(_ev(tool, calls, report="r" if kind == "report" and tool == "vlm" else None,
                           answer="yes" if kind != "report" else None, kind=kind,
                           truncated=tool == "vlm" and kind == "report" and rng.random() < 0.2))
    return entries


def test_reconciling_the_same_ledger_twice_gives_the_same_decisions():
    """Seeded random ledgers (many shapes: silence, self-contradiction, truncation, priors): the same
    entries, and the same entries after a checkpoint round trip, always give the same decisions."""
    rng = random.Random(20261207)
    serde = serializer()
    for _ in range(300):
        entries = _random_ledger(rng)
        once = reconcile_study(entries, [], POLICY)
        ledger = StudyLedger(study_id=STUDY).record(
            [(_key(e.tool, Ask(kind=str(e.meta["ask"]["kind"])), e), e, None) for e in entries])
        loaded = serde.loads_typed(serde.dumps_typed(ledger))
        assert isinstance(loaded, StudyLedger)
        assert reconcile_study(entries, [], POLICY) == once
        assert reconcile_study(loaded.evidence(), [], POLICY) == reconcile_study(ledger.evidence(), [], POLICY)


def test_new_evidence_on_one_finding_changes_no_other_decision():
    """Seeded random ledgers: a direct answer about one finding leaves every other finding's decision
    as it was ('no finding' aside, which is decided from the others)."""
    rng = random.Random(7)
    for _ in range(300):
        entries = _random_ledger(rng)
        finding = rng.choice([f for f in FINDINGS if f != "no_finding"])
        answer = Evidence(tool="vlm", answer="yes", meta={"ask": {"kind": "finding_question"}},
                          calls=[FindingCall(finding=finding, status=rng.choice(list(Status)), source="vlm")])
        before = {d.finding: d for d in reconcile_study(entries, [], POLICY)}
        after = {d.finding: d for d in reconcile_study([*entries, answer], [], POLICY)}
        for f, d in after.items():
            if f not in (finding, "no_finding"):
                assert before[f] == d, f


def test_study_decisions_reads_the_ledger_and_old_checkpoints():
    d = Decision(finding="cardiomegaly", status=Status.present, confidence=0.8)
    ledger = StudyLedger(study_id=STUDY)
    assert study_decisions({"ledger": ledger, "decisions": [d]}) == [d]
    assert study_decisions({"ledger": ledger, "decisions": [d]}, study_id="other") == []
    old = {"last_result": {"study_id": STUDY, "intent": "report", "decisions": [d],
                           "evidence": [_ev("classifier", [("cardiomegaly", Status.present, 0.8)])]}}
    assert study_decisions(old) == [d] and study_decisions(old, study_id="other") == []
    migrated = from_legacy(old["last_result"])
    assert migrated is not None and [e.key.tool for e in migrated.entries] == ["classifier"]


@pytest.mark.parametrize("text", ["Is there cardiomegaly?", "is there CARDIOMEGALY? "])
def test_words_are_kept_as_a_digest_only(text):
    assert words_hash(text) == words_hash("Is there cardiomegaly?") and "cardio" not in str(words_hash(text))
