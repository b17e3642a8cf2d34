"""Downloadable records of a conversation: a Markdown report and structured JSON findings.

Both carry the disclaimer (and the demo warning when the models are random-weight), the
de-identified study facts only, and every decision with the evidence it rests on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
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
    rows = build_rows(turn.evidence, turn.decisions, verifications=turn.verifications)
    if not rows:
        return ""
    cols = [COL_FINDING, COL_DECISION, "Confidence", COL_VLM, COL_CLASSIFIER, COL_RETRIEVAL, COL_CONFLICT, "Verification"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        conf = r.get("Confidence")
        cells = [r.get(c) if c != "Confidence" else (f"{conf:.2f}" if conf is not None else "") for c in cols]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def conversation_markdown(
    turns: Sequence[TurnResult],
    *,
    study_facts: Mapping[str, Any] | None = None,
    demo: bool = False,
    thread_id: str | None = None,
) -> str:
    """The whole conversation as a Markdown report: facts, each exchange, each turn's findings."""
    out = ["# cxr-agent conversation report", ""]
    if demo:
        out += [f"> **{DEMO_WARNING}**", ""]
    out += [f"> {DISCLAIMER}", "", f"Generated {_now()}" + (f" - conversation `{thread_id}`" if thread_id else ""), ""]
    if study_facts:
        out += ["## Study (de-identified)", ""]
        out += [f"- **{k}**: {v}" for k, v in study_facts.items()]
        out.append("")
    out += ["## Conversation", ""]
    for i, t in enumerate(turns, 1):
        # model, corpus and user text: defanged as on screen, so a viewer of the file fetches and links nothing
        out += [f"### Turn {i}", "", f"**Clinician:** {defang(t.user_text)}", ""]
        if t.error:
            out += [f"**Assistant:** _(error: {t.error})_", ""]
            continue
        out += ["**Assistant:**", "", defang(t.reply.strip()), ""]
        table = findings_markdown_table(t)
        if table:
            out += ["**Structured findings (this turn):**", "", table, ""]
        if t.failed_tools:
            out += [f"_Unavailable this turn: {', '.join(t.failed_tools)}._", ""]
    return "\n".join(out).rstrip() + "\n"


def findings_json(
    turns: Sequence[TurnResult],
    *,
    study_facts: Mapping[str, Any] | None = None,
    demo: bool = False,
    thread_id: str | None = None,
) -> str:
    """Decisions and evidence per turn, as JSON (pydantic's own serialisation of the types)."""
    doc = {
        "generator": "cxr-agent",
        "generated_at": _now(),
        "thread_id": thread_id,
        "demo": demo,
        "disclaimer": DISCLAIMER,
        "demo_warning": DEMO_WARNING if demo else None,
        "study": dict(study_facts or {}),
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
def latest_findings_turn(turns: Sequence[TurnResult]) -> TurnResult | None:
    """The most recent turn that produced reconciled findings (what the SR / FHIR downloads describe)."""
    return next((t for t in reversed(turns) if t.decisions and not t.error), None)


def dicom_sr_bytes(turns: Sequence[TurnResult], study: Any, *, demo: bool = False) -> bytes | None:
    """The latest findings as a DICOM SR file, written against the DE-IDENTIFIED study.

    A download never carries the PACS patient module: the SR references the UIDs minted from the
    study's pixel hash (tools.interop.sr.deidentified_source). `pacs push` is what writes against
    the PACS source. None when no turn has findings yet."""
    import io

    from tools.interop.sr import build_sr, deidentified_source

    turn = latest_findings_turn(turns)
    if turn is None or study is None:
        return None
    sr = build_sr(deidentified_source(study), decisions=turn.decisions, evidence=turn.evidence,
                  report_text=turn.reply, demo=demo)
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def fhir_report_json(turns: Sequence[TurnResult], study: Any = None, *, demo: bool = False) -> str | None:
    """The latest findings as a FHIR R4B Bundle (DiagnosticReport + Observations + Device), validated.

    The imaging study is referenced by the de-identified study's UID, like the SR download."""
    from tools.interop.fhir import build_fhir_bundle, fhir_json
    from tools.interop.sr import deidentified_source

    turn = latest_findings_turn(turns)
    if turn is None:
        return None
    uid = deidentified_source(study).StudyInstanceUID if study is not None else None
    return fhir_json(build_fhir_bundle(decisions=turn.decisions, evidence=turn.evidence, report_text=turn.reply,
                                       demo=demo, study_uid=uid))
