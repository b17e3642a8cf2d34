"""The change rule: from a prior and a current study's evidence to one ``ChangeDecision`` per finding.

Pure and policy-driven, like the reconciler. Which sources may support which change:
- a score reader (an image source that writes no report, e.g. the classifier) read each film alone, so its
  two scores say whether the finding was called there, not how large it is: new, resolved or persistent,
  never worse or improved;
- a source that ``compares_priors`` states the change itself (``ChangeCall``): any change;
- a report writer that cannot compare: a difference between its two reads is at most a flagged possible
  change; it never makes a change on its own.
Nothing is called changed unless a comparing source supports it; sources that cannot be reconciled make it
``cannot_compare`` with a conflict. A different view (AP vs PA) or patient position lowers confidence.

The re-ask rule: a conflict between a comparing source and the others is asked again of that source (a fresh
prompt about that one finding). An answer the others support settles it (``reask_agrees``: that change, no
conflict); the same answer again (``reask_maintained``), another one they do not support, or none on that
finding (``reask_unresolved``) leaves it ``cannot_compare``, flagged for review.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.comparing.policy import ChangePolicy
from knowledge.evidence import Decision, Evidence, Status
from knowledge.vocabulary import FINDING_SET, known_finding

Change = Literal["new", "worse", "stable", "improved", "resolved", "cannot_compare"]
CHANGES: tuple[str, ...] = ("new", "worse", "stable", "improved", "resolved", "cannot_compare")
ChangeRule = Literal[
    "score_new", "score_resolved", "score_persistent", "score_absent_both",  # a score reader's two reads
    "score_too_close", "score_uncertain", "not_read",  # ... that support nothing
    "stated",  # a comparing source stated the change
    "statement_agrees", "statement_differs",  # a non-comparing report writer's two reads
    "conflict", "unsupported",  # how the sources combined
    "view_differs", "position_differs", "view_unknown",  # the two films themselves
    "decisions_differ",  # the studies' reconciled statuses do not fit the change its sources support
    "reask_agrees", "reask_maintained", "reask_unresolved",  # a comparing source asked again about a conflict
]
# What each reading is compatible with: persistence is neither better nor worse, only "still there".
_PERSISTENT = frozenset({"stable", "worse", "improved"})


class StudyRead(BaseModel):
    """One study as the rule sees it: its id, projection and what the conversation knows about it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    study_id: str
    view: str = "unknown"
    position: str | None = Field(None, description="Patient position (erect, supine) where a header gave it.")
    decisions: list[Decision] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)


class ChangeCall(BaseModel):
    """A comparing source's own statement of change for one finding."""

    finding: str
    change: Change
    source: str
    text: str | None = None

    @field_validator("finding")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_finding(v)


class ChangeReason(BaseModel):
    """One step behind a change decision, as data (the reply words it)."""

    rule: ChangeRule
    source: str | None = None
    before: Status | None = None
    now: Status | None = None
    before_score: float | None = None
    now_score: float | None = None
    threshold: float | None = None
    change: Change | None = None
    detail: str | None = None


class ChangeDecision(BaseModel):
    """The change of one finding between the prior and the current study, with the sources behind it."""

    finding: str
    before: Status | None = Field(None, description="The prior study's reconciled status (None: not decided).")
    now: Status | None = None
    change: Change
    confidence: float = Field(ge=0.0, le=1.0)
    agreeing: list[str] = Field(default_factory=list)
    disagreeing: list[str] = Field(default_factory=list)
    conflict: bool = False
    needs_review: bool = False
    possible_change: bool = Field(False, description="A non-comparing source's two reads differ: for a reader to check.")
    reasons: list[ChangeReason] = Field(default_factory=list)


def _status_of(evidence: Iterable[Evidence], source: str, finding: str) -> Status | None:
    """A source's statement on a finding in one study: present/absent, uncertain when its calls disagree."""
    said = {c.status for e in evidence if e.ok for c in e.calls if c.source == source and c.finding == finding}
    if Status.present in said and Status.absent in said:
        return Status.uncertain
    for st in (Status.present, Status.absent, Status.uncertain):
        if st in said:
            return st
    return None


def _score_of(evidence: Iterable[Evidence], source: str, finding: str) -> tuple[Status, float] | None:
    """A score reader's latest scored call on a finding in one study."""
    found = None
    for e in evidence:
        for c in e.calls if e.ok else ():
            if c.source == source and c.finding == finding and c.score is not None:
                found = (c.status, float(c.score))
    return found


def _score_reading(source: str, finding: str, prior: StudyRead, current: StudyRead,
                   policy: ChangePolicy) -> tuple[frozenset[str] | None, ChangeReason]:
    """What a score reader's two reads support (a set of compatible changes), or None."""
    b, n = _score_of(prior.evidence, source, finding), _score_of(current.evidence, source, finding)
    if b is None or n is None:
        return None, ChangeReason(rule="not_read", source=source, before=b and b[0], now=n and n[0])
    (sb, xb), (sn, xn) = b, n
    base = {"source": source, "before": sb, "now": sn, "before_score": xb, "now_score": xn}
    if sb == Status.present and sn == Status.present:
        return _PERSISTENT, ChangeReason(rule="score_persistent", change="stable", **base)
    if sb == Status.absent and sn == Status.absent:
        return frozenset({"stable"}), ChangeReason(rule="score_absent_both", change="stable", **base)
    if sn == Status.present and sb != Status.present:
        if xn - xb >= policy.min_score_delta:
            return frozenset({"new"}), ChangeReason(rule="score_new", change="new", threshold=policy.min_score_delta, **base)
        return None, ChangeReason(rule="score_too_close", threshold=policy.min_score_delta, **base)
    if sb == Status.present and sn == Status.absent:
        if xb - xn >= policy.min_score_delta:
            return frozenset({"resolved"}), ChangeReason(rule="score_resolved", change="resolved",
                                                         threshold=policy.min_score_delta, **base)
        return None, ChangeReason(rule="score_too_close", threshold=policy.min_score_delta, **base)
    return None, ChangeReason(rule="score_uncertain", **base)


def _statement_set(before: Status | None, now: Status | None) -> frozenset[str] | None:
    if before is None or now is None or Status.uncertain in (before, now):
        return None
    if before == now:
        return _PERSISTENT if now == Status.present else frozenset({"stable"})
    return frozenset({"new"}) if now == Status.present else frozenset({"resolved"})


def _decided(decisions: Sequence[Decision]) -> dict[str, Status]:
    return {d.finding: d.status for d in decisions}


def candidate_findings(prior: StudyRead, current: StudyRead, asked: Sequence[str] = (),
                       change_calls: Sequence[ChangeCall] = ()) -> list[str]:
    """Findings worth a row: asked about, stated as changed, or not absent in either study."""
    out = list(dict.fromkeys(f for f in asked if f in FINDING_SET))
    for d in (*prior.decisions, *current.decisions):
        if d.status != Status.absent and d.finding != "no_finding" and d.finding not in out:
            out.append(d.finding)
    out += [c.finding for c in change_calls if c.finding not in out]
    return out


def compare(prior: StudyRead, current: StudyRead, policy: ChangePolicy | None = None, *,
            score_sources: Iterable[str] = (), statement_sources: Iterable[str] = (),
            change_calls: Sequence[ChangeCall] = (), findings: Sequence[str] | None = None,
            reasks: Sequence[ChangeCall] = ()) -> list[ChangeDecision]:
    """One change decision per finding (``findings``, default ``candidate_findings``).

    ``score_sources``: image sources whose scores are read per film (the classifier); ``statement_sources``:
    report writers that cannot compare (their differences are possible changes only); ``change_calls``:
    statements of sources that ``compares_priors``; ``reasks``: their answers when asked again about one
    finding (``change="cannot_compare"``: the answer said nothing about it), settled by the re-ask rule."""
    policy = policy or ChangePolicy()
    scorers, writers = list(dict.fromkeys(score_sources)), list(dict.fromkeys(statement_sources))
    targets = list(findings) if findings is not None else candidate_findings(prior, current, change_calls=change_calls)
    before_status, now_status = _decided(prior.decisions), _decided(current.decisions)
    films = film_reasons(prior, current)
    film_penalty = policy.view_penalty if any(r.rule in ("view_differs", "position_differs") for r in films) else 0.0
    out = []
    for finding in targets:
        reasons: list[ChangeReason] = []
        supports: dict[str, frozenset[str]] = {}
        for s in scorers:
            compatible, reason = _score_reading(s, finding, prior, current, policy)
            reasons.append(reason)
            if compatible is not None:
                supports[s] = compatible
        stated: dict[str, str] = {}
        for c in change_calls:
            if c.finding == finding:
                stated[c.source] = c.change
                reasons.append(ChangeReason(rule="stated", source=c.source, change=c.change, detail=c.text))
                if c.change != "cannot_compare":
                    supports[c.source] = frozenset({c.change})
        for r in reasks:
            if r.finding == finding:
                _settle(r, stated, supports, reasons)
        common = frozenset.intersection(*supports.values()) if supports else frozenset()
        conflict = bool(supports) and not common
        if not supports:
            change: str = "cannot_compare"
            reasons.append(ChangeReason(rule="unsupported"))
        elif conflict:
            change = "cannot_compare"
            reasons.append(ChangeReason(rule="conflict", detail=", ".join(f"{s}: {'/'.join(sorted(v))}"
                                                                           for s, v in supports.items())))
        else:
            picked = [stated[s] for s in stated if stated[s] in common]
            change = picked[0] if picked else ("stable" if "stable" in common else sorted(common)[0])
        agreeing = [s for s, v in supports.items() if change in v]
        disagreeing = [s for s, v in supports.items() if change not in v] if change != "cannot_compare" else \
            (list(supports) if conflict else [])
        possible = False
        for w in writers:
            wb, wn = _status_of(prior.evidence, w, finding), _status_of(current.evidence, w, finding)
            implied = _statement_set(wb, wn)
            if implied is None:
                continue
            if change in implied:
                agreeing.append(w)
                reasons.append(ChangeReason(rule="statement_agrees", source=w, before=wb, now=wn))
            elif wb != wn or change != "cannot_compare":
                possible = possible or wb != wn
                if change != "cannot_compare":
                    disagreeing.append(w)
                reasons.append(ChangeReason(rule="statement_differs", source=w, before=wb, now=wn,
                                            change=sorted(implied)[0] if len(implied) == 1 else None))
        if change == "cannot_compare":
            confidence = 0.0
        else:
            n_support = sum(1 for s in agreeing if s in supports)
            confidence = policy.single_source_confidence + policy.agree_bonus * max(0, n_support - 1)
            confidence -= film_penalty + (policy.possible_change_penalty if possible else 0.0)
            confidence = policy.clip(confidence)
        changed = change not in ("stable", "cannot_compare")
        before, now = before_status.get(finding), now_status.get(finding)
        fits = _statement_set(before, now)  # None while either decision is missing or uncertain
        unfit = change != "cannot_compare" and ((fits is not None and change not in fits)
                                                or (before == Status.present and now == Status.uncertain))
        if unfit:  # e.g. the classifier still calls it, but the study's decision is now uncertain
            reasons.append(ChangeReason(rule="decisions_differ", before=before, now=now, change=change))
        out.append(ChangeDecision(
            finding=finding, before=before, now=now, change=change,
            confidence=confidence, agreeing=agreeing, disagreeing=disagreeing, conflict=conflict,
            needs_review=conflict or possible or unfit or (changed and film_penalty > 0), possible_change=possible,
            reasons=[*reasons, *films]))
    order = {c: i for i, c in enumerate(("new", "worse", "resolved", "improved", "cannot_compare", "stable"))}
    return sorted(out, key=lambda d: (order[d.change], not d.needs_review))


def _settle(answer: ChangeCall, stated: dict[str, str], supports: dict[str, frozenset[str]],
            reasons: list[ChangeReason]) -> None:
    """The re-ask rule for one answer (in place): it replaces its source's statement only when the other
    sources support it; otherwise the first statement stands and the conflict stays."""
    first = stated.get(answer.source)
    others = [v for s, v in supports.items() if s != answer.source]
    if first is None or not others:
        return  # asked about nothing it had stated, or nothing to disagree with: no conflict to settle
    agreed = frozenset.intersection(*others)
    if first in agreed:
        return  # no conflict: a re-ask only settles one
    base = {"source": answer.source, "change": answer.change, "detail": answer.text}
    if answer.change in agreed:
        stated[answer.source], supports[answer.source] = answer.change, frozenset({answer.change})
        reasons.append(ChangeReason(rule="reask_agrees", **base))
    elif answer.change == first:
        reasons.append(ChangeReason(rule="reask_maintained", **base))
    else:
        reasons.append(ChangeReason(rule="reask_unresolved", **base))


def film_reasons(prior: StudyRead, current: StudyRead) -> list[ChangeReason]:
    """What the two films themselves do to a comparison: a different projection or position."""
    out = []
    known = {"PA", "AP", "LATERAL"}
    if prior.view in known and current.view in known:
        if prior.view != current.view:
            out.append(ChangeReason(rule="view_differs", detail=f"{prior.view} before, {current.view} now"))
    else:
        out.append(ChangeReason(rule="view_unknown", detail=f"{prior.view} before, {current.view} now"))
    if prior.position and current.position and prior.position != current.position:
        out.append(ChangeReason(rule="position_differs", detail=f"{prior.position} before, {current.position} now"))
    return out
