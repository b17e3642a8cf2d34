"""Settle a conflict with the VLM's answer to a targeted re-ask (the reconciler's verification rule).

Pure like decide(): a Decision and the re-ask's Evidence in, the settled Decision out, with the rule
that applied recorded as a typed Reason (numbers: IoU, the high-confidence line); the words of the
rationale and of the verification note come from agents/replying/phrases.py.
"""

from __future__ import annotations

from agents.reconciling.policy import Policy, is_high_confidence, one_per_source
from agents.replying import phrases as wording
from knowledge.evidence import Box, Decision, Evidence, Reason, Status


def _position(decision: Decision, source: str, policy: Policy) -> Status | None:
    cs = [c for c in decision.calls if c.source == source and policy.is_image_source(c.source)]
    if not cs:
        return None
    return one_per_source(cs, policy)[source].status


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

    The rule (each branch records its own Reason; wording.rationale / verification_note word it):

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
    before = decision.verification + " " if decision.verification else ""
    vcalls = [c for c in verification.calls if c.finding == decision.finding] if verification.ok else []
    vcall = one_per_source(vcalls, policy).get(vcalls[0].source) if vcalls else None
    vlm_src = vcalls[0].source if vcalls else (verification.tool or "vlm")
    other_status, other_srcs = _other_side(decision, policy, vlm_src)
    prior_vlm = _position(decision, vlm_src, policy)
    calls = list(decision.calls) + vcalls

    def settle(reason: Reason, **update: object) -> Decision:
        reasons = [*decision.reasons, reason]
        return decision.model_copy(update={
            **update, "calls": calls, "reasons": reasons,
            "rationale": wording.rationale(decision.finding, reasons, policy.labels),
            "verification": before + wording.verification_note(decision.finding, reason, policy.labels),
        })

    def unresolved(cause: str, **fields: object) -> Decision:
        reason = Reason(rule="reask_unresolved", answer=vcall, asked=vlm_src, others=other_srcs, cause=cause,
                        **fields)
        return settle(reason, status=Status.uncertain, conflict=True, needs_review=True,
                      confidence=round(min(decision.confidence, policy.unresolved_cap), 4))

    if vcall is None:
        if not verification.ok:
            return unresolved("tool_failed", error=verification.error)
        return unresolved("not_addressed")

    # A. agreement after re-ask
    if other_status is not None and vcall.status is other_status:
        withdrawn = other_status is Status.absent and prior_vlm is Status.present
        box = (vcall.box or classifier_box or decision.box) if other_status is Status.present else None
        return settle(Reason(rule="reask_agrees", status=other_status, answer=vcall, asked=vlm_src, others=other_srcs,
                             withdrawn=withdrawn),
                      status=other_status, conflict=False, needs_review=False,
                      confidence=policy.resolved_confidence, agreeing=sorted({*other_srcs, vlm_src}),
                      disagreeing=[], box=box)
    # D. (checked before B/C) the VLM, asked directly, denies a positive that is NOT high-confidence
    maintains = prior_vlm is not None and vcall.status is prior_vlm
    strong = [c for c in decision.calls if c.source != vlm_src and is_high_confidence(c, policy)]
    if other_status is Status.present and vcall.status is Status.absent and not strong:
        positives = list(one_per_source([c for c in decision.calls if c.source in other_srcs], policy).values())
        return settle(Reason(rule="reask_overrules", status=Status.absent, answer=vcall, asked=vlm_src,
                             present=positives,
                             others=other_srcs, threshold=0.5 + policy.margin_high),
                      status=Status.absent, conflict=False, needs_review=False,
                      confidence=policy.overruled_confidence, agreeing=[vlm_src], disagreeing=list(other_srcs),
                      box=None)
    # B. VLM maintains 'present' with a box overlapping the classifier heatmap box
    if maintains and vcall.status is Status.present:
        if vcall.box is not None and classifier_box is not None:
            iou = vcall.box.iou(classifier_box)
            if iou >= policy.box_iou_min:
                return settle(Reason(rule="reask_box_overlap", status=Status.present, answer=vcall, asked=vlm_src,
                                     others=other_srcs, iou=iou, threshold=policy.box_iou_min),
                              status=Status.present, conflict=False, needs_review=False,
                              confidence=policy.resolved_confidence, agreeing=[vlm_src],
                              disagreeing=list(other_srcs), box=vcall.box)
            return unresolved("box_no_overlap", iou=iou, threshold=policy.box_iou_min)
        return unresolved("no_box")
    if vcall.status is Status.uncertain:
        return unresolved("uncertain_answer")
    if maintains:
        return unresolved("maintained")
    return unresolved("not_settled")
