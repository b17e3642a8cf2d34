"""The reply: a pure function of (route, evidence, decisions) -> markdown a radiologist can audit.

Rules: every finding statement cites its sources (tool, score with its kind, box); the
classifier's op-normalised score is never called a probability; the VLM's report is shown as
written and every revision the cross-check demands is listed beside it, marked (never a
silent edit); unavailable tools are named; the demo warning opens every reply under the tiny
profile and the disclaimer closes every report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.replying.lines import (
    _ROLES,
    _STATUS_WORD,
    ToolRoles,
    _by_tool,
    _custom_lines,
    _decision_line,
    _header,
    _k,
    _prior_only,
    _roles,
    _silent,
    _unavailable_lines,
    _vlm_mentions,
    _vlm_says,
    unavailable,
)
from agents.replying.other_intents import chat_reply, explain_reply, payload, retrieval_context, similar_reply
from agents.replying.phrases import (
    OP_THRESHOLD,
    aspect_line,
    cap,
    cite,
    cite_decision,
    fmt_box,
    region,
    side_line,
)
from cxr_agent.settings import DISCLAIMER
from knowledge.evidence import Decision, Evidence, Status
from knowledge.vocabulary import display_name

__all__ = ["OP_THRESHOLD", "ToolRoles", "chat_reply", "cite", "cite_decision", "compose", "explain_reply",
           "finding_reply", "fmt_box", "locate_reply", "payload", "region", "report_reply", "retrieval_context",
           "similar_reply", "unavailable"]


# --------------------------------------------------------------------------------------- replies
def compose(
    route: dict[str, Any],
    evidence: Sequence[Evidence],
    decisions: Sequence[Decision],
    *,
    demo: bool = False,
    notes: Sequence[str] = (),
    study: dict[str, Any] | None = None,
    prior: dict[str, Any] | None = None,
    ingest_error: str | None = None,
    roles: ToolRoles | None = None,
) -> str:
    """The reply for this turn. ``study``: {"id", "width", "height", "view"} when one is loaded;
    ``prior``: the thread's last reconciled result (for explain); ``roles``: which tool wrote the
    report / found similar cases (default: the built-ins' capabilities)."""
    token = _ROLES.set(roles)
    try:
        return _compose(route, evidence, decisions, demo=demo, notes=notes, study=study, prior=prior,
                        ingest_error=ingest_error)
    finally:
        _ROLES.reset(token)


NO_COMPARISON = ("No earlier image was compared: the tools read one study at a time, so nothing below says "
                 "whether anything has changed. Compare with the prior study yourself.")


def _compose(
    route: dict[str, Any],
    evidence: Sequence[Evidence],
    decisions: Sequence[Decision],
    *,
    demo: bool,
    notes: Sequence[str],
    study: dict[str, Any] | None,
    prior: dict[str, Any] | None,
    ingest_error: str | None,
) -> str:
    intent = route.get("intent", "chat")
    lines = _header(demo)
    if route.get("asks_comparison") and not ingest_error:
        lines += [f"> **{NO_COMPARISON}**", ""]
    if ingest_error:
        lines += [ingest_error]
    elif route.get("needs_image") and study is None and intent != "explain":
        lines += [
            "Please upload a chest radiograph (PNG, JPEG or DICOM) first: "
            f"a {intent.replace('_', ' ')} needs an image to look at."
        ]
    elif intent == "report":
        lines += report_reply(evidence, decisions, notes=notes)
    elif intent == "locate":
        lines += locate_reply(route, evidence, decisions, study=study)
    elif intent == "finding_question":
        lines += finding_reply(route, evidence, decisions, study=study)
    elif intent == "similar_cases":
        lines += similar_reply(evidence)
    elif intent == "explain":
        lines += explain_reply(prior, finding=route.get("finding"))
    else:
        lines += chat_reply(evidence)
    if not ingest_error and intent != "report":
        extra = [n for n in notes if n]
        if extra:
            lines += ["", *(f"_{n}_" for n in extra)]
    if intent == "report" and not ingest_error and (study is not None or not route.get("needs_image")):
        lines += ["", "---", f"_{DISCLAIMER}_"]
    return "\n".join(lines).strip() + "\n"


def report_reply(evidence: Sequence[Evidence], decisions: Sequence[Decision], *, notes: Sequence[str] = ()) -> list[str]:
    k = _k(evidence)
    vlm = _by_tool(evidence, *_roles().writers)
    writer = _roles().writer_label(vlm)
    lines: list[str] = ["## Report", ""]
    if vlm is not None and vlm.ok and vlm.report:
        lines += [f"_Drafted by {writer}; shown as written. Revisions the cross-check demands are listed below it._", ""]
        lines += [vlm.report.strip(), ""]
    else:
        why = (vlm.error if vlm is not None else "not configured") or "no report text"
        lines += [f"_{cap(writer)} report is unavailable ({why}). Findings below come from the other tools only._", ""]
    lines += _unavailable_lines(evidence)

    revisions: list[str] = []
    for d in decisions:
        vlm_call = _vlm_mentions(d)
        if d.finding == "no_finding":
            continue
        if vlm is not None and vlm.ok and vlm.report and (vlm_call is None or _silent(vlm_call)) \
                and d.status == Status.present:
            flag = " (flagged for review)" if d.needs_review else ""
            revisions.append(
                f"- **Added{flag}: {display_name(d.finding)}.** Not mentioned in {writer} report; "
                f"{d.rationale} {cite_decision(d, k=k)}".rstrip()
            )
        elif vlm_call is not None and vlm_call.status != d.status and d.status != Status.uncertain:
            revisions.append(
                f"- **Contradicted: {display_name(d.finding)}.** {_vlm_says(vlm_call)}; "
                f"after cross-check: {_STATUS_WORD[d.status]}"
                + (" (unresolved — flagged for human review)" if d.needs_review else "")
                + f". {d.rationale} {cite_decision(d, k=k)}".rstrip()
            )
        elif vlm_call is not None and d.conflict and d.needs_review:
            revisions.append(
                f"- **Disputed, unresolved: {display_name(d.finding)}.** {_vlm_says(vlm_call)}; "
                "other image evidence disagrees and the re-ask did not settle it — "
                f"flagged for human review. {d.rationale} {cite_decision(d, k=k)}".rstrip()
            )
    if revisions:
        lines += ["### Revisions after cross-check", "", *revisions, ""]

    lines += ["### Cross-check", ""]
    shown = [d for d in decisions if not _prior_only(d)]  # retrieval-only findings live in its context line
    conflicts = [d for d in shown if d.conflict or d.verification]  # resolved ones keep their story
    agree = [d for d in shown if d not in conflicts and d.status != Status.absent
             and (d.finding != "no_finding" or d.status == Status.present)]
    if agree:
        lines += ["**Findings (not in conflict):**", *(_decision_line(d, k) for d in agree), ""]
    absent = [d for d in shown if d not in conflicts and d.status == Status.absent and d.finding != "no_finding"]
    if absent:
        lines += [f"**Called absent:** {', '.join(display_name(d.finding) for d in absent)}.", ""]
    if conflicts:
        lines += ["**Conflicts and how they were resolved:**", *(_decision_line(d, k) for d in conflicts), ""]
    elif shown:
        lines += ["No conflicts between image sources.", ""]
    else:
        lines += ["No finding calls to cross-check this turn.", ""]
    lines += retrieval_context(evidence)
    custom = _custom_lines(evidence)
    if custom:
        lines += ["**Other checks:**", *custom, ""]
    lines += [f"_{n}_" for n in notes if n]
    return lines


def _target(route: dict[str, Any], unnamed: str) -> tuple[str | None, str]:
    finding = route.get("finding")
    label = display_name(finding) if finding else (route.get("phrase") or unnamed)
    return finding, label


def _writer_answer(evidence: Sequence[Evidence]) -> Evidence | None:
    """The first report writer's evidence that answered this turn (the VLM's own words), if any."""
    return next((e for e in evidence if e.ok and e.answer and e.tool in _roles().writers), None)


def _answer_lines(answered: Evidence) -> list[str]:
    """The writer's answer as a bullet; one nested bullet per finding when it answered several."""
    who = _roles().label(answered.tool).removeprefix("the ")
    text = answered.answer.strip()  # type: ignore[union-attr]
    if "\n" not in text:
        return [f"- {who} answer: {text}"]
    return [f"- {who} answers:", *(f"  - {line.strip()}" for line in text.splitlines() if line.strip())]


def locate_reply(
    route: dict[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision], *, study: dict | None = None
) -> list[str]:
    """Where each named finding is ("where are they?" after a two-finding question gets a block each)."""
    named = list(dict.fromkeys(f for f in route.get("findings") or [] if f))
    if len(named) <= 1:
        lines = _locate_block(route, evidence, decisions, study=study, with_answer=True)
    else:
        lines = []
        for i, finding in enumerate(named):
            lines += ([""] if i else []) + _locate_block({**route, "finding": finding, "phrase": None}, evidence,
                                                         decisions, study=study, with_answer=False)
        if answered := _writer_answer(evidence):
            lines += ["", *_answer_lines(answered)]
    return [*lines, "", *_unavailable_lines(evidence), "_Boxes are relative to the original image (0–1); "
            "image left is the patient's right on a frontal film. Heatmaps show what drove the classifier, "
            "not the lesion outline._"]


def _locate_block(route: dict[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                  study: dict | None, with_answer: bool) -> list[str]:
    # Nothing named, nothing asked before to refer back to: the VLM detects every abnormality.
    finding, label = _target(route, "any abnormality (none was named)")
    view = (study or {}).get("view")
    lines = [f"## Where: {label}", ""]
    found = False
    for e in evidence:
        if not e.ok:
            continue
        for c in e.calls:
            if c.box is None or (finding and c.finding != finding) or c.status == Status.absent:
                continue
            found = True
            px = ""
            if study and study.get("width") and study.get("height"):
                x1, y1, x2, y2 = c.box.to_pixels(study["width"], study["height"])
                px = f" = pixels ({x1}, {y1})–({x2}, {y2})"
            lines.append(f"- **{e.tool}**: {region(c.box, view)} — {fmt_box(c.box)}{px}. [{cite(c)}]")
        for a in e.artifacts:
            if a.kind == "boxes" and a.box is not None and a.meta.get("location_only") \
                    and (finding is None or a.finding in (finding, None)):
                # A VLM grounding box: where the model would put it, not evidence that it is there.
                found = True
                px = ""
                if study and study.get("width") and study.get("height"):
                    x1, y1, x2, y2 = a.box.to_pixels(study["width"], study["height"])
                    px = f" = pixels ({x1}, {y1})–({x2}, {y2})"
                lines.append(f"- **{e.tool}** location of {a.meta.get('target') or label}: {region(a.box, view)} — "
                             f"{fmt_box(a.box)}{px} (a location only: the model boxes whatever it is asked to find).")
            if a.kind == "heatmap" and (finding is None or a.finding == finding):
                where = f" — hottest region {region(a.box, view)} ({fmt_box(a.box)})" if a.box else ""
                lines.append(f"- **{e.tool} heatmap** for {display_name(a.finding or '') if a.finding else label}{where}.")
                found = found or a.box is not None
    if with_answer and (answered := _writer_answer(evidence)):
        lines.append(f"- {cap(_roles().label(answered.tool).removeprefix('the '))}: {answered.answer.strip()}")  # type: ignore[union-attr]
    if not found:
        lines.append(f"No tool localised {label.lower()} on this image.")
    d = next((d for d in decisions if d.finding == finding), None) if finding else None
    if d is not None:
        lines += ["", _decision_line(d, None)]
    return lines


def finding_reply(route: dict[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                  study: dict | None = None) -> list[str]:
    """The answer to a yes/no question: one block per finding it names ("pneumothorax or effusion?" gets two)."""
    named = [f for f in route.get("findings") or [] if f] or [route.get("finding")]
    lines: list[str] = []
    for i, finding in enumerate(dict.fromkeys(named)):
        lines += ([""] if i else []) + _finding_block({**route, "finding": finding}, evidence, decisions,
                                                      view=(study or {}).get("view"))
    if answered := _writer_answer(evidence):
        lines += _answer_lines(answered)
    lines += ["", *_unavailable_lines(evidence)]
    return lines


def _finding_block(route: dict[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                   view: str | None = None) -> list[str]:
    finding, label = _target(route, "what you asked (no finding was recognised)")
    d = next((d for d in decisions if d.finding == finding), None) if finding else None
    if finding is None and not route.get("phrase") and (free := _writer_answer(evidence)):
        return [f"**Not cross-checked:** the question names no finding the tools know, so "
                f"{_roles().label(free.tool)} answered it in its own words below and no other tool checked "
                "the answer."]
    if d is None:
        return [f"**Uncertain** — no tool gave a usable answer about {label.lower()} on this image."]
    word = {Status.present: "Yes", Status.absent: "No", Status.uncertain: "Uncertain"}[d.status]
    lines = [f"**{word}** — {label.lower()} {_STATUS_WORD[d.status]} (confidence {d.confidence:.2f})."]
    if d.conflict:
        lines.append(
            "The image sources disagreed"
            + (f"; {d.verification.rstrip('.')}" if d.verification else "")
            + ("; **unresolved, flagged for human review**." if d.needs_review else "; resolved as above.")
        )
    if d.rationale:
        lines.append(d.rationale)
    caveats: list[str] = []
    aspect = route.get("aspect")
    if aspect and (d.status != Status.absent or aspect == "rule_out") and \
            (said := aspect_line(aspect, finding, label.lower(), d)):
        caveats.append(said)
    if route.get("side") and d.status != Status.absent:  # "is there a RIGHT effusion?": only boxes show a side
        boxes = [c.box for c in d.calls if c.box is not None and c.status != Status.absent]
        boxes += [a.box for e in evidence if e.ok for a in e.artifacts
                  if a.kind == "boxes" and a.box is not None and a.finding == finding]
        caveats.append(side_line(route["side"], boxes, view, label.lower()))
    if caveats:  # what the yes/no does not settle, each its own paragraph right under it
        lines[1:1] = [x for c in caveats for x in ("", c)] + [""]
    return [*lines, "", "**Evidence:**", *(f"- {cite(c, k=_k(evidence))}" for c in d.calls)]
