"""The responder's words for the reconciler's reasons: a Decision's ``reasons`` (data) -> its rationale.

The reconciler decides with numbers and records which rule applied to which calls
(knowledge.evidence.Reason); everything a person reads about that - how a source and its score are
named, how a disagreement or a re-ask is told - is written here, in one place, so the policy can be
tested on its numbers and the wording changed without touching it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from agents.replying.quotes import quote_span, quote_text
from knowledge.evidence import Box, Decision, FindingCall, Reason, Status
from knowledge.vocabulary import display_name

Labels = Mapping[str, str] | None
"""How replies name each source (``Policy.source_labels``: the tools' declared ``label``s); None: the
default policy's."""


def _labels(labels: Labels) -> Mapping[str, str]:
    if labels is not None:
        return labels
    from agents.reconciling.policy import DEFAULT_SOURCE_LABELS

    return DEFAULT_SOURCE_LABELS


def source_name(src: str, labels: Labels = None) -> str:
    """The source as a reply names it: its declared label ("the VLM"), else ``tool 'name'``."""
    return _labels(labels).get(src) or f"tool '{src}'"


def quote(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    t = " ".join(text.split())
    if len(t) > limit:
        t = t[: limit - 1].rstrip() + "\u2026"
    return f"'{t}'"


def join(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def describe_call(call: FindingCall, labels: Labels = None) -> str:
    """A short clinician-readable description of one call, naming its source and score/text."""
    src = call.source
    who = source_name(src, labels)
    if call.score_kind == "op_norm":
        s = call.score
        if s is None:
            return f"{who} ({call.status.value})"
        if call.status is Status.uncertain:
            side = "near threshold, uncertain"
        else:
            side = "above threshold" if s > 0.5 else "below threshold" if s < 0.5 else "at threshold"
        return f"{who.removeprefix('the ')} op-point score {s:.2f} ({side})"
    if call.score_kind == "probability" and call.score is not None:
        return f"{who.removeprefix('the ')} probability {call.score:.2f} ({call.status.value})"
    if call.score_kind == "neighbor_fraction":
        if call.score is not None:
            return f"{call.score:.0%} of similar prior reports mention it"
        return "similar prior reports mention it"
    if call.implied == "normal_study":
        return f"{who} calls the study normal ({quote(call.text or 'no finding')})"
    if call.implied == "report_silence":
        return f"{who} report does not mention it"
    if call.task == "classification" and call.status is not Status.uncertain:
        return (f"{who} lists it among the abnormalities (classification; a listed label may be a hedge)"
                if call.status is Status.present else f"{who} leaves it out of its abnormality list (classification)")
    said = quote(call.text)
    what = {"present": "reports it", "absent": "reports it absent", "uncertain": "is uncertain"}[call.status.value]
    if call.score is not None:
        who += f" (score {call.score:.2f})"
    return f"{who} {what}{f' ({said})' if said else ''}"


def said_text(call: FindingCall) -> str | None:
    """The words a call rests on, as cited: its quote, or what an implied call was implied from."""
    if call.implied == "normal_study":
        return f"implied by a no-finding statement: {call.text or 'no finding'}"
    if call.implied == "report_silence":
        return "not mentioned in its full report"
    return call.text


def _descs(calls: Sequence[FindingCall], labels: Labels) -> str:
    return join([describe_call(c, labels) for c in calls])


def _unc_note(r: Reason, labels: Labels) -> str:
    return f"; {_descs(r.uncertain, labels)}" if r.uncertain else ""


def _others(r: Reason, labels: Labels) -> str:
    return join([source_name(s, labels) for s in r.others]) or "the other image sources"


def _vote(r: Reason, labels: Labels) -> str:
    """The sentence of one vote (decide's step 5), without the finding's name."""
    st = r.status.value if r.status is not None else "uncertain"
    side = r.present or r.absent
    if r.rule == "conflict":
        hi = " (a high-confidence positive: not dropped)" if r.kept_high_confidence else ""
        return (f"{cap(_descs(r.present, labels))} but {_descs(r.absent, labels)}{_unc_note(r, labels)}: image sources "
                f"disagree{hi}; reported as {st} and flagged for review.")
    if r.rule == "agree":
        return f"{cap(_descs(side, labels))} agree{_unc_note(r, labels)}."
    if r.rule == "one_definite":
        tail = "; low confidence: weak evidence only, not a conflict." if r.low_confidence else "."
        return f"Only one image source is definite: {_descs(side, labels)}{_unc_note(r, labels)}{tail}"
    if r.rule == "listed_only":
        return (f"{cap(_descs(r.present, labels))}{_unc_note(r, labels)}: a listed label may be a hedge and no other "
                "image source is definite, so it is reported as uncertain (low confidence).")
    if r.rule == "single_source":
        return f"{cap(_descs(side, labels))}; no other image source commented on it."
    return (f"{cap(_descs(r.uncertain, labels))}; no image source is definite, so it is reported as uncertain "
            "(low confidence; no image source contradicts another).")


def _asked(r: Reason, labels: Labels) -> str:
    """The re-asked tool as replies name it."""
    src = r.asked or (r.answer.source if r.answer is not None else None)
    return source_name(src, labels) if src else "the re-asked tool"


def unresolved_why(r: Reason, labels: Labels = None) -> str:
    """Why a targeted re-ask left a conflict open (rule C)."""
    answer = describe_call(r.answer, labels) if r.answer is not None else ""
    return {
        "tool_failed": f"no usable answer ({r.error})",
        "not_addressed": f"{_asked(r, labels)}'s answer did not address this finding",
        "box_no_overlap": f"{answer}, but its box does not overlap the classifier heatmap "
                          f"(IoU {r.iou or 0.0:.2f} < {r.threshold or 0.0:.2f})",
        "no_box": f"{answer}, with no box to compare with the classifier heatmap",
        "uncertain_answer": answer,
        "maintained": f"{answer}, maintaining its position against {_others(r, labels)}",
    }.get(r.cause or "", f"{answer}, which does not settle it")


def _reask(name: str, r: Reason, labels: Labels) -> tuple[str, str]:
    """(rationale, verification note) of one targeted re-ask (reconciler.resolve's rules A-D)."""
    answer = describe_call(r.answer, labels) if r.answer is not None else ""
    asked = _asked(r, labels)
    if r.rule == "reask_agrees":
        note = ", withdrawing its earlier positive statement" if r.withdrawn else ""
        st = r.status.value if r.status is not None else ""
        return (f"{name}: on a targeted re-ask {answer}{note}, agreeing with {_others(r, labels)}; resolved as "
                f"{st} (moderate confidence).",
                f"Targeted re-ask: {answer}{note}, now agreeing with {_others(r, labels)}.")
    if r.rule == "reask_overrules":
        pos = _descs(r.present, labels)
        return (f"{name}: {pos}, but {asked}, asked directly, {answer.removeprefix(asked + ' ')}; a moderate "
                f"positive outweighed by {asked}'s direct answer and its earlier read: reported absent with "
                "low confidence (the score is shown, not dropped).",
                f"Targeted re-ask: {answer}; {pos} is only moderately positive "
                f"(below the high-confidence line {r.threshold or 0.0:.2f}).")
    if r.rule == "reask_box_overlap":
        iou = r.iou or 0.0
        return (f"{name}: {asked} maintained it on a targeted re-ask and its box overlaps the classifier heatmap "
                f"region (IoU {iou:.2f}) although the classifier score was below threshold; resolved as present "
                "(moderate confidence).",
                f"Targeted re-ask: {answer} and its box overlaps the classifier heatmap "
                f"(IoU {iou:.2f} >= {r.threshold or 0.0:.2f}).")
    why = unresolved_why(r, labels)
    return (f"{name}: image sources still disagree after a targeted re-ask ({why}); reported as uncertain and "
            "flagged for review.",
            f"Targeted re-ask: {why}; conflict unresolved.")


def rationale(finding: str, reasons: Sequence[Reason], labels: Labels = None) -> str:
    """The one-line rationale of a Decision, from its reasons in the order the policy applied them."""
    name = display_name(finding)
    text = ""
    for r in reasons:
        if r.rule == "prior_only":
            prior = describe_call(r.prior, labels) if r.prior is not None else "only prior reports mention it"
            text = f"{name}: no image source assessed it; {prior} (a prior only, not evidence from this image)."
        elif r.rule in ("conflict", "agree", "one_definite", "single_source", "uncertain_only", "listed_only"):
            text = f"{name}: {_vote(r, labels)}"
        elif r.rule == "prior_shift" and r.prior is not None:
            text = text.rstrip(".") + f"; {describe_call(r.prior, labels)} (prior only)."
        elif r.rule == "prior_unsettled" and r.prior is not None:
            text = (text.rstrip(".") + f"; {describe_call(r.prior, labels)} "
                    "(a prior only: it does not settle an uncertain call).")
        elif r.rule == "no_finding_contradicted":
            names = join([display_name(f).lower() for f in r.findings])
            tail = ("flagged for review" if r.undisputed
                    else "the disputed finding carries the review flag" if len(r.findings) == 1
                    else "the disputed findings carry the review flag")
            text = (f"{text.rstrip('.')}; but {names} {'is' if len(r.findings) == 1 else 'are'} also called present "
                    f"or disputed, so 'no finding' cannot stand; {tail}.")
        elif r.rule.startswith("reask_"):
            text = _reask(name, r, labels)[0]
    return text


def verification_note(finding: str, reason: Reason, labels: Labels = None) -> str:
    """The note a targeted re-ask adds to Decision.verification."""
    return _reask(display_name(finding), reason, labels)[1]


# --------------------------------------------------------------------------------------- citations
OP_THRESHOLD = 0.5  # an op-normalised score equals 0.5 exactly at the classifier's calibrated threshold


class StatusWords(NamedTuple):
    word: str  # "present": a decision's status in a sentence or a table
    answer: str  # "Yes": the answer to a yes/no question


STATUS_WORDS: Mapping[Status, StatusWords] = {
    Status.present: StatusWords("present", "Yes"),
    Status.absent: StatusWords("absent", "No"),
    Status.uncertain: StatusWords("uncertain", "Uncertain"),
}
"""The one table of status words every reply uses."""
STATUS_WORD: Mapping[Status, str] = {s: w.word for s, w in STATUS_WORDS.items()}


def fmt_box(box: Box | None) -> str:
    if box is None:
        return ""
    return f"box x {box.x1:.2f}–{box.x2:.2f}, y {box.y1:.2f}–{box.y2:.2f}"


def region(box: Box, view: str | None = None) -> str:
    """Approximate zone of a box on a frontal film (image left = patient's right)."""
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    if view == "LATERAL":
        vert = "upper" if cy < 0.4 else "lower" if cy > 0.65 else "mid"
        return f"{vert} chest (lateral view)"
    side = "right" if cx < 0.45 else "left" if cx > 0.55 else "central/bilateral"
    zone = "upper" if cy < 0.4 else "lower" if cy > 0.65 else "mid"
    if side == "central/bilateral":
        return f"{zone} central chest"
    return f"{side} {zone} zone (image {'left' if side == 'right' else 'right'})"


def patient_side(box: Box, view: str | None = None) -> str | None:
    """The patient's side a box lies on, as ``region`` reads it ("central"; None on a lateral view)."""
    if view == "LATERAL":
        return None
    cx = (box.x1 + box.x2) / 2
    return "right" if cx < 0.45 else "left" if cx > 0.55 else "central"


def side_line(asked: str, boxes: list[Box], view: str | None, label: str) -> str:
    """What the boxes say about the side the user asked about. The yes/no answer is for the whole image
    (the classifier scores the whole film), so a side is only ever shown by where the boxes lie."""
    if view == "LATERAL":
        return f"**Side not checked:** you asked about the {asked} side; a lateral view cannot tell the sides apart."
    sides = {s for b in boxes if (s := patient_side(b, view)) is not None}
    zones = "; ".join(dict.fromkeys(region(b, view) for b in boxes))
    wanted = {"right", "left"} if asked == "bilateral" else {asked}
    what = f"{'bilateral' if asked == 'bilateral' else asked + '-sided'} {label}"
    if not boxes:
        return (f"**Side not checked:** you asked about the {asked} side; the answer above is for the whole image, "
                f"and no tool localised the {label} to a side.")
    if wanted <= sides:
        return f"**Side:** the boxes lie on the patient's {' and '.join(sorted(wanted))} ({zones})."
    where = (f"on the patient's {' and '.join(sorted(sides - {'central'}))}" if sides - {"central"}
             else "across the midline")
    return f"**Side:** you asked about the {asked} side, but the boxes lie {where} ({zones}): nothing here shows a {what}."


SIZE_IS_THE_FINDING = frozenset({"cardiomegaly", "enlarged_cardiomediastinum"})  # "heart size?" is the question


def aspect_line(aspect: str, finding: str | None, label: str, decision: Decision | None = None) -> str | None:
    """What the yes/no does not settle, said under it: an exclusion, size/severity, or a device's position."""
    if aspect == "rule_out" and decision is not None:
        if decision.status is Status.absent:
            return (f"**Rule-out:** the tools call {label} absent at confidence {decision.confidence:.2f}; a tool's "
                    "reading supports an exclusion, it does not make one.")
        return f"**Not ruled out:** the tools do not exclude {label}."
    if aspect == "position":
        return (f"**Position not judged:** the tools detect {label}; none judges whether a tip or device sits where "
                "it should. Check its position on the image.")
    if aspect == "size" and finding not in SIZE_IS_THE_FINDING:
        return f"**Size not graded:** the answer says whether {label} is there, not how large or severe; no tool here grades it."
    return None


def cite(call: FindingCall, *, k: int | None = None, report: str | None = None) -> str:
    """One source's statement, with what its score means. ``report``: the text the call's ``span`` points
    into, so the quote keeps its sentence's negation ("No pneumothorax", never "pneumothorax")."""
    parts: list[str] = []
    if call.score is not None and call.score_kind == "op_norm":
        parts.append(f"{call.source} op-point score {call.score:.2f} (threshold {OP_THRESHOLD:g})")
    elif call.score is not None and call.score_kind == "neighbor_fraction":
        share = f"{round(call.score * k)}/{k}" if k else f"{call.score:.0%} of"
        return f"{call.source}: {share} similar prior reports mention it (prior only)"
    elif call.score is not None and call.score_kind == "probability":
        parts.append(f"{call.source} probability {call.score:.2f}")
    elif call.score is not None:
        parts.append(f"{call.source} score {call.score:.2f}")
    else:
        parts.append(call.source)
    parts[-1] += f" says {STATUS_WORD[call.status]}"
    if call.score is None and (said := quoted(call, report, limit=160)):  # scored calls are cited by their score
        parts.append(said)
    if call.box is not None:
        parts.append(fmt_box(call.box))
    return ", ".join(parts)


def quoted(call: FindingCall, report: str | None = None, *, limit: int = 60) -> str:
    """The words a call rests on as a short quote: the mention in its sentence when the call points into
    ``report``, else its own text; what an implied call was implied from is said, not quoted."""
    if call.implied is not None:
        return said_text(call) or ""
    if call.span is not None:  # the text is the bare mention: quoted alone it would drop a negation
        if report and call.span[1] <= len(report) and call.text and report[call.span[0]:call.span[1]] == call.text:
            return quote_span(report, call.span, limit)
        return ""
    return quote_text(call.text, limit) if call.text else ""


def cite_decision(d: Decision, *, k: int | None = None, report: str | None = None) -> str:
    cites = "; ".join(cite(c, k=k, report=report) for c in d.calls) or "no source call recorded"
    return f"[{cites}]"
