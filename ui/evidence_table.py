"""The evidence panel's data: one row per finding, one column per source, the decision beside it.

Pure functions over knowledge.evidence types (or their dict form, as they come back from a
checkpoint), so the table can be tested without Streamlit. Wording is deliberate: the
classifier's number is an operating-point-normalised score (0.5 = at its threshold), never a
probability; retrieval is a prevalence among similar prior reports, never a vote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agents.replying.roles import ToolRoles
from knowledge.evidence import Decision, Evidence, FindingCall, RetrievedReport, Status
from knowledge.vocabulary import FINDINGS, display_name


def _roles(roles: ToolRoles | None) -> ToolRoles:
    """The turn's roles (its record's), else the built-ins' (a table drawn without a turn record)."""
    return roles or ToolRoles.builtin()


COL_FINDING = "Finding"
COL_DECISION = "Decision"
COL_CONFIDENCE = "Confidence"
COL_VLM = "VLM (RadVLM)"
COL_CLASSIFIER = "Classifier op-point score (0.5 = threshold)"
COL_RETRIEVAL = "Retrieval prevalence"
COL_OTHER = "Other tools"
COL_CONFLICT = "Conflict"
COL_VERIFICATION = "Verification"
COL_RATIONALE = "Rationale"
COLUMNS = (
    COL_FINDING,
    COL_DECISION,
    COL_CONFIDENCE,
    COL_VLM,
    COL_CLASSIFIER,
    COL_RETRIEVAL,
    COL_OTHER,
    COL_CONFLICT,
    COL_VERIFICATION,
    COL_RATIONALE,
)

_STATUS_TEXT = {Status.present: "present", Status.absent: "absent", Status.uncertain: "uncertain"}
CONFLICT_MARK = "\u26a0 conflict"  # plain U+26A0: renders with common system fonts
REVIEW_MARK = "review"


def as_evidence(items: Iterable[Evidence | Mapping[str, Any]] | None) -> list[Evidence]:
    """Evidence objects from objects or dicts (checkpoints may hold either); bad items are skipped."""
    out: list[Evidence] = []
    for item in items or []:
        try:
            out.append(item if isinstance(item, Evidence) else Evidence.model_validate(item))
        except (ValueError, TypeError):
            continue
    return out


def as_decisions(items: Iterable[Decision | Mapping[str, Any]] | None) -> list[Decision]:
    """Decision objects from objects or dicts; bad items are skipped."""
    out: list[Decision] = []
    for item in items or []:
        try:
            out.append(item if isinstance(item, Decision) else Decision.model_validate(item))
        except (ValueError, TypeError):
            continue
    return out


def _status_text(status: Status) -> str:
    return _STATUS_TEXT.get(status, str(status))


def _fmt_vlm(calls: Sequence[FindingCall]) -> str:
    if not calls:
        return ""
    statuses = list(dict.fromkeys(c.status for c in calls))
    text = " / ".join(s.value for s in statuses)
    if any(c.box is not None for c in calls):
        text += " (box)"
    return text


def _fmt_classifier(calls: Sequence[FindingCall]) -> str:
    scored = [c for c in calls if c.score is not None]
    if not scored:
        return " / ".join(dict.fromkeys(c.status.value for c in calls))
    c = max(scored, key=lambda c: c.score or 0.0)
    kind = "" if c.score_kind in (None, "op_norm") else f" [{c.score_kind}]"
    return f"{c.score:.2f}{kind} -> {c.status.value}"


def _fmt_retrieval(calls: Sequence[FindingCall], k: int) -> str:
    scored = [c for c in calls if c.score is not None]
    if not scored:
        return ""
    frac = max(c.score or 0.0 for c in scored)
    if k > 0:
        return f"{round(frac * k)}/{k} priors"
    return f"{frac:.0%} of priors"


def _fmt_other(calls: Sequence[FindingCall]) -> str:
    parts = []
    for c in calls:
        score = f" {c.score:.2f}" if c.score is not None else ""
        parts.append(f"{c.source}: {c.status.value}{score}")
    return "; ".join(dict.fromkeys(parts))


def _retrieval_k(evidence: Sequence[Evidence], priors: Sequence[str]) -> int:
    for ev in evidence:
        if ev.tool in priors and ev.ok:
            k = ev.meta.get("k") if isinstance(ev.meta, dict) else None
            return len(ev.neighbors) or (int(k) if isinstance(k, int | float) else 0)
    return 0


def build_rows(
    evidence: Iterable[Evidence | Mapping[str, Any]] | None,
    decisions: Iterable[Decision | Mapping[str, Any]] | None,
    *,
    verifications: Mapping[str, str] | None = None,
    roles: ToolRoles | None = None,
) -> list[dict[str, Any]]:
    """One row per finding: decided findings first (conflicts, then present, by confidence),
    then findings only an image source or custom tool mentioned. Retrieval-only findings are
    left out: a prior is context, not a finding on this image. ``roles`` (the turn record's) decide
    the source columns: report writers -> the VLM column, other image sources -> the classifier column,
    similar-case priors -> retrieval, any other tool -> "Other tools"; default: the built-ins'."""
    evs = as_evidence(evidence)
    decs = as_decisions(decisions)
    verifications = dict(verifications or {})
    roles = _roles(roles)
    writers, scorers, neighbours = frozenset(roles.writers), frozenset(roles.scorers), frozenset(roles.neighbours)
    named = writers | scorers | neighbours
    k = _retrieval_k(evs, roles.neighbours)

    by_finding: dict[str, dict[str, list[FindingCall]]] = {}
    for ev in evs:
        for call in ev.calls:
            by_finding.setdefault(call.finding, {}).setdefault(call.source, []).append(call)
    decided = {d.finding: d for d in decs}
    for d in decs:  # calls the decision cites but a tool's evidence did not list (e.g. verification)
        for call in d.calls:
            bucket = by_finding.setdefault(d.finding, {}).setdefault(call.source, [])
            if call not in bucket:
                bucket.append(call)

    findings = list(decided)
    for f, sources in by_finding.items():
        if f not in decided and any(s not in neighbours for s in sources):
            findings.append(f)

    order = {f: i for i, f in enumerate(FINDINGS)}

    def sort_key(f: str) -> tuple:
        d = decided.get(f)
        if d is None:
            return (3, 0.0, order.get(f, 99))
        rank = 0 if d.conflict or d.needs_review else (1 if d.status == Status.present else 2)  # flagged first
        return (rank, -d.confidence, order.get(f, 99))

    rows = []
    for f in sorted(findings, key=sort_key):
        d = decided.get(f)
        sources = by_finding.get(f, {})
        others = [c for s, cs in sources.items() if s not in named for c in cs]

        def of(names: frozenset[str], _sources: dict[str, list[FindingCall]] = sources) -> list[FindingCall]:
            return [c for s, cs in _sources.items() if s in names for c in cs]

        conflict = bool(d and d.conflict)
        review = bool(d and d.needs_review)
        verification = (d.verification if d and d.verification else None) or verifications.get(f, "")
        rows.append(
            {
                COL_FINDING: display_name(f),
                COL_DECISION: _status_text(d.status) if d else "not decided",
                COL_CONFIDENCE: round(d.confidence, 2) if d else None,
                COL_VLM: _fmt_vlm(of(writers)),
                COL_CLASSIFIER: _fmt_classifier(of(scorers)),
                COL_RETRIEVAL: _fmt_retrieval(of(neighbours), k),
                COL_OTHER: _fmt_other(others),
                COL_CONFLICT: CONFLICT_MARK if conflict else (REVIEW_MARK if review else ""),
                COL_VERIFICATION: verification,
                COL_RATIONALE: d.rationale if d else "",
                "_finding_id": f,
                "_conflict": conflict,
            }
        )
    return rows


def to_dataframe(rows: Sequence[Mapping[str, Any]]):
    """The rows as a pandas DataFrame with the display columns only (internal keys dropped)."""
    import pandas as pd

    df = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    # Drop source columns no row uses (e.g. no custom tools) so the table stays readable.
    keep = [c for c in df.columns if c in (COL_FINDING, COL_DECISION, COL_CONFIDENCE, COL_CONFLICT) or df[c].astype(str).str.strip().replace("None", "").any()]
    return df[keep]


def style_conflicts(df):
    """Highlight conflicting / needs-review rows (pandas Styler)."""

    def _row(row):
        mark = str(row.get(COL_CONFLICT, ""))
        if mark.startswith(CONFLICT_MARK):
            return ["background-color: rgba(255, 80, 80, 0.25)"] * len(row)
        if mark.startswith(REVIEW_MARK):
            return ["background-color: rgba(255, 200, 0, 0.20)"] * len(row)
        return [""] * len(row)

    return df.style.apply(_row, axis=1).format({COL_CONFIDENCE: "{:.2f}"}, na_rep="")


def prior_reports(evidence: Iterable[Evidence | Mapping[str, Any]] | None) -> list[RetrievedReport]:
    """The similar prior reports retrieval returned this turn, most similar first."""
    out: list[RetrievedReport] = []
    for ev in as_evidence(evidence):
        out.extend(ev.neighbors)
    return sorted(out, key=lambda r: -r.score)


def tool_summary(evidence: Iterable[Evidence | Mapping[str, Any]] | None,
                 roles: ToolRoles | None = None) -> list[dict[str, Any]]:
    """Per tool: ok/failed, latency and error, for a compact footer under the table."""
    image_sources = _roles(roles).image_sources
    rows = []
    for ev in as_evidence(evidence):
        purpose = ev.meta.get("verification") if isinstance(ev.meta, dict) else None
        rows.append(
            {
                "tool": f"{ev.tool} (re-ask: {display_name(str(purpose))})" if purpose else ev.tool,
                "ok": ev.ok,
                "latency_ms": round(ev.latency_ms) if ev.latency_ms is not None else None,
                "error": ev.error or "",
                "image_source": ev.tool in image_sources,
            }
        )
    return rows
