"""The replies that do not reconcile image evidence this turn: similar prior cases, the explanation of
stored decisions (the full rationale, every call and quote: the place the compact replies point to),
and free chat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.replying.parts import unavailable
from agents.replying.phrases import STATUS_WORD, cap, cite_decision
from agents.replying.roles import ToolRoles
from knowledge.evidence import Decision, Evidence
from knowledge.vocabulary import display_name


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def retrieval_context(evidence: Sequence[Evidence], roles: ToolRoles) -> list[str]:
    """What the similar prior reports mention, counted (a prior shown beside the list of them)."""
    r = roles.neighbour_evidence(evidence)
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


def similar_reply(evidence: Sequence[Evidence], roles: ToolRoles) -> list[str]:
    r = roles.neighbour_evidence(evidence)
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
    lines += ["", *retrieval_context(evidence, roles), "_Neighbours are a prior from other patients' reports, not evidence about this image._"]
    return lines


def explain_reply(prior: dict[str, Any] | None, *, roles: ToolRoles, finding: str | None = None) -> list[str]:
    """Rationales of stored decisions; only the asked-about finding's when the turn names one."""
    if not prior or not prior.get("decisions"):
        return ["There is nothing to explain yet: no findings have been reconciled in this conversation. "
                "Ask for a report or about a finding first."]
    decisions: list[Decision] = list(prior["decisions"])
    evidence: list[Evidence] = prior.get("evidence") or []
    k = roles.k(evidence)
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
        line = f"- **{display_name(d.finding)}** → {STATUS_WORD[d.status]} (confidence {d.confidence:.2f}). "
        line += d.rationale or "No rationale recorded."
        if d.agreeing:
            line += f" Agreeing: {', '.join(d.agreeing)}."
        if d.disagreeing:
            line += f" Disagreeing: {', '.join(d.disagreeing)}."
        if d.verification:
            line += f" {_sentence(d.verification)}"
        if d.needs_review:
            line += " Flagged for human review."
        report = next((e.report for e in evidence if e.ok and e.report and e.tool in roles.writers), None)
        lines.append(f"{line} {cite_decision(d, k=k, report=report)}")
    if others:
        lines += ["", "Other conclusions on record: "
                  + ", ".join(f"{display_name(d.finding).lower()} ({STATUS_WORD[d.status]})" for d in others)
                  + ". Ask about any of them."]
    bad = unavailable(evidence)
    if bad:
        lines += ["", f"_Unavailable in that turn: {', '.join(e.tool for e in bad)}._"]
    return lines


def chat_reply(evidence: Sequence[Evidence], roles: ToolRoles) -> list[str]:
    vlm = roles.writer_evidence(evidence)
    lines: list[str] = []
    if vlm is not None and vlm.ok and (vlm.answer or vlm.report):
        lines.append((vlm.answer or vlm.report or "").strip())
    elif vlm is not None:
        lines.append(f"{cap(roles.label(vlm.tool))} could not answer this turn ({vlm.error or 'no answer'}).")
    custom = [f"- **{e.tool}**: {e.answer}" for e in roles.custom(evidence)]
    if custom:
        lines += ["", *custom]
    if not lines:
        lines.append("No tool could answer this turn.")
    return lines
