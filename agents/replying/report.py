"""A report turn's reply: what needs review, the report as written, the other findings in one table.

Each finding is named once. A finding needs review when it is flagged, or when the decision differs
from what the report as written says; its line says who says what (a score, or a short quote that
keeps its negation) and what the re-ask did. Rationales stay in "Why?" answers and the payload.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.replying.parts import Row, unavailable_line
from agents.replying.phrases import OP_THRESHOLD, STATUS_WORD, cap, quoted
from agents.replying.roles import ToolRoles
from knowledge.evidence import Decision, Evidence, FindingCall, Reason, Status
from knowledge.vocabulary import display_name

QUOTE_CHARS = 40  # a review line quotes a few words; the whole sentence is in the report right below


def differs_from_report(d: Decision, said: FindingCall | None, report: str | None) -> str | None:
    """How the decision departs from the report as written: "Added" (the report is silent or reads the study
    as normal, the decision is present), "Contradicted" (the report states another status), else None."""
    if not report or d.finding == "no_finding":
        return None
    if said is None or said.implied is not None:
        return "Added" if d.status is Status.present else None
    if said.task not in (None, "report"):  # the writer's list or boxes, not its report's words
        return None
    return "Contradicted" if said.status is not d.status else None


def _writer_says(call: FindingCall | None, roles: ToolRoles, report: str | None) -> str:
    if call is None:
        return f"not in {roles.short(roles.writers[0])} report" if report and roles.writers else ""
    who = roles.short(call.source)
    if call.implied == "normal_study":
        return f"{who} report reads the study as normal"
    if call.implied == "report_silence":
        return f"not in {who} report"
    if call.task == "classification":
        return f"{who} list has it" if call.status is Status.present else f"not in {who} list"
    if call.task == "detection":
        return f"{who} boxes it"
    said = quoted(call, report, limit=QUOTE_CHARS)
    return f"{who} report {said} ({STATUS_WORD[call.status]})" if said else f"{who} report: {STATUS_WORD[call.status]}"


def _scored(call: FindingCall, roles: ToolRoles) -> str:
    who = roles.short(call.source)
    if call.score is not None and call.score_kind in ("op_norm", "probability"):  # the legend gives the threshold
        return f"{who} {call.score:.2f}" + (" (uncertain)" if call.status is Status.uncertain else "")
    return f"{who}: {STATUS_WORD[call.status]}"


_UNRESOLVED = {"not_addressed": "not about this finding", "box_no_overlap": "its box misses the heatmap", "no_box": "no box to compare",
               "uncertain_answer": "", "maintained": "kept its answer"}


def reask_said(reasons: Sequence[Reason], roles: ToolRoles) -> str:
    """What the targeted re-ask did, in a few words ("" when none ran)."""
    r = next((r for r in reversed(reasons) if r.rule.startswith("reask_")), None)
    if r is None:
        return ""
    asked = roles.short(r.asked or (r.answer.source if r.answer is not None else "") or "") or "re-asked tool"
    if r.answer is None:
        return f"re-asking {asked} failed" if r.cause == "tool_failed" else f"re-asked {asked}: no answer"
    answer = STATUS_WORD[r.answer.status]
    tail = {"reask_agrees": "now agreeing", "reask_overrules": "outweighs a moderate score",
            "reask_box_overlap": "its box overlaps the heatmap"}.get(r.rule) or _UNRESOLVED.get(r.cause or "", "")
    return f"re-asked {asked}: {answer}" + (f", {tail}" if tail else "")


def review_line(d: Decision, roles: ToolRoles, report: str | None, kind: str | None) -> str:
    """One bullet: the finding once, who says what, the re-ask, the outcome."""
    name = display_name(d.finding)
    if kind is None:
        kind = "unresolved" if d.conflict else "flagged"
    elif d.needs_review:
        kind += ", flagged"
    own = roles.writer_call(d)
    says = [_writer_says(own, roles, report)]
    seen = {own.source} if own is not None else set()
    for c in d.calls:
        if c.task == "verification" or c.score_kind == "neighbor_fraction" or c.source in roles.priors:
            continue
        if c.source in roles.writers:  # the writer's own statement is told once, above
            continue
        if c.source not in seen:
            seen.add(c.source)
            says.append(_scored(c, roles))
    says.append(reask_said(d.reasons, roles))
    outcome = f"{STATUS_WORD[d.status]} ({d.confidence:.2f})"
    return f"- **{name}** ({kind}): {'; '.join(s for s in says if s)} → {outcome}."


def same_way_line(ds: Sequence[Decision], roles: ToolRoles, writer: str, kind: str, said: Status,
                  status: Status) -> str:
    """Unflagged findings that differ from the report the same way: one line, each named once with its scores."""
    scored = {d.finding: [c for c in d.calls if c.source in roles.scorers and c.task != "verification"] for d in ds}
    sources = {c.source for cs in scored.values() for c in cs}
    who = writer.removeprefix("the ")
    head = (f"Not in {who} report, added as {STATUS_WORD[status]}" if kind == "Added"
            else f"{who} report says {STATUS_WORD[said]}, decided {STATUS_WORD[status]}")
    if len(sources) == 1 and all(len(cs) == 1 and cs[0].score is not None for cs in scored.values()):
        # one scorer behind every finding: name it once, then each finding with its score
        items = [f"**{display_name(d.finding)}** {scored[d.finding][0].score:.2f}" for d in ds]
        return f"- {head} ({roles.short(sources.pop())} score): {', '.join(items)}."
    items = [f"**{display_name(d.finding)}** ({', '.join(_scored(c, roles) for c in scored[d.finding]) or f'{d.confidence:.2f}'})"
             for d in ds]
    return f"- {head}: {', '.join(items)}."


def _sources(d: Decision, roles: ToolRoles, k: int | None) -> str:
    out: list[str] = []
    for c in d.calls:
        if c.task == "verification":
            continue
        if c.score_kind == "neighbor_fraction":  # a prior: counted in the context line, the fraction in the payload
            continue
        if c.score is not None and c.score_kind in ("op_norm", "probability"):
            bit = f"{roles.short(c.source)} {c.score:.2f}"
        elif c.implied == "report_silence":
            bit = f"{roles.short(c.source)} (silent)"
        else:
            bit = roles.short(c.source)
        if not any(o.split(" ")[0] == bit.split(" ")[0] for o in out):
            out.append(bit)
    return ", ".join(out) or "none"


def table(decisions: Sequence[Decision], roles: ToolRoles, k: int | None) -> list[Row]:
    """One row per finding present; the uncertain ones, and the absent ones, share a row naming each."""
    rows = [Row(display_name(d.finding), STATUS_WORD[d.status], f"{d.confidence:.2f}", _sources(d, roles, k))
            for d in decisions if d.status is Status.present]
    unsure = [d for d in decisions if d.status is Status.uncertain and d.finding != "no_finding"]
    if len(unsure) == 1:
        rows.append(Row(display_name(unsure[0].finding), "uncertain", f"{unsure[0].confidence:.2f}",
                        _sources(unsure[0], roles, k)))
    elif unsure:
        rows.append(_grouped(unsure, Status.uncertain, roles))
    absent = [d for d in decisions if d.status is Status.absent and d.finding != "no_finding"]
    if absent:
        rows.append(_grouped(absent, Status.absent, roles))
    return rows


def _grouped(ds: Sequence[Decision], status: Status, roles: ToolRoles) -> Row:
    """One row for several findings of one status: each named, the confidence range, the sources."""
    lo, hi = min(d.confidence for d in ds), max(d.confidence for d in ds)
    names = ", ".join(display_name(d.finding) for d in ds)
    srcs = ", ".join(dict.fromkeys(roles.short(c.source) for d in ds for c in d.calls
                                   if c.task != "verification" and c.score_kind != "neighbor_fraction"))
    return Row(names, STATUS_WORD[status], f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}", srcs or "none")


def retrieval_line(evidence: Sequence[Evidence], roles: ToolRoles) -> str | None:
    """How many similar prior reports were found, and how many are normal (their mentions sit in the table)."""
    r = roles.neighbour_evidence(evidence)
    if r is None or not r.ok:
        return None
    k = len(r.neighbors)
    if not k:
        return "No similar prior reports found."
    normal = sum(1 for n in r.neighbors if "no_finding" in n.labels)
    return f"Priors: {k} similar prior reports ({normal} normal), context, not a vote."


def report_fields(evidence: Sequence[Evidence], decisions: Sequence[Decision], *, roles: ToolRoles) -> dict:
    """The ReplyParts fields of a report turn."""
    writer_ev = roles.writer_evidence(evidence)
    report = writer_ev.report if writer_ev is not None and writer_ev.ok and writer_ev.report else None
    writer = roles.writer_label(writer_ev)
    k = roles.k(evidence)
    review: list[str] = []
    # Unflagged findings that differ from the report the same way share one line (each named once):
    # "Added" ones, and contradictions grouped by what the report said and what was decided.
    same_way: dict[tuple[str, Status, Status], list[Decision]] = {}
    rest: list[Decision] = []
    for d in decisions:
        said = roles.writer_call(d)
        kind = differs_from_report(d, said, report)
        if kind is not None and not d.needs_review:
            key = (kind, said.status if kind == "Contradicted" and said is not None else Status.absent, d.status)
            same_way.setdefault(key, []).append(d)
        elif kind is not None or (d.needs_review and d.finding != "no_finding"):
            review.append(review_line(d, roles, report, kind))
        else:
            rest.append(d)
    count = len(review) + sum(len(ds) for ds in same_way.values())
    for (kind, said_status, status), ds in same_way.items():
        if kind == "Contradicted" and len(ds) == 1:
            review.append(review_line(ds[0], roles, report, kind))
        else:
            review.append(same_way_line(ds, roles, writer, kind, said_status, status))
    consequence = ""
    no_report = None
    if report is None:
        if writer_ev is None:
            no_report = "No report writer ran; the findings below come from the other tools."
        elif writer_ev.ok:
            no_report = f"{cap(writer)} returned no report text; the findings below come from the other tools."
        else:
            consequence = "No report was written; the findings come from the other tools."
    context: list[str] = []
    if decisions and not review:
        context.append("No conflicts between image sources" + ("; every decision matches the report." if report else "."))
    legend = []
    if any(c.score_kind == "op_norm" for d in decisions for c in d.calls):
        legend.append(f"Classifier: op-point scores (threshold {OP_THRESHOLD:g}), not probabilities.")
    if line := retrieval_line(evidence, roles):
        legend.append(line)
    if legend:
        context.append(" ".join(legend))
    context += [f"- **{e.tool}**: {e.answer}" for e in roles.custom(evidence)]
    return {"review": tuple(review), "review_count": count, "writer": writer, "report": report,
            "truncated": bool(writer_ev is not None and writer_ev.truncated and report),
            "no_report": no_report, "table": tuple(table(rest, roles, k)), "context": tuple(context),
            "unavailable": unavailable_line(evidence, consequence=consequence), "disclaimer": True}
