"""The replies that do not reconcile image evidence: similar prior cases, explanations of stored
decisions, free chat, and the UI payload beside every reply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.replying.lines import (
    _STATUS_WORD,
    _by_tool,
    _custom_lines,
    _k,
    _roles,
    _sentence,
    _unavailable_lines,
    unavailable,
)
from agents.replying.phrases import cap, cite_decision
from knowledge.evidence import Decision, Evidence, Status
from knowledge.vocabulary import display_name


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
        lines.append(f"{cap(_roles().label(vlm.tool))} could not answer this turn ({vlm.error or 'no answer'}).")
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
            if a.kind == "boxes" and a.box is not None and a.meta.get("location_only"):
                # A VLM grounding box: drawn as a location, never counted as a finding call.
                key = (a.finding, e.tool, a.box.x1, a.box.y1, a.box.x2, a.box.y2)
                if key not in seen:
                    seen.add(key)
                    boxes.append({"finding": a.finding or "", "source": e.tool, "x1": a.box.x1, "y1": a.box.y1,
                                  "x2": a.box.x2, "y2": a.box.y2, "location_only": True,
                                  "label": f"{a.meta.get('target') or a.box.label or 'region'} (location)"})
            if a.kind == "heatmap":
                heatmaps.append(
                    {"finding": a.finding, "source": e.tool, "uri": a.uri,
                     "box": a.box.model_dump() if a.box is not None else None}
                )
    return {
        "study_id": study_id,
        "intent": route.get("intent"),
        "finding": route.get("finding"),  # what the turn asked about: a later "where is it?" refers to it
        "findings": list(route.get("findings") or []),
        "demo": demo,
        "boxes": boxes,
        "heatmaps": heatmaps,
        "unavailable": sorted({e.tool for e in unavailable(evidence)}),
        "decisions": [d.model_dump(mode="json", exclude={"calls", "reasons"}) for d in decisions],
    }
