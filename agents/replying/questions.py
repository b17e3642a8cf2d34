"""Replies to a question about findings: "Is there X?" (a yes/no per finding) and "Where is X?" (boxes).

Compact like the report reply: the answer, what it does not settle, each source's call in a few words;
the rationale is a "Why?" away and every call, score and box is in the payload.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.replying.phrases import (
    STATUS_WORD,
    STATUS_WORDS,
    aspect_line,
    cap,
    cite,
    fmt_box,
    region,
    side_line,
)
from agents.replying.quotes import quote_text
from agents.replying.report import reask_said
from agents.replying.roles import ToolRoles
from agents.routing.rules import Route
from knowledge.evidence import Box, Decision, Evidence, Status
from knowledge.vocabulary import display_name

WHY_HINT = "Ask “why?” for the full rationale."


def _target(route: Route, unnamed: str) -> tuple[str | None, str]:
    finding = route.finding
    label = display_name(finding) if finding else (route.phrase or unnamed)
    return finding, label


def answer_lines(answered: Evidence, roles: ToolRoles) -> list[str]:
    """The writer's answer as a bullet; one nested bullet per finding when it answered several."""
    who = roles.short(answered.tool)
    text = (answered.answer or "").strip()
    if "\n" not in text:
        return [f"- {who} answer: {text}"]
    return [f"- {who} answers:", *(f"  - {line.strip()}" for line in text.splitlines() if line.strip())]


def outcome(d: Decision, roles: ToolRoles) -> str:
    """The decision in one line: status, confidence, and whether it stays open."""
    line = f"{STATUS_WORD[d.status]} (confidence {d.confidence:.2f})"
    if d.conflict or d.verification:
        said = reask_said(d.reasons, roles)
        line += "; image sources disagreed" + (f"; {said}" if said else "")
        line += "; **unresolved, flagged for human review**" if d.needs_review else "; resolved"
    elif d.needs_review:
        line += "; **flagged for review**"
    return line


def _report_of(evidence: Sequence[Evidence], source: str) -> str | None:
    return next((e.report for e in evidence if e.tool == source and e.ok and e.report), None)


def finding_body(route: Route, evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                 roles: ToolRoles, view: str | None = None) -> list[str]:
    """The answer to a yes/no question: one block per finding it names ("pneumothorax or effusion?" gets two)."""
    named = [f for f in route.findings if f] or [route.finding]
    lines: list[str] = []
    for i, finding in enumerate(dict.fromkeys(named)):
        lines += ([""] if i else []) + _finding_block(route.model_copy(update={"finding": finding}), evidence, decisions,
                                                      roles=roles, view=view)
    if (answered := roles.writer_answer(evidence)) and not _cited(answered, named, decisions):
        lines += answer_lines(answered, roles)
    if any(d.finding in named for d in decisions):
        lines += ["", f"_{WHY_HINT}_"]
    return lines


def _cited(answered: Evidence, named: Sequence[str | None], decisions: Sequence[Decision]) -> bool:
    """Whether every line of the writer's answer is already a call the Sources lines quote (said once: the
    whole answer is in "why?" and the evidence panel)."""
    said = {(c.text or "").strip() for d in decisions if d.finding in named for c in d.calls
            if c.source == answered.tool and c.task != "verification" and c.text}
    text = (answered.answer or "").strip()
    return text in said or all(line.strip() in said for line in text.splitlines() if line.strip())


def _finding_block(route: Route, evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                   roles: ToolRoles, view: str | None) -> list[str]:
    finding, label = _target(route, "what you asked (no finding was recognised)")
    d = next((d for d in decisions if d.finding == finding), None) if finding else None
    if finding is None and not route.phrase and (free := roles.writer_answer(evidence)):
        return [f"**Not cross-checked:** the question names no finding the tools know, so "
                f"{roles.label(free.tool)} answered it in its own words below and no other tool checked "
                "the answer."]
    if finding is None and route.phrase:  # words outside the vocabulary: say so, never a disease's name
        free = roles.writer_answer(evidence)
        said = (f"{roles.label(free.tool)} answered it in its own words below and no other tool checked the answer"
                if free else "no tool gave a usable answer about it on this image")
        return [f"**Your words, no known finding:** '{route.phrase}' names no finding in the tools' vocabulary, "
                f"so it was asked as you wrote it; {said}."]
    if d is None:
        return [f"**Uncertain** — no tool gave a usable answer about {label.lower()} on this image."]
    lines = [f"**{STATUS_WORDS[d.status].answer}** — {label.lower()} {outcome(d, roles)}."]
    caveats: list[str] = []
    aspect = route.aspect
    if aspect and (d.status != Status.absent or aspect == "rule_out") and \
            (said := aspect_line(aspect, finding, label.lower(), d)):
        caveats.append(said)
    if route.side and d.status != Status.absent:  # "is there a RIGHT effusion?": only boxes show a side
        boxes = [c.box for c in d.calls if c.box is not None and c.status != Status.absent]
        boxes += [a.box for e in evidence if e.ok for a in e.artifacts
                  if a.kind == "boxes" and a.box is not None and a.finding == finding]
        caveats.append(side_line(route.side, boxes, view, label.lower()))
    for c in caveats:  # what the yes/no does not settle, each its own paragraph right under it
        lines += ["", c]
    k = roles.k(evidence)
    cites = [cite(c, k=k, report=_report_of(evidence, c.source)) for c in d.calls if c.task != "verification"]
    return [*lines, "", "**Sources:** " + "; ".join(cites) + "."]


def _px(box: Box, study: dict | None) -> str:
    if study and study.get("width") and study.get("height"):
        x1, y1, x2, y2 = box.to_pixels(study["width"], study["height"])
        return f" = pixels ({x1}, {y1})–({x2}, {y2})"
    return ""


def locate_body(route: Route, evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                roles: ToolRoles, study: dict | None = None) -> list[str]:
    """Where each named finding is ("where are they?" after a two-finding question gets a block each)."""
    named = list(dict.fromkeys(f for f in route.findings if f))
    if len(named) <= 1:
        return _locate_block(route, evidence, decisions, roles=roles, study=study, with_answer=True)
    lines: list[str] = []
    for i, finding in enumerate(named):
        lines += ([""] if i else []) + _locate_block(route.model_copy(update={"finding": finding, "phrase": None}), evidence,
                                                     decisions, roles=roles, study=study, with_answer=False)
    if answered := roles.writer_answer(evidence):
        lines += ["", *answer_lines(answered, roles)]
    return lines


LOCATE_QUOTE = 160  # characters of the writer's answer quoted beside the boxes

LOCATE_NOTE = ("Boxes are relative to the original image (0–1); image left is the patient's right on a frontal film. "
               "Heatmaps show what drove the classifier, not the lesion outline.")


def _locate_block(route: Route, evidence: Sequence[Evidence], decisions: Sequence[Decision], *,
                  roles: ToolRoles, study: dict | None, with_answer: bool) -> list[str]:
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
            what = f"{c.source} {c.score:.2f}" if c.score is not None else f"{c.source} says {STATUS_WORD[c.status]}"
            lines.append(f"- **{e.tool}**: {region(c.box, view)} — {fmt_box(c.box)}{_px(c.box, study)} ({what}).")
        for a in e.artifacts:
            if a.kind == "boxes" and a.box is not None and a.meta.get("location_only") \
                    and (finding is None or a.finding in (finding, None)):
                # A VLM grounding box: where the model would put it, not evidence that it is there.
                found = True
                lines.append(f"- **{e.tool}** location of {a.meta.get('target') or label}: {region(a.box, view)} — "
                             f"{fmt_box(a.box)}{_px(a.box, study)} (a location only, not evidence it is there).")
            if a.kind == "heatmap" and (finding is None or a.finding == finding):
                where = f" — hottest region {region(a.box, view)} ({fmt_box(a.box)})" if a.box else ""
                name = display_name(a.finding) if a.finding else label
                lines.append(f"- **{e.tool} heatmap** for {name}{where}.")
                found = found or a.box is not None
    if with_answer and (answered := roles.writer_answer(evidence)):
        # its words beside the boxes, quoted short: a long answer is whole in "why?" and the evidence panel
        lines.append(f"- {cap(roles.short(answered.tool))}: {quote_text(answered.answer or '', LOCATE_QUOTE)}")
    if not found:
        lines.append(f"No tool localised {label.lower()} on this image.")
    d = next((d for d in decisions if d.finding == finding), None) if finding else None
    if d is not None:
        lines += ["", f"Decision: {outcome(d, roles)}."]
    return lines
