"""Reconcile every source's FindingCalls into one Decision per finding (pure: no I/O, no models).

The policy, in order (each step is one function below; every number lives in ``Policy``):

1. **Sources.** Image sources are every source not in ``Policy.prior_sources`` (default
   {"retrieval"}): the VLM, the classifier and any custom image tool. Prior sources never vote.
2. **Strength of one call** (how strongly it supports its own status, in [0, 1]):
   classifier/op-norm score ``s`` -> ``s`` for present, ``1 - s`` for absent; a probability
   likewise; a text statement (VLM report, no score) -> ``Policy.text_present`` /
   ``text_absent``; an uncertain statement -> ``Policy.uncertain_strength``; a label of a VLM's
   abnormality classification (``task="classification"``: one call per label, listed -> present) ->
   ``classification_present`` (moderate: RadVLM was trained with uncertain labels as positive, so a
   listed label may be a hedge; never high-confidence) / ``classification_absent`` (an explicit
   absence, stronger than report silence). Times the source weight.
3. **One vote per source**: several calls of one source on one finding collapse to one (mixed
   present/absent -> that source is uncertain).
4. **Implicit negatives**: an image source that states ``no_finding`` present and says nothing
   about a finding another image source calls present or uncertain is counted as calling it
   absent (weakly; the call carries ``implied="normal_study"``), so "VLM: normal study" vs
   "classifier: cardiomegaly 0.8" is a conflict, not a pass. Likewise, opt-in, for a source that wrote a full report
   (``decide(..., report_sources={"vlm"})``): a report's silence is weak evidence of absence
   (``implied="report_silence"``).
5. **Vote.** Only present (and uncertain) -> present; only absent (and uncertain) -> absent;
   agreement of several sources raises confidence (noisy-OR of their strengths); each uncertain
   source lowers it (``uncertain_penalty``); only uncertain -> uncertain (confidence capped).
   Present vs absent between image sources -> ``conflict=True, needs_review=True``; the status is
   the clearly dominant side only when it has >= 2 sources and twice the weighted support, else
   uncertain; and never 'absent' while a high-confidence present call exists.
6. **Retrieval prior**: the fraction ``f`` of similar prior reports that mention the finding shifts
   confidence by at most ``prior_shift * (2f - 1)`` towards 'present' - never the status. A finding
   seen only in retrieval is reported 'uncertain' with low confidence, never 'present'.
7. **no_finding** present cannot stand beside another present (or conflicted) finding: it turns
   uncertain; it carries a review flag only when that finding is undisputed (a disputed finding
   carries its own flag and re-ask).
8. **The review flag means "a person must look at this"**: ``needs_review`` is exactly ``conflict``
   - image sources say present vs absent and (after ``resolve``) the targeted re-ask did not settle
   it; a high-confidence positive is settled only when the sources come to agree (the VLM confirms
   it, or withdraws its own) or two localisations overlap, never by another source's denial. Low
   confidence alone is not flagged: it is shown as the status, the confidence and the rationale.
   Otherwise a flag on most findings of most studies (as before: 23-50% of pairs, ~100% of cases in
   eval/simulate.py) tells a clinician nothing.
9. **Weak evidence** (the classifier's own uncertain band, 0.5 +/- margin op-norm): alone, or
   beside a hedged VLM mention, the decision is 'uncertain' with confidence <= ``uncertain_cap``,
   not flagged - the image evidence genuinely does not decide, and calling it 'absent' would
   invent certainty no source has. Beside an image source that denies it (an explicit 'no X', a
   'normal study', or silence in a full report passed as ``report_sources``) it is 'absent' with
   low confidence (< ``review_below``; the rationale quotes the score and says so): the only
   source that leans at all leans negative, a score at the operating point is not a positive
   call, and a radiologist reading the reply needs the few disputed findings, not every
   near-threshold score promoted to 'uncertain'. Nothing is hidden: the call, its score and
   the low confidence stay in the Decision. Likewise a label only a classification list names,
   beside nothing but uncertain evidence, is 'uncertain' (rule ``listed_only``): a possible hedge
   next to a score at the operating point is not a positive call either (measured: ARCHITECTURE.md).

Measured behaviour against single sources (eval/simulate.py) is in ARCHITECTURE.md. The words of
every rationale are agents/replying/phrases.py's: this module records which rule applied to which calls as
typed ``Reason`` records (knowledge.evidence) and fills ``Decision.rationale`` from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agents.reconciling.memo import DECISIONS
from agents.reconciling.policy import Policy, clip, is_high_confidence, one_per_source, strength
from agents.reconciling.settle import resolve
from agents.replying import phrases as wording
from agents.replying.phrases import describe_call
from knowledge.evidence import Box, Decision, FindingCall, Reason, Status
from knowledge.vocabulary import FINDINGS

__all__ = ["Policy", "conflicts", "decide", "describe_call", "is_high_confidence", "resolve", "strength"]

# Findings a "no finding" statement does not deny (CheXpert convention: devices are not pathology).
_NOT_DENIED_BY_NO_FINDING = frozenset({"no_finding", "support_devices"})
_ORDER = {f: i for i, f in enumerate(FINDINGS)}


def _implied_absents(calls: list[FindingCall], policy: Policy,
                     report_sources: frozenset[str] = frozenset()) -> list[FindingCall]:
    """Absent calls implied by an image source's 'no finding' statement, or by its silence in a
    full report (see module docstring, 4)."""
    normal_sources = {
        c.source for c in calls
        if c.finding == "no_finding" and c.status is Status.present and policy.is_image_source(c.source)
    }
    silent_sources = {s for s in report_sources if policy.is_image_source(s)} - normal_sources
    if not normal_sources and not silent_sources:
        return []
    said: dict[str, set[str]] = {}
    for c in calls:
        said.setdefault(c.source, set()).add(c.finding)
    # findings another image source calls present OR uncertain: the implied absent answers both (against
    # a present call it is a conflict, against an uncertain-band call it tips the balance to a
    # low-confidence absent; see module docstring, 5)
    raised = {
        c.finding for c in calls
        if c.status in (Status.present, Status.uncertain) and policy.is_image_source(c.source)
    }
    implied = []
    for src in sorted(normal_sources):
        nf = next(c for c in calls if c.source == src and c.finding == "no_finding" and c.status is Status.present)
        for f in sorted(raised - said.get(src, set()) - _NOT_DENIED_BY_NO_FINDING, key=_ORDER.get):
            implied.append(FindingCall(finding=f, status=Status.absent, source=src, text=nf.text,
                                       implied="normal_study", task=nf.task))
    for src in sorted(silent_sources):
        for f in sorted(raised - said.get(src, set()) - {"no_finding"}, key=_ORDER.get):
            implied.append(FindingCall(finding=f, status=Status.absent, source=src, implied="report_silence",
                                       task="report"))
    return implied


def _noisy_or(strengths: list[float]) -> float:
    p = 1.0
    for s in strengths:
        p *= 1.0 - clip(s)
    return 1.0 - p


def _best_box(calls: Iterable[FindingCall], policy: Policy, prefer_status: Status | None = None) -> Box | None:
    """The box of the first source in ``policy.box_preference`` (the VLM's, else the classifier's heatmap
    box, by default), else any image tool's."""
    cs = [c for c in calls if c.box is not None and (prefer_status is None or c.status is prefer_status)]
    for src in policy.box_preference:
        for c in cs:
            if c.source == src:
                return c.box
    return cs[0].box if cs else None


def _decide_one(finding: str, calls: list[FindingCall], policy: Policy) -> Decision:
    image = [c for c in calls if policy.is_image_source(c.source)]
    priors = [c for c in calls if not policy.is_image_source(c.source)]
    votes = one_per_source(image, policy)

    prior_f: float | None = None
    prior_call: FindingCall | None = None
    if priors:
        fr = [c.score for c in priors if c.score is not None and 0.0 <= c.score <= 1.0]
        if fr:
            prior_f = sum(fr) / len(fr)
        else:
            st = priors[0].status
            prior_f = 1.0 if st is Status.present else 0.0 if st is Status.absent else 0.5
        prior_call = max(priors, key=lambda c: c.score or 0.0)

    if not votes:
        conf = policy.prior_only_confidence * clip(prior_f if prior_f is not None else 0.0)
        reasons = [Reason(rule="prior_only", status=Status.uncertain, prior=prior_call)]
        return Decision(
            finding=finding, status=Status.uncertain, confidence=round(clip(conf), 4),
            agreeing=[], disagreeing=[], conflict=False, needs_review=False,
            rationale=wording.rationale(finding, reasons, policy.labels), reasons=reasons, calls=list(calls), box=None,
        )

    pres = {s: c for s, c in votes.items() if c.status is Status.present}
    absn = {s: c for s, c in votes.items() if c.status is Status.absent}
    unc = {s: c for s, c in votes.items() if c.status is Status.uncertain}
    w_str = {s: clip(policy.weight(s) * strength(c, policy)) for s, c in votes.items()}
    high = [c for c in pres.values() if is_high_confidence(c, policy)]
    penalty = (1.0 - policy.uncertain_penalty) ** len(unc)
    said = {"present": list(pres.values()), "absent": list(absn.values()), "uncertain": list(unc.values())}

    conflict = bool(pres and absn)
    if conflict:
        sp = sum(w_str[s] for s in pres)
        sa = sum(w_str[s] for s in absn)
        if len(pres) >= 2 and sp >= 2 * sa:
            status, agree, disagree = Status.present, pres, absn
            conf = min(policy.review_below, _noisy_or([w_str[s] for s in pres]) - sa / 2) * penalty
        elif len(absn) >= 2 and sa >= 2 * sp and not high:
            status, agree, disagree = Status.absent, absn, pres
            conf = min(policy.review_below, _noisy_or([w_str[s] for s in absn]) - sp / 2) * penalty
        else:
            status, agree, disagree = Status.uncertain, {}, {}
            conf = min(policy.uncertain_cap, 0.5 * penalty)
        vote = Reason(rule="conflict", status=status, **said,
                      kept_high_confidence=bool(high) and status is not Status.present)
        agreeing = sorted(agree) if agree else []
        disagreeing = sorted(disagree) if disagree else []
        if status is Status.uncertain:  # no side wins: list the sources by what they said
            agreeing, disagreeing = sorted(pres), sorted(absn)
    elif pres and unc and all(c.task == "classification" for c in pres.values()):
        # only a classification list names it (a listed label may be a hedge) and the rest is uncertain:
        # the image evidence does not decide (module docstring, 9)
        status = Status.uncertain
        conf = min(policy.uncertain_cap, sum(w_str.values()) / len(w_str)) * penalty
        vote = Reason(rule="listed_only", status=status, **said, low_confidence=True)
        agreeing, disagreeing = sorted(pres), []
    elif pres or absn:
        side = pres or absn
        status = Status.present if pres else Status.absent
        conf = _noisy_or([w_str[s] for s in side]) * penalty
        rule = "agree" if len(side) >= 2 else "one_definite" if unc else "single_source"
        vote = Reason(rule=rule, status=status, **said, low_confidence=conf < policy.review_below)
        agreeing, disagreeing = sorted(side), []
    else:
        status = Status.uncertain
        conf = min(policy.uncertain_cap, sum(w_str.values()) / len(w_str)) * penalty
        vote = Reason(rule="uncertain_only", status=status, **said, low_confidence=True)
        agreeing, disagreeing = sorted(unc), []
    reasons = [vote]

    # Retrieval: a small shift of confidence, never of status.
    if prior_f is not None and status is not Status.uncertain:
        shift = policy.prior_shift * (2.0 * prior_f - 1.0)
        conf += shift if status is Status.present else -shift
        reasons.append(Reason(rule="prior_shift", status=status, prior=prior_call))
    elif prior_f is not None:
        reasons.append(Reason(rule="prior_unsettled", status=status, prior=prior_call))
    conf = clip(conf, 0.0, policy.max_confidence)
    if status is Status.uncertain:
        conf = min(conf, policy.uncertain_cap)

    # Review means "a person must look": image sources disagree (present vs absent). Low confidence
    # alone is shown as such (status, confidence, rationale), not flagged (module docstring, 8).
    needs_review = conflict
    return Decision(
        finding=finding, status=status, confidence=round(conf, 4),
        agreeing=agreeing, disagreeing=disagreeing, conflict=conflict, needs_review=needs_review,
        rationale=wording.rationale(finding, reasons, policy.labels), reasons=reasons, calls=list(calls),
        # no box on an 'absent' verdict: a heatmap region of a negative call is not a finding
        box=None if status is Status.absent else (_best_box(image, policy, Status.present)
                                                or _best_box(image, policy)),
    )


def _apply_no_finding(decisions: dict[str, Decision], policy: Policy) -> None:
    """'No finding' present cannot stand beside any other present (or conflicted) finding: it becomes
    uncertain. It is itself a flagged conflict only when a finding is called present without dispute;
    a disputed finding carries its own flag and its own re-ask, and flagging 'no finding' too would
    double-count it (and outlive the re-ask that settles it)."""
    nf = decisions.get("no_finding")
    if nf is None or nf.status is not Status.present:
        return
    others = [d for f, d in decisions.items()
              if f not in _NOT_DENIED_BY_NO_FINDING and (d.status is Status.present or d.conflict)]
    if not others:
        return
    undisputed = any(not d.conflict for d in others)
    reasons = [*nf.reasons, Reason(rule="no_finding_contradicted", status=Status.uncertain,
                                   findings=[d.finding for d in others], undisputed=undisputed)]
    decisions["no_finding"] = nf.model_copy(update={
        "status": Status.uncertain, "conflict": undisputed, "needs_review": undisputed,
        "confidence": min(nf.confidence, policy.uncertain_cap),
        "reasons": reasons, "rationale": wording.rationale("no_finding", reasons, policy.labels),
    })


def decide(calls: list[FindingCall], policy: Policy | None = None, *,
           report_sources: Iterable[str] = (), keys: Mapping[int, tuple] | None = None) -> list[Decision]:
    """One Decision per finding mentioned by any call, in vocabulary order (see module docstring).

    ``report_sources``: image sources that wrote a FULL report this turn (usually {"vlm"} for the
    report intent). A finding such a report does not mention, while another image source calls it
    present or uncertain, counts as a weak absent from it (``Policy.silent_absent_strength``):
    against a present call that is a conflict, so the VLM gets a targeted re-ask instead of the
    classifier's positive passing unexamined; against an uncertain-band call it makes a
    low-confidence 'absent', not flagged (module docstring, 9). ``keys``: ``memo.call_key`` of calls the
    caller has keyed already, by ``id`` of the call (the calls must be alive for the call's duration).
    """
    policy = policy or Policy()
    calls = list(calls) + _implied_absents(list(calls), policy, frozenset(report_sources))
    groups: dict[str, list[FindingCall]] = {}
    for c in calls:
        groups.setdefault(c.finding, []).append(c)
    out: dict[str, Decision] = {}
    for f, cs in groups.items():  # a finding whose calls are unchanged keeps its decision (memo.py)
        key = DECISIONS.key(f, cs, keys)
        d = DECISIONS.get(policy, key)
        if d is None:
            d = _decide_one(f, cs, policy)
            DECISIONS.put(policy, key, d)
        out[f] = d
    _apply_no_finding(out, policy)
    return [out[f] for f in sorted(out, key=lambda f: _ORDER.get(f, len(_ORDER)))]


def conflicts(decisions: list[Decision], policy: Policy | None = None) -> list[Decision]:
    """Decisions worth a targeted VLM re-ask: image sources said present vs absent on a concrete
    finding (not 'no finding' itself, which is settled through the findings it disputes)."""
    policy = policy or Policy()
    out = []
    for d in decisions:
        if not d.conflict or d.finding == "no_finding":
            continue
        statuses = {c.status for c in d.calls if policy.is_image_source(c.source)}
        if {Status.present, Status.absent} <= statuses:
            out.append(d)
    return out
