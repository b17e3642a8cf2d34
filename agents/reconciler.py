"""Reconcile every source's FindingCalls into one Decision per finding (pure: no I/O, no models).

The policy, in order (each step is one function below; every number lives in ``Policy``):

1. **Sources.** Image sources are every source not in ``Policy.prior_sources`` (default
   {"retrieval"}): the VLM, the classifier and any custom image tool. Prior sources never vote.
2. **Strength of one call** (how strongly it supports its own status, in [0, 1]):
   classifier/op-norm score ``s`` -> ``s`` for present, ``1 - s`` for absent; a probability
   likewise; a text statement (VLM report, no score) -> ``Policy.text_present`` /
   ``text_absent``; an uncertain statement -> ``Policy.uncertain_strength``. Times the source weight.
3. **One vote per source**: several calls of one source on one finding collapse to one (mixed
   present/absent -> that source is uncertain).
4. **Implicit negatives**: an image source that states ``no_finding`` present and says nothing
   about a finding another image source calls present or uncertain is counted as calling it
   absent (weakly), so "VLM: normal study" vs "classifier: cardiomegaly 0.8" is a conflict, not a
   pass. Likewise, opt-in, for a source that wrote a full report
   (``decide(..., report_sources={"vlm"})``): a report's silence is weak evidence of absence.
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
   the low confidence stay in the Decision.

Known limits (eval/simulate.py, 92 NIH + 3,832 IU cases, 6 error profiles, seeds 0 and 1; micro F1
after the re-ask): as the graph calls ``decide`` today (no ``report_sources``), with 'uncertain'
counted as negative the policy beats the better single source in default, vlm_strong and reask_weak,
and loses in classifier_strong (0.789 vs 0.798), classifier_noisy_fp (0.448 vs the VLM's 0.468) and
vlm_overcalls (0.466 vs the classifier's 0.515); "both image sources agree" beats it in vlm_strong,
classifier_noisy_fp, vlm_overcalls and reask_weak. Why: without report silence a classifier positive
the VLM never mentions passes as present (noisy classifier), a VLM over-call beside a near-threshold
score passes as present (over-calling VLM), and at ~5% prevalence demanding two agreeing sources
buys more precision than the recall this policy keeps by never dropping a single-source high-
confidence positive - a safety choice, not a tuning error. With ``report_sources={"vlm"}`` for a
full report it beats the better single source in all 6 profiles on both seeds (uncertain as
negative) and "both agree" in 4 of 6 (loses in vlm_overcalls; reask_weak splits, +0.001 / -0.005).
Counted as positive, 'uncertain' mostly marks negatives at this prevalence (the simulated
classifier's band holds ~half of the negatives), so there the VLM alone is often better: 'uncertain'
is a statement of doubt, not a positive call. Rules 8, 9 and resolve's rule D change what is flagged
and whether a negative reads 'uncertain' or 'absent', never what reads 'present': F1 with
'uncertain' as negative equals the previous policy's in every profile; the review flag fell from
23-50% of pairs / ~100% of cases to 1-3% / 13-36% (4% / 51% at most with report silence), and F1
with 'uncertain' as positive rose from ~0.18 to ~0.28 (~0.63 with report silence; default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from knowledge.evidence import Box, Decision, Evidence, FindingCall, Status
from knowledge.vocabulary import FINDINGS, display_name

# Findings a "no finding" statement does not deny (CheXpert convention: devices are not pathology).
_NOT_DENIED_BY_NO_FINDING = frozenset({"no_finding", "support_devices"})
_ORDER = {f: i for i, f in enumerate(FINDINGS)}
_IMPLIED = "implied by a no-finding statement: "
_SILENT = "not mentioned in its full report"
SILENT_REPORT_TEXT = _SILENT  # public: the text of a call implied by a full report's silence


@dataclass(frozen=True)
class Policy:
    """Every number the reconciler uses. Frozen: a policy is a value you can log and compare."""

    # image-source weights (a dict is accepted and stored as sorted pairs: hashable, picklable)
    source_weights: tuple[tuple[str, float], ...] | Mapping[str, float] = (("classifier", 1.0), ("vlm", 1.0))
    default_weight: float = 0.8  # custom image tools
    prior_sources: frozenset[str] = frozenset({"retrieval"})
    # classifier op-norm scores: 0.5 is the calibrated threshold
    classifier_margin: float = 0.1  # |s - 0.5| < margin -> uncertain (the classifier's own band)
    margin_high: float = 0.2  # s >= 0.5 + margin_high -> a high-confidence present call
    # text statements (VLM report, labelled), which carry no score
    text_present: float = 0.75
    text_absent: float = 0.7
    uncertain_strength: float = 0.5
    implicit_absent_strength: float = 0.6  # "no finding" read as absent for an unmentioned finding
    silent_absent_strength: float = 0.55  # a full report's silence on a finding another source calls present
    uncertain_penalty: float = 0.15  # confidence *= (1 - penalty) per uncertain image source
    uncertain_cap: float = 0.5  # max confidence of an 'uncertain' decision
    max_confidence: float = 0.99
    # retrieval prior
    prior_shift: float = 0.05
    prior_only_confidence: float = 0.2  # max confidence of a retrieval-only (uncertain) decision
    # review + verification
    review_below: float = 0.6  # caps a conflict's winning side; below it a one-sided call is worded 'low confidence'
    box_iou_min: float = 0.1  # VLM box vs classifier heatmap box overlap that counts as agreement
    resolved_confidence: float = 0.65
    unresolved_cap: float = 0.5
    overruled_confidence: float = 0.55  # absent after the VLM denies a moderate (not high-confidence) positive twice

    def __post_init__(self) -> None:
        pairs = self.source_weights.items() if isinstance(self.source_weights, Mapping) else self.source_weights
        object.__setattr__(self, "source_weights", tuple(sorted((str(k), float(v)) for k, v in pairs)))
        object.__setattr__(self, "prior_sources", frozenset(self.prior_sources))

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> Policy:
        """Policy from Settings (uses ``classifier_margin``; any ``reconciler_<field>`` setting overrides)."""
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        kw: dict[str, Any] = {}
        if hasattr(settings, "classifier_margin"):
            kw["classifier_margin"] = float(settings.classifier_margin)
        for name in cls.__dataclass_fields__:
            val = getattr(settings, f"reconciler_{name}", None)
            if val is not None:
                kw[name] = val
        kw.update(overrides)
        return cls(**kw)

    def weight(self, source: str) -> float:
        return dict(self.source_weights).get(source, self.default_weight)

    def is_image_source(self, source: str) -> bool:
        return source not in self.prior_sources


# --------------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------------


def _clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def strength(call: FindingCall, policy: Policy) -> float:
    """How strongly ``call`` supports its own status, in [0, 1], before the source weight."""
    if call.status is Status.uncertain:
        return policy.uncertain_strength
    s = call.score
    if s is not None and call.score_kind in (None, "op_norm", "probability") and 0.0 <= s <= 1.0:
        return _clip(s if call.status is Status.present else 1.0 - s)
    if call.text and call.text.startswith(_IMPLIED):
        return policy.implicit_absent_strength
    if call.text == _SILENT:
        return policy.silent_absent_strength
    return policy.text_present if call.status is Status.present else policy.text_absent


def is_high_confidence(call: FindingCall, policy: Policy) -> bool:
    """A present call we must never silently drop: op-norm score >= 0.5 + margin_high, or an
    explicit positive statement (no score) from the VLM or a custom image tool."""
    if call.status is not Status.present or not policy.is_image_source(call.source):
        return False
    if call.score is not None and call.score_kind in (None, "op_norm", "probability"):
        return call.score >= 0.5 + policy.margin_high
    return bool(call.text) or call.source == "vlm"


def describe_call(call: FindingCall) -> str:
    """A short clinician-readable description of one call, naming its source and score/text."""
    src = call.source
    if src == "classifier" or call.score_kind == "op_norm":
        s = call.score
        if s is None:
            return f"{_source_name(src)} ({call.status.value})"
        if call.status is Status.uncertain:
            side = "near threshold, uncertain"
        else:
            side = "above threshold" if s > 0.5 else "below threshold" if s < 0.5 else "at threshold"
        name = "classifier" if src == "classifier" else f"tool '{src}'"
        return f"{name} op-point score {s:.2f} ({side})"
    if src in ("retrieval",) or call.score_kind == "neighbor_fraction":
        if call.score is not None:
            return f"{call.score:.0%} of similar prior reports mention it"
        return "similar prior reports mention it"
    if call.text and call.text.startswith(_IMPLIED):
        base = "the VLM" if src == "vlm" else f"tool '{src}'"
        return f"{base} calls the study normal ({_quote(call.text[len(_IMPLIED):])})"
    if call.text == _SILENT:
        return f"the {'VLM' if src == 'vlm' else repr(src)} report does not mention it"
    quote = _quote(call.text)
    what = {"present": "reports it", "absent": "reports it absent", "uncertain": "is uncertain"}[call.status.value]
    base = "the VLM" if src == "vlm" else f"tool '{src}'"
    if call.score is not None:
        base += f" (score {call.score:.2f})"
    return f"{base} {what}{f' ({quote})' if quote else ''}"


def _source_name(src: str) -> str:
    return {"vlm": "the VLM", "classifier": "the classifier", "retrieval": "retrieval"}.get(src, f"tool '{src}'")


def _quote(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    t = " ".join(text.split())
    if len(t) > limit:
        t = t[: limit - 1].rstrip() + "\u2026"
    return f"'{t}'"


# --------------------------------------------------------------------------------------------
# decide()
# --------------------------------------------------------------------------------------------


def _one_per_source(calls: list[FindingCall], policy: Policy) -> dict[str, FindingCall]:
    """Collapse each source's calls on one finding into one: the strongest if they agree, else an
    uncertain call quoting both (a self-contradicting source is not a confident vote)."""
    by_src: dict[str, list[FindingCall]] = {}
    for c in calls:
        by_src.setdefault(c.source, []).append(c)
    out: dict[str, FindingCall] = {}
    for src, cs in by_src.items():
        statuses = {c.status for c in cs}
        if {Status.present, Status.absent} <= statuses:
            texts = "; ".join(t for t in (c.text for c in cs) if t)
            out[src] = cs[0].model_copy(update={"status": Status.uncertain, "text": texts or None, "score": None})
        elif len(statuses) == 1:
            out[src] = max(cs, key=lambda c: (strength(c, policy), c.box is not None))
        else:  # a definite status plus uncertain mentions: keep the definite, it is what was said
            out[src] = max((c for c in cs if c.status is not Status.uncertain), key=lambda c: strength(c, policy))
    return out


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
            implied.append(FindingCall(finding=f, status=Status.absent, source=src,
                                       text=f"{_IMPLIED}{nf.text or 'no finding'}"))
    for src in sorted(silent_sources):
        for f in sorted(raised - said.get(src, set()) - {"no_finding"}, key=_ORDER.get):
            implied.append(FindingCall(finding=f, status=Status.absent, source=src, text=_SILENT))
    return implied


def _noisy_or(strengths: list[float]) -> float:
    p = 1.0
    for s in strengths:
        p *= 1.0 - _clip(s)
    return 1.0 - p


def _best_box(calls: Iterable[FindingCall], prefer_status: Status | None = None) -> Box | None:
    """The VLM's box, else the classifier's (heatmap) box, else any image tool's."""
    cs = [c for c in calls if c.box is not None and (prefer_status is None or c.status is prefer_status)]
    for src in ("vlm", "classifier"):
        for c in cs:
            if c.source == src:
                return c.box
    return cs[0].box if cs else None


def _join(parts: list[str]) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _decide_one(finding: str, calls: list[FindingCall], policy: Policy) -> Decision:
    image = [c for c in calls if policy.is_image_source(c.source)]
    priors = [c for c in calls if not policy.is_image_source(c.source)]
    votes = _one_per_source(image, policy)
    name = display_name(finding)

    prior_f: float | None = None
    prior_desc = ""
    if priors:
        fr = [c.score for c in priors if c.score is not None and 0.0 <= c.score <= 1.0]
        if fr:
            prior_f = sum(fr) / len(fr)
        else:
            st = priors[0].status
            prior_f = 1.0 if st is Status.present else 0.0 if st is Status.absent else 0.5
        prior_desc = describe_call(max(priors, key=lambda c: c.score or 0.0))

    if not votes:
        conf = policy.prior_only_confidence * _clip(prior_f if prior_f is not None else 0.0)
        return Decision(
            finding=finding, status=Status.uncertain, confidence=round(_clip(conf), 4),
            agreeing=[], disagreeing=[], conflict=False, needs_review=False,
            rationale=f"{name}: no image source assessed it; {prior_desc or 'only prior reports mention it'} "
                      "(a prior only, not evidence from this image).",
            calls=list(calls), box=None,
        )

    pres = {s: c for s, c in votes.items() if c.status is Status.present}
    absn = {s: c for s, c in votes.items() if c.status is Status.absent}
    unc = {s: c for s, c in votes.items() if c.status is Status.uncertain}
    w_str = {s: _clip(policy.weight(s) * strength(c, policy)) for s, c in votes.items()}
    high = [c for c in pres.values() if is_high_confidence(c, policy)]
    penalty = (1.0 - policy.uncertain_penalty) ** len(unc)
    unc_note = f"; {_join([describe_call(c) for c in unc.values()])}" if unc else ""

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
        p_txt = _cap(_join([describe_call(c) for c in pres.values()]))
        a_txt = _join([describe_call(c) for c in absn.values()])
        hi = " (a high-confidence positive: not dropped)" if high and status is not Status.present else ""
        rationale = (f"{p_txt} but {a_txt}{unc_note}: image sources disagree{hi}; "
                     f"reported as {status.value} and flagged for review.")
        agreeing = sorted(agree) if agree else []
        disagreeing = sorted(disagree) if disagree else []
        if status is Status.uncertain:  # no side wins: list the sources by what they said
            agreeing, disagreeing = sorted(pres), sorted(absn)
    elif pres or absn:
        side = pres or absn
        status = Status.present if pres else Status.absent
        conf = _noisy_or([w_str[s] for s in side]) * penalty
        descs = _join([describe_call(c) for c in side.values()])
        if len(side) >= 2:
            rationale = f"{_cap(descs)} agree{unc_note}."
        elif unc:
            rationale = f"Only one image source is definite: {descs}{unc_note}"
            rationale += ("; low confidence: weak evidence only, not a conflict." if conf < policy.review_below
                          else ".")
        else:
            rationale = f"{_cap(descs)}; no other image source commented on it."
        agreeing, disagreeing = sorted(side), []
    else:
        status = Status.uncertain
        conf = min(policy.uncertain_cap, sum(w_str.values()) / len(w_str)) * penalty
        rationale = (f"{_cap(_join([describe_call(c) for c in unc.values()]))}; no image source is definite, so it "
                     "is reported as uncertain (low confidence; no image source contradicts another).")
        agreeing, disagreeing = sorted(unc), []

    # Retrieval: a small shift of confidence, never of status.
    if prior_f is not None and status is not Status.uncertain:
        shift = policy.prior_shift * (2.0 * prior_f - 1.0)
        conf += shift if status is Status.present else -shift
        rationale = rationale.rstrip(".") + f"; {prior_desc} (prior only)."
    elif prior_f is not None:
        rationale = rationale.rstrip(".") + f"; {prior_desc} (a prior only: it does not settle an uncertain call)."
    conf = _clip(conf, 0.0, policy.max_confidence)
    if status is Status.uncertain:
        conf = min(conf, policy.uncertain_cap)

    # Review means "a person must look": image sources disagree (present vs absent). Low confidence
    # alone is shown as such (status, confidence, rationale), not flagged (module docstring, 8).
    needs_review = conflict
    return Decision(
        finding=finding, status=status, confidence=round(conf, 4),
        agreeing=agreeing, disagreeing=disagreeing, conflict=conflict, needs_review=needs_review,
        rationale=f"{name}: {rationale}", calls=list(calls),
        # no box on an 'absent' verdict: a heatmap region of a negative call is not a finding
        box=None if status is Status.absent else (_best_box(image, Status.present) or _best_box(image)),
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
    names = _join([display_name(d.finding).lower() for d in others])
    undisputed = any(not d.conflict for d in others)
    tail = ("flagged for review" if undisputed
            else "the disputed finding carries the review flag" if len(others) == 1
            else "the disputed findings carry the review flag")
    decisions["no_finding"] = nf.model_copy(update={
        "status": Status.uncertain, "conflict": undisputed, "needs_review": undisputed,
        "confidence": min(nf.confidence, policy.uncertain_cap),
        "rationale": f"{nf.rationale.rstrip('.')}; but {names} "
                     f"{'is' if len(others) == 1 else 'are'} also called present or disputed, so 'no finding' "
                     f"cannot stand; {tail}.",
    })


def decide(calls: list[FindingCall], policy: Policy | None = None, *,
           report_sources: Iterable[str] = ()) -> list[Decision]:
    """One Decision per finding mentioned by any call, in vocabulary order (see module docstring).

    ``report_sources``: image sources that wrote a FULL report this turn (usually {"vlm"} for the
    report intent). A finding such a report does not mention, while another image source calls it
    present or uncertain, counts as a weak absent from it (``Policy.silent_absent_strength``):
    against a present call that is a conflict, so the VLM gets a targeted re-ask instead of the
    classifier's positive passing unexamined; against an uncertain-band call it makes a
    low-confidence 'absent', not flagged (module docstring, 9).
    """
    policy = policy or Policy()
    calls = list(calls) + _implied_absents(list(calls), policy, frozenset(report_sources))
    groups: dict[str, list[FindingCall]] = {}
    for c in calls:
        groups.setdefault(c.finding, []).append(c)
    out = {f: _decide_one(f, cs, policy) for f, cs in groups.items()}
    _apply_no_finding(out, policy)
    return [out[f] for f in sorted(out, key=lambda f: _ORDER.get(f, len(_ORDER)))]


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


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


def _position(decision: Decision, source: str, policy: Policy) -> Status | None:
    cs = [c for c in decision.calls if c.source == source and policy.is_image_source(c.source)]
    if not cs:
        return None
    return _one_per_source(cs, policy)[source].status


def _other_side(decision: Decision, policy: Policy, vlm_source: str = "vlm") -> tuple[Status | None, list[str]]:
    """The other image sources' common position (present/absent) and who holds it (None if split)."""
    others = {c.source for c in decision.calls if policy.is_image_source(c.source) and c.source != vlm_source}
    pos = {s: _position(decision, s, policy) for s in sorted(others)}
    definite = {st for st in pos.values() if st in (Status.present, Status.absent)}
    if len(definite) != 1:
        return None, sorted(others)
    st = definite.pop()
    return st, [s for s, v in pos.items() if v is st]


def resolve(decision: Decision, verification: Evidence, *, classifier_box: Box | None = None,
            policy: Policy | None = None) -> Decision:
    """Settle a conflict with the VLM's answer to a targeted yes/no (+ box) question.

    The rule (each branch writes its own rationale and ``verification`` note):

    A. **VLM now agrees with the other image source(s)** (the classifier, usually) ->
       that status, ``conflict=False``, confidence ``policy.resolved_confidence``. A positive the
       VLM withdraws is named in the rationale and the verification note (never dropped silently).
    B. **VLM maintains 'present' and its box overlaps the classifier heatmap box**
       (IoU >= ``policy.box_iou_min``) -> present, ``conflict=False``, confidence
       ``policy.resolved_confidence``, box = the VLM's box: two independent localisations agree.
    D. **VLM, asked directly, denies a positive that is not high-confidence** (every present call
       of the other sources below ``0.5 + margin_high`` op-norm, e.g. classifier 0.64 vs the VLM's
       'no' or its silence) -> absent, ``conflict=False``, confidence ``policy.overruled_confidence``
       (low); the score stays quoted in the rationale. A high-confidence positive the VLM denies
       falls through to C: it is never settled by a denial.
    C. **Anything else** (VLM maintains with no box or no overlap, the answer is uncertain, the
       re-ask failed or did not address the finding) -> unresolved: status uncertain,
       ``conflict=True``, ``needs_review=True``, confidence capped at ``policy.unresolved_cap``.
    """
    policy = policy or Policy()
    name = display_name(decision.finding)
    before = decision.verification + " " if decision.verification else ""
    vcalls = [c for c in verification.calls if c.finding == decision.finding] if verification.ok else []
    vcall = _one_per_source(vcalls, policy).get(vcalls[0].source) if vcalls else None
    vlm_src = vcalls[0].source if vcalls else (verification.tool or "vlm")
    other_status, other_srcs = _other_side(decision, policy, vlm_src)
    others_txt = _join([_source_name(s) for s in other_srcs]) or "the other image sources"
    prior_vlm = _position(decision, vlm_src, policy)
    calls = list(decision.calls) + vcalls

    def unresolved(why: str) -> Decision:
        return decision.model_copy(update={
            "status": Status.uncertain, "conflict": True, "needs_review": True,
            "confidence": round(min(decision.confidence, policy.unresolved_cap), 4),
            "verification": f"{before}Targeted re-ask: {why}; conflict unresolved.",
            "rationale": f"{name}: image sources still disagree after a targeted re-ask ({why}); "
                         f"reported as uncertain and flagged for review.",
            "calls": calls,
        })

    if vcall is None:
        reason = verification.error if not verification.ok else "the VLM's answer did not address this finding"
        return unresolved(f"no usable answer ({reason})" if not verification.ok else reason)

    answer = describe_call(vcall)
    # A. agreement after re-ask
    if other_status is not None and vcall.status is other_status:
        withdrawn = other_status is Status.absent and prior_vlm is Status.present
        box = (vcall.box or classifier_box or decision.box) if other_status is Status.present else None
        note = ", withdrawing its earlier positive statement" if withdrawn else ""
        return decision.model_copy(update={
            "status": other_status, "conflict": False, "needs_review": False,
            "confidence": policy.resolved_confidence,
            "agreeing": sorted({*other_srcs, vlm_src}), "disagreeing": [],
            "verification": f"{before}Targeted re-ask: {answer}{note}, now agreeing with {others_txt}.",
            "rationale": f"{name}: on a targeted re-ask {answer}{note}, agreeing with {others_txt}; "
                         f"resolved as {other_status.value} (moderate confidence).",
            "calls": calls, "box": box,
        })
    # D. (checked before B/C) the VLM, asked directly, denies a positive that is NOT high-confidence
    maintains = prior_vlm is not None and vcall.status is prior_vlm
    strong = [c for c in decision.calls if c.source != vlm_src and is_high_confidence(c, policy)]
    if other_status is Status.present and vcall.status is Status.absent and not strong:
        pos = _join([describe_call(c) for c in _one_per_source(
            [c for c in decision.calls if c.source in other_srcs], policy).values()])
        return decision.model_copy(update={
            "status": Status.absent, "conflict": False, "needs_review": False,
            "confidence": policy.overruled_confidence,
            "agreeing": [vlm_src], "disagreeing": list(other_srcs),
            "verification": f"{before}Targeted re-ask: {answer}; {pos} is only moderately positive "
                            f"(below the high-confidence line {0.5 + policy.margin_high:.2f}).",
            "rationale": f"{name}: {pos}, but the VLM, asked directly, {answer.removeprefix('the VLM ')}; a moderate "
                         "positive outweighed by the VLM's direct answer and its earlier read: reported absent with "
                         "low confidence (the score is shown, not dropped).",
            "calls": calls, "box": None,
        })
    # B. VLM maintains 'present' with a box overlapping the classifier heatmap box
    if maintains and vcall.status is Status.present:
        if vcall.box is not None and classifier_box is not None:
            iou = vcall.box.iou(classifier_box)
            if iou >= policy.box_iou_min:
                return decision.model_copy(update={
                    "status": Status.present, "conflict": False, "needs_review": False,
                    "confidence": policy.resolved_confidence,
                    "agreeing": [vlm_src], "disagreeing": list(other_srcs),
                    "verification": f"{before}Targeted re-ask: {answer} and its box overlaps the classifier "
                                    f"heatmap (IoU {iou:.2f} >= {policy.box_iou_min:.2f}).",
                    "rationale": f"{name}: the VLM maintained it on a targeted re-ask and its box overlaps the "
                                 f"classifier heatmap region (IoU {iou:.2f}) although the classifier score was "
                                 "below threshold; resolved as present (moderate confidence).",
                    "calls": calls, "box": vcall.box,
                })
            return unresolved(f"{answer}, but its box does not overlap the classifier heatmap "
                              f"(IoU {iou:.2f} < {policy.box_iou_min:.2f})")
        return unresolved(f"{answer}, with no box to compare with the classifier heatmap")
    if vcall.status is Status.uncertain:
        return unresolved(f"{answer}")
    if maintains:
        return unresolved(f"{answer}, maintaining its position against {others_txt}")
    return unresolved(f"{answer}, which does not settle it")
