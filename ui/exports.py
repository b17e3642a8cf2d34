"""Downloadable records of a conversation: a Markdown report and structured JSON findings.

Both carry the disclaimer (and the demo warning when the models are random-weight), the
de-identified study facts only, and every decision with the evidence it rests on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Decision
from knowledge.markdown import defang
from ui.evidence_table import (
    COL_CLASSIFIER,
    COL_CONFLICT,
    COL_DECISION,
    COL_FINDING,
    COL_RETRIEVAL,
    COL_VLM,
    build_rows,
)
from ui.turn import TurnResult


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _md_cell(value: Any) -> str:
    return defang(str("" if value is None else value)).replace("|", "\\|").replace("\n", " ")


def findings_markdown_table(turn: TurnResult) -> str:
    """The turn's decisions as a Markdown table (empty string when there are none)."""
    rows = build_rows(turn.evidence, turn.decisions, verifications=turn.verifications, roles=turn.roles)
    if not rows:
        return ""
    cols = [COL_FINDING, COL_DECISION, "Confidence", COL_VLM, COL_CLASSIFIER, COL_RETRIEVAL, COL_CONFLICT, "Verification"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        conf = r.get("Confidence")
        cells = [r.get(c) if c != "Confidence" else (f"{conf:.2f}" if conf is not None else "") for c in cols]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


_HEADING = re.compile(r"^(#{1,6})(\s)", re.MULTILINE)


def nest_headings(text: str, under: int) -> str:
    """Headings inside a reply, moved below a heading of level ``under`` (a reply's "## Report" under
    "### Turn 2" becomes "#### Report"), so the file's outline reads top-down."""
    return _HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + under) + m.group(2), text)


def conversation_markdown(
    turns: Sequence[TurnResult],
    *,
    study_facts: Mapping[str, Any] | None = None,
    demo: bool = False,
    thread_id: str | None = None,
    study_labels: Mapping[str, str] | None = None,
    studies_facts: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The whole conversation as a Markdown report: facts, each exchange, each turn's findings.

    Every turn names the study it was about (``study_labels``: study id -> the page's label). When the
    conversation holds several studies, ``studies_facts`` (label -> facts) describes each of them, so the
    file never presents the study on screen as the one every turn concerns."""
    out = ["# cxr-agent conversation report", ""]
    if demo:
        out += [f"> **{DEMO_WARNING}**", ""]
    out += [f"> {DISCLAIMER}", "", f"Generated {_now()}" + (f" - conversation `{thread_id}`" if thread_id else ""), ""]
    if studies_facts and len(studies_facts) > 1:
        out += ["## Studies (de-identified)", ""]
        for label, facts in studies_facts.items():
            out += [f"### {label}", ""] + [f"- **{k}**: {v}" for k, v in facts.items()] + [""]
    elif study_facts:
        out += ["## Study (de-identified)", ""]
        out += [f"- **{k}**: {v}" for k, v in study_facts.items()]
        out.append("")
    out += ["## Conversation", ""]
    for i, t in enumerate(turns, 1):
        # model, corpus and user text: defanged as on screen, so a viewer of the file fetches and links nothing
        out += [f"### Turn {i}", "", f"**Study:** {_study_name(t, study_labels)}", "",
                f"**Clinician:** {defang(t.user_text)}", ""]
        if t.stopped:
            out += ["**Assistant:** _(stopped; no answer kept)_", ""]
            continue
        if t.error:
            out += [f"**Assistant:** _(error: {t.error})_", ""]
            continue
        out += ["**Assistant:**", "", nest_headings(defang(t.reply.strip()), 3), ""]
        table = findings_markdown_table(t)
        if table:
            out += ["**Structured findings (this turn):**", "", table, ""]
        if t.failed_tools:
            out += [f"_Unavailable this turn: {', '.join(t.failed_tools)}._", ""]
    return "\n".join(out).rstrip() + "\n"


def _study_name(turn: TurnResult, labels: Mapping[str, str] | None) -> str:
    sid = turn.study_id or turn.cxr.get("study_id")
    if not sid:
        return "none (no image was used)"
    return (labels or {}).get(sid) or f"study {str(sid)[:12]}"


def findings_json(
    turns: Sequence[TurnResult],
    *,
    study_facts: Mapping[str, Any] | None = None,
    demo: bool = False,
    thread_id: str | None = None,
    studies_facts: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """Decisions and evidence per turn, as JSON (pydantic's own serialisation of the types); ``studies``
    describes every study of the conversation (label -> facts) when it holds several."""
    doc = {
        "generator": "cxr-agent",
        "generated_at": _now(),
        "thread_id": thread_id,
        "demo": demo,
        "disclaimer": DISCLAIMER,
        "demo_warning": DEMO_WARNING if demo else None,
        "study": dict(study_facts or {}),
        "studies": {label: dict(facts) for label, facts in (studies_facts or {}).items()},
        "turns": [
            {
                "user": t.user_text,
                "reply": t.reply,
                "intent": t.intent,
                "error": t.error,
                "study_id": t.study_id,
                "decisions": [d.model_dump(mode="json") for d in t.decisions],
                "evidence": [e.model_dump(mode="json") for e in t.evidence],
                "verifications": dict(t.verifications),
                "boxes": list(t.cxr.get("boxes") or []),
                "unavailable": list(t.cxr.get("unavailable") or []),
            }
            for t in turns
        ],
    }
    return json.dumps(doc, indent=2, default=str)


# --- DICOM SR and FHIR downloads -------------------------------
def latest_findings_turn(turns: Sequence[TurnResult], study_id: str | None = None) -> TurnResult | None:
    """The most recent turn with reconciled findings, about ``study_id`` when given: with the study's
    evidence ledger its decisions are that study's current decisions, whatever the turn asked."""
    return next((t for t in reversed(turns) if t.decisions and not t.error
                 and (study_id is None or (t.study_id or t.cxr.get("study_id")) == study_id)), None)


def report_text(turns: Sequence[TurnResult], turn: TurnResult) -> str:
    """The report an export carries: the latest written report on the turn's study (a follow-up's
    reply answers one question, it is not the report), else the turn's own reply."""
    sid = turn.study_id or turn.cxr.get("study_id")
    report = next((t for t in reversed(turns) if t.intent == "report" and t.answered
                   and (t.study_id or t.cxr.get("study_id")) == sid), None)
    return (report or turn).reply


def studies_with_findings(turns: Sequence[TurnResult]) -> list[str]:
    """The studies the conversation has findings for, in the order they first appeared."""
    out: list[str] = []
    for t in turns:
        sid = t.study_id or t.cxr.get("study_id")
        if t.decisions and not t.error and sid and sid not in out:
            out.append(sid)
    return out


def study_comparison(turns: Sequence[TurnResult], study: Any, studies: Callable[[str], Any] | None = None
                     ) -> tuple[list[Any], Any]:
    """(the change entries, the prior's de-identified reference header) of the conversation's latest
    comparison of ``study``; the prior is looked up with ``studies`` (the store): ([], None) when there was
    no comparison, no header when the store no longer holds the prior."""
    from agents.turn.comparison import recorded_changes

    found = recorded_changes((t.cxr for t in turns), getattr(study, "id", "")) if study is not None else None
    if found is None:
        return [], None
    prior = None
    if studies is not None:
        try:
            prior = studies(found.prior_study_id)
        except Exception:  # noqa: BLE001 - gone from the store: the changes go out without its reference
            prior = None
    if prior is None:
        return list(found.changes), None
    from tools.interop.sr import deidentified_source

    return list(found.changes), deidentified_source(prior)


def dicom_sr_bytes(turns: Sequence[TurnResult], study: Any, *, demo: bool = False,
                   decisions: Sequence[Decision] | None = None,
                   studies: Callable[[str], Any] | None = None) -> bytes | None:
    """The study's current findings as a DICOM SR file, written against the DE-IDENTIFIED study.

    ``decisions``: the study's current decisions when the caller has them (the thread's state, see
    agents.memory.ledger.study_decisions); else those of the latest turn about this study.
    ``studies``: the study store's lookup; after a comparison turn the SR then references the prior and
    carries each change since it (without the prior in the store, it carries none: an SR change group must
    reference both images).

    A download never carries the PACS patient module: the SR references the UIDs minted from the
    study's pixel hash (tools.interop.sr.deidentified_source). `pacs push` is what writes against
    the PACS source. None when no turn has findings yet."""
    import io

    from tools.interop.sr import build_sr, deidentified_source

    turn = latest_findings_turn(turns, getattr(study, "id", None))
    if turn is None or study is None:
        return None
    changes, prior = study_comparison(turns, study, studies)
    sr = build_sr(deidentified_source(study), decisions=list(decisions or turn.decisions), evidence=turn.evidence,
                  report_text=report_text(turns, turn), demo=demo, prior=prior,
                  changes=changes if prior is not None else ())
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def fhir_report_json(turns: Sequence[TurnResult], study: Any = None, *, demo: bool = False,
                     decisions: Sequence[Decision] | None = None,
                     studies: Callable[[str], Any] | None = None) -> str | None:
    """The study's current findings as a FHIR R4B Bundle (DiagnosticReport + Observations + Device), validated.

    The imaging study is referenced by the de-identified study's UID, like the SR download; after a
    comparison turn, one Observation per change since the prior (whose UID joins when ``studies`` holds it)."""
    from tools.interop.fhir import build_fhir_bundle, fhir_json
    from tools.interop.sr import deidentified_source

    turn = latest_findings_turn(turns, getattr(study, "id", None))
    if turn is None:
        return None
    uid = deidentified_source(study).StudyInstanceUID if study is not None else None
    changes, prior = study_comparison(turns, study, studies)
    return fhir_json(build_fhir_bundle(decisions=list(decisions or turn.decisions), evidence=turn.evidence,
                                       report_text=report_text(turns, turn),
                                       demo=demo, study_uid=uid, changes=changes,
                                       prior_study_uid=prior.StudyInstanceUID if prior is not None else None))
