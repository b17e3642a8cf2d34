"""Opening a review on a conversation thread: the study's current AI decisions and report, or the draft
already saved, or a correction of the signed version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agents.memory.ledger import StudyLedger, study_decisions
from agents.review.model import Review, Reviewer, ReviewError, change_rows
from agents.review.store import ReviewStore
from knowledge.evidence import Decision

if TYPE_CHECKING:
    from agents.turn.comparison import StudyChanges
    from cxr_agent.settings import Settings


def draft_report(values: Mapping[str, Any]) -> str:
    """The newest report a report-writing tool recorded on the thread's study (the AI's draft text)."""
    ledger = values.get("ledger")
    evidence = [e.evidence for e in ledger.entries] if isinstance(ledger, StudyLedger) else []
    last = values.get("last_result")
    if not evidence and isinstance(last, Mapping):
        evidence = list(last.get("evidence") or [])
    for ev in reversed(evidence):
        if getattr(ev, "ok", False) and (getattr(ev, "report", None) or "").strip():
            return ev.report.strip()
    return ""


def thread_study(values: Mapping[str, Any]) -> str | None:
    """The study the thread's decisions are about."""
    ledger = values.get("ledger")
    if isinstance(ledger, StudyLedger):
        return ledger.study_id
    last = values.get("last_result")
    if isinstance(last, Mapping) and isinstance(last.get("study_id"), str):
        return last["study_id"]
    return values.get("study_id")


def typed_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """State values with the ledger and decisions as models: a remote graph (LangGraph Server) returns
    them as JSON objects."""
    out = dict(values)
    if isinstance(out.get("ledger"), Mapping):
        out["ledger"] = StudyLedger.model_validate(out["ledger"])
    if out.get("decisions"):
        out["decisions"] = [d if isinstance(d, Decision) else Decision.model_validate(d) for d in out["decisions"]]
    return out


def open_review(graph: Any, thread_id: str, study_id: str | None = None, *, reviewer: Reviewer,
                settings: Settings | None = None) -> Review:
    """The review of ``study_id`` (default: the thread's current study) on ``thread_id``.

    A saved draft is resumed (under this reviewer); once a version is signed, a correction of it is
    opened (it supersedes the signed one when signed); else a fresh review of the AI's decisions."""
    if settings is None:
        from cxr_agent.settings import get_settings

        settings = get_settings()
    values = graph.get_state({"configurable": {"thread_id": thread_id}}).values or {}
    return review_from_values(values, thread_id, study_id, reviewer=reviewer, store=ReviewStore.for_settings(settings))


def review_from_values(values: Mapping[str, Any], thread_id: str, study_id: str | None = None, *,
                       reviewer: Reviewer, store: ReviewStore) -> Review:
    """``open_review`` over a thread's state values already read (e.g. by the graph server from its own
    thread store, as JSON)."""
    values = typed_values(values)
    sid = study_id or thread_study(values)
    if not sid:
        raise ReviewError(f"conversation {thread_id!r} has no study yet: ask about an image first")
    compared = study_changes(values, sid)
    draft = store.load_draft(thread_id, sid)
    if draft is not None:
        return _with_changes(draft.model_copy(update={"reviewer": reviewer}), compared)
    signed = store.current(thread_id, sid)
    if signed is not None:
        return _with_changes(signed.correction(reviewer), compared)
    decisions = study_decisions(values, sid)
    return Review.draft(thread_id=thread_id, study_id=sid, reviewer=reviewer, decisions=decisions,
                        report=draft_report(values) if sid == thread_study(values) else "",
                        prior_study_id=compared.prior_study_id if compared else None,
                        changes=compared.changes if compared else ())


def _with_changes(review: Review, compared: StudyChanges | None) -> Review:
    """A draft or correction opened before the study was compared gets the comparison's change rows (one that
    has change rows keeps them: the reader's actions on them stand)."""
    if compared is not None and compared.changes and not review.changes and compared.prior_study_id != review.study_id:
        review.prior_study_id = compared.prior_study_id
        review.changes = change_rows(compared.changes)
    return review


def study_changes(values: Mapping[str, Any], study_id: str) -> StudyChanges | None:
    """The study's latest comparison with its prior on the thread (its replies' payloads), if any."""
    from agents.turn.comparison import thread_changes

    messages = [m if not isinstance(m, Mapping) else _Message(m) for m in values.get("messages") or []]
    return thread_changes(messages, study_id)


class _Message:
    """A message a remote graph returns as JSON: only its ``additional_kwargs`` are read."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.additional_kwargs = data.get("additional_kwargs") or {}
