"""The reply: a pure function of (route, evidence, decisions) -> markdown a radiologist can audit.

Rules: every finding statement cites its sources (tool, score with its kind, box); the
classifier's op-normalised score is never called a probability; the VLM's report is shown as
written and every revision the cross-check demands is listed beside it, marked (never a
silent edit); unavailable tools are named; the demo warning opens every reply under the tiny
profile and the disclaimer closes every report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from agents.wording import said_text
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Box, Decision, Evidence, FindingCall, Status
from knowledge.vocabulary import display_name
from tools.base import ToolCapabilities

OP_THRESHOLD = 0.5  # an op-normalised score equals 0.5 exactly at the classifier's calibrated threshold
_STATUS_WORD = {Status.present: "present", Status.absent: "absent", Status.uncertain: "uncertain"}


# --------------------------------------------------------------------------------------- citations
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


def cite(call: FindingCall, *, k: int | None = None) -> str:
    """One source's statement, with what its score means."""
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
    parts[-1] += f" says {_STATUS_WORD[call.status]}"
    said = said_text(call)
    if said and call.score is None:  # scored calls are cited by their score
        snippet = said.strip().replace("\n", " ")
        parts.append(f'"{snippet[:160]}{"…" if len(snippet) > 160 else ""}"')
    if call.box is not None:
        parts.append(fmt_box(call.box))
    return ", ".join(parts)


def cite_decision(d: Decision, *, k: int | None = None) -> str:
    cites = "; ".join(cite(c, k=k) for c in d.calls) or "no source call recorded"
    return f"[{cites}]"


# --------------------------------------------------------------------------------------- helpers
def unavailable(evidence: Iterable[Evidence]) -> list[Evidence]:
    """Tools that failed this turn (a failed verification re-ask is reported with its decision)."""
    return [e for e in evidence if not e.ok and not e.meta.get("verification")]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


@dataclass(frozen=True)
class ToolRoles:
    """Which tools play which part in a reply, read from their capabilities (never their names):
    ``writers`` write the report and answer questions (writes_report), ``neighbours`` return similar
    prior cases (serve similar_cases without reading the image); any other tool's answer is listed
    under its own name."""

    writers: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()

    @classmethod
    def from_capabilities(cls, caps: dict[str, ToolCapabilities]) -> ToolRoles:
        return cls(
            writers=tuple(n for n, c in caps.items() if c.writes_report),
            neighbours=tuple(n for n, c in caps.items()
                             if "similar_cases" in c.intents and not c.image_source and not c.writes_report),
        )

    @classmethod
    def builtin(cls) -> ToolRoles:
        from tools.registry import BUILTINS

        return cls.from_capabilities({n: c for n, (_, c) in BUILTINS.items()})


_ROLES: ContextVar[ToolRoles | None] = ContextVar("cxr_tool_roles", default=None)


def _roles() -> ToolRoles:
    return _ROLES.get() or ToolRoles.builtin()


def _by_tool(evidence: Sequence[Evidence], *tools: str) -> Evidence | None:
    for e in evidence:
        if e.tool in tools and not e.meta.get("verification"):
            return e
    return None


def _k(evidence: Sequence[Evidence]) -> int | None:
    r = _by_tool(evidence, *_roles().neighbours)
    return len(r.neighbors) if r is not None and r.ok and r.neighbors else None


def _header(demo: bool) -> list[str]:
    return [f"> **{DEMO_WARNING}**", ""] if demo else []


def _unavailable_lines(evidence: Sequence[Evidence]) -> list[str]:
    bad = unavailable(evidence)
    if not bad:
        return []
    names = ", ".join(f"**{e.tool}** ({e.error or 'failed'})" for e in bad)
    return [f"_Unavailable this turn: {names}. The answer rests on the remaining tools._", ""]


def _custom_lines(evidence: Sequence[Evidence]) -> list[str]:
    """Answers from tools other than the built-ins (e.g. an image-quality check)."""
    out = []
    for e in evidence:
        if e.ok and e.tool not in {*_roles().writers, *_roles().neighbours} and e.answer:
            out.append(f"- **{e.tool}**: {e.answer}")
    return out


def _vlm_mentions(d: Decision) -> FindingCall | None:
    for c in d.calls:
        if c.source in _roles().writers:
            return c
    return None


def _silent(call: FindingCall | None) -> bool:
    """A call the reconciler implied from the VLM report not mentioning the finding at all."""
    return call is not None and call.implied == "report_silence"


def _vlm_says(call: FindingCall) -> str:
    if call.implied == "normal_study":
        return "The VLM report does not mention it and reads the study as normal"
    if _silent(call):
        return "The VLM report does not mention it"
    return f"The VLM report says {_STATUS_WORD[call.status]}"


def _prior_only(d: Decision) -> bool:
    """A decision resting only on retrieval neighbours (a prior, no image evidence)."""
    return bool(d.calls) and all(c.score_kind == "neighbor_fraction" for c in d.calls)


def _decision_line(d: Decision, k: int | None) -> str:
    line = f"**{display_name(d.finding)}**: {_STATUS_WORD[d.status]} (confidence {d.confidence:.2f})"
    if d.conflict or d.verification:
        line += " — image sources disagreed"
        if d.verification:
            line += f"; {d.verification.rstrip('.')}"
        if d.conflict:
            line += "; **unresolved, flagged for human review**"
        else:
            line += "; resolved" + (" (still flagged for review)" if d.needs_review else "")
    elif d.needs_review:
        line += " — **flagged for review**"
    return f"- {line}. {d.rationale} {cite_decision(d, k=k)}".rstrip()


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
        lines += finding_reply(route, evidence, decisions)
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
    lines: list[str] = ["## Report", ""]
    if vlm is not None and vlm.ok and vlm.report:
        lines += ["_Drafted by the VLM; shown as written. Revisions the cross-check demands are listed below it._", ""]
        lines += [vlm.report.strip(), ""]
    else:
        why = (vlm.error if vlm is not None else "not configured") or "no report text"
        lines += [f"_The VLM report is unavailable ({why}). Findings below come from the other tools only._", ""]
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
                f"- **Added{flag}: {display_name(d.finding)}.** Not mentioned in the VLM report; "
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


def retrieval_context(evidence: Sequence[Evidence]) -> list[str]:
    r = _by_tool(evidence, *_roles().neighbours)
    if r is None or not r.ok:
        return []
    k = len(r.neighbors)
    if not k:
        return ["**Retrieval context:** no similar prior reports found.", ""]
    counts: dict[str, int] = {}
    for n in r.neighbors:
        for lab in set(n.labels):
            counts[lab] = counts.get(lab, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    mention = "; ".join(f"{c}/{k} mention {display_name(f).lower()}" for f, c in top if f != "no_finding")
    normal = counts.get("no_finding", 0)
    bits = [f"{k} similar prior reports"]
    if mention:
        bits.append(mention)
    if normal:
        bits.append(f"{normal}/{k} are normal studies")
    return [f"**Retrieval context** (a prior, not a vote): {'; '.join(bits)}.", ""]


def _target(route: dict[str, Any]) -> tuple[str | None, str]:
    finding = route.get("finding")
    label = display_name(finding) if finding else (route.get("phrase") or "the finding")
    return finding, label


def locate_reply(
    route: dict[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision], *, study: dict | None = None
) -> list[str]:
    finding, label = _target(route)
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
            if a.kind == "heatmap" and (finding is None or a.finding == finding):
                where = f" — hottest region {region(a.box, view)} ({fmt_box(a.box)})" if a.box else ""
                lines.append(f"- **{e.tool} heatmap** for {display_name(a.finding or '') if a.finding else label}{where}.")
                found = found or a.box is not None
    if e_answers := [e for e in evidence if e.ok and e.tool in _roles().writers and e.answer]:
        lines.append(f"- VLM: {e_answers[0].answer.strip()}")
    if not found:
        lines.append(f"No tool localised {label.lower()} on this image.")
    d = next((d for d in decisions if d.finding == finding), None) if finding else None
    if d is not None:
        lines += ["", _decision_line(d, None)]
    lines += ["", *_unavailable_lines(evidence), "_Boxes are relative to the original image (0–1); "
              "image left is the patient's right on a frontal film. Heatmaps show what drove the classifier, "
              "not the lesion outline._"]
    return lines


def finding_reply(route: dict[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision]) -> list[str]:
    finding, label = _target(route)
    d = next((d for d in decisions if d.finding == finding), None) if finding else None
    if d is None:
        lines = [f"**Uncertain** — no tool gave a usable answer about {label.lower()} on this image."]
    else:
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
        lines += ["", "**Evidence:**", *(f"- {cite(c, k=_k(evidence))}" for c in d.calls)]
    answers = [e for e in evidence if e.ok and e.answer and e.tool in _roles().writers]
    if answers:
        lines += [f"- vlm answer: {answers[0].answer.strip()}"]
    lines += ["", *_unavailable_lines(evidence)]
    return lines


def similar_reply(evidence: Sequence[Evidence]) -> list[str]:
    r = _by_tool(evidence, *_roles().neighbours)
    if r is None or not r.ok:
        why = (r.error if r is not None else "retrieval is not configured") or "failed"
        return [f"Similar cases are unavailable: {why}."]
    if not r.neighbors:
        return ["No similar prior reports were found in the index."]
    lines = [f"## {len(r.neighbors)} similar prior reports", "", "| # | similarity | findings | excerpt |", "|---|---|---|---|"]
    for i, n in enumerate(r.neighbors, 1):
        labels = ", ".join(display_name(lab) for lab in n.labels) or "—"
        text = n.text.strip().replace("\n", " ").replace("|", "/")
        lines.append(f"| {i} | {n.score:.2f} | {labels} | {text[:140]}{'…' if len(text) > 140 else ''} |")
    lines += ["", *retrieval_context(evidence), "_Neighbours are a prior from other patients' reports, not evidence about this image._"]
    return lines


def explain_reply(prior: dict[str, Any] | None, *, finding: str | None = None) -> list[str]:
    """Rationales of stored decisions; only the asked-about finding's when the turn names one."""
    if not prior or not prior.get("decisions"):
        return ["There is nothing to explain yet: no findings have been reconciled in this conversation. "
                "Ask for a report or about a finding first."]
    decisions: list[Decision] = list(prior["decisions"])
    evidence: list[Evidence] = prior.get("evidence") or []
    k = _k(evidence)
    lines = ["## Why these conclusions (from this conversation's stored evidence; no tool was re-run)", ""]
    others: list[Decision] = []
    if finding:
        asked = [d for d in decisions if d.finding == finding]
        if not asked:
            lines += [f"No tool made a call about {display_name(finding).lower()} in this conversation, "
                      "so there is no conclusion about it to explain.", ""]
        others = [d for d in decisions if d.finding != finding]
        decisions = asked
    for d in decisions:
        line = f"- **{display_name(d.finding)}** → {_STATUS_WORD[d.status]} (confidence {d.confidence:.2f}). "
        line += d.rationale or "No rationale recorded."
        if d.agreeing:
            line += f" Agreeing: {', '.join(d.agreeing)}."
        if d.disagreeing:
            line += f" Disagreeing: {', '.join(d.disagreeing)}."
        if d.verification:
            line += f" {_sentence(d.verification)}"
        if d.needs_review:
            line += " Flagged for human review."
        lines.append(f"{line} {cite_decision(d, k=k)}")
    if others:
        lines += ["", "Other conclusions on record: "
                  + ", ".join(f"{display_name(d.finding).lower()} ({_STATUS_WORD[d.status]})" for d in others)
                  + ". Ask about any of them."]
    bad = unavailable(evidence)
    if bad:
        lines += ["", f"_Unavailable in that turn: {', '.join(e.tool for e in bad)}._"]
    return lines


def chat_reply(evidence: Sequence[Evidence]) -> list[str]:
    vlm = _by_tool(evidence, *_roles().writers)
    lines: list[str] = []
    if vlm is not None and vlm.ok and (vlm.answer or vlm.report):
        lines.append((vlm.answer or vlm.report or "").strip())
    elif vlm is not None:
        lines.append(f"The VLM could not answer this turn ({vlm.error or 'no answer'}).")
    custom = _custom_lines(evidence)
    if custom:
        lines += ["", *custom]
    if not lines:
        lines.append("No tool could answer this turn.")
    lines += ["", *_unavailable_lines(evidence)]
    return lines


# --------------------------------------------------------------------------------------- UI payload
def payload(
    route: dict[str, Any],
    evidence: Sequence[Evidence],
    decisions: Sequence[Decision],
    *,
    study_id: str | None,
    demo: bool,
) -> dict[str, Any]:
    """additional_kwargs["cxr"] of the reply: what the UI draws beside it."""
    boxes: list[dict[str, Any]] = []
    heatmaps: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for e in evidence:
        if not e.ok:
            continue
        for c in e.calls:
            if c.box is None or c.status == Status.absent:
                continue
            key = (c.finding, c.source, c.box.x1, c.box.y1, c.box.x2, c.box.y2)
            if key in seen:
                continue
            seen.add(key)
            boxes.append(
                {"finding": c.finding, "source": c.source, "x1": c.box.x1, "y1": c.box.y1, "x2": c.box.x2,
                 "y2": c.box.y2, "label": c.box.label or display_name(c.finding)}
            )
        for a in e.artifacts:
            if a.kind == "heatmap":
                heatmaps.append(
                    {"finding": a.finding, "uri": a.uri, "box": a.box.model_dump() if a.box is not None else None}
                )
    return {
        "study_id": study_id,
        "intent": route.get("intent"),
        "demo": demo,
        "boxes": boxes,
        "heatmaps": heatmaps,
        "unavailable": sorted({e.tool for e in unavailable(evidence)}),
        "decisions": [d.model_dump(mode="json", exclude={"calls", "reasons"}) for d in decisions],
    }
