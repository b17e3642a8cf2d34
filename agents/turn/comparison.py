"""A comparison turn: find the prior study the conversation holds, check that the two can be one patient's,
and decide what changed from both studies' ledgers (agents/comparing).

Ingest drops every date, so the order of the two studies is the reader's: the prior is the study they name
(``prior_study_id``), else the one read with the current study in one ingest (``pairs``: order, interval and
patient keys taken from both headers then), else the study the conversation read most recently before it.

A tool that reads the two films together (``compares_priors``) is asked what changed (agents/turn/change_reads.py);
a conflict between its statement and the classifier's reads is asked of it again, one finding per fresh prompt,
and settled by the change rule's re-ask rule. What it said is recorded in the current study's ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agents.comparing.decide import ChangeDecision, StudyRead, candidate_findings, compare, film_reasons
from agents.comparing.pair import as_pairs, patient_keys
from agents.comparing.patient import PatientCheck, same_patient
from agents.comparing.policy import ChangePolicy
from agents.memory.ledger import StudyLedger, as_decisions, as_earlier, as_ledger
from agents.replying.change import change_lines, missing_prior_line, refusal_lines, unread_line
from agents.replying.compose import NO_COMPARISON, ReplyParts
from agents.routing.rules import Route
from agents.turn.change_reads import ChangeReader, ChangeReads
from knowledge.evidence import Evidence
from tools.base import RECONCILED_INTENTS

if TYPE_CHECKING:
    from agents.replying.roles import ToolRoles
    from tools.interop.change import ChangeEntry


@dataclass(frozen=True)
class Comparison:
    """What a comparison turn found: the reply's opening and the payload's ``comparison``."""

    opening: tuple[str, ...]
    payload: dict[str, Any] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)  # what the comparing tools said this turn
    ledger: StudyLedger | None = None  # the current study's ledger with it recorded (None: unchanged)


def earlier_ids(state: Mapping[str, Any]) -> list[str]:
    """Studies the conversation read before the current one, oldest first (the ledger still holds the
    previous study until this turn's reconcile shelves it)."""
    current = state.get("study_id")
    ids = [sid for sid in as_earlier(state.get("earlier")) if sid != current]
    held = as_ledger(state.get("ledger"))
    if held is not None and held.study_id != current and held.study_id not in ids:
        ids.append(held.study_id)
    return ids


def comparison_route(route: Route, state: Mapping[str, Any]) -> Route:
    """A comparison question, when the conversation holds an earlier study, is answered as one: no asking
    back; one that names no finding of its own reads the current study in full (report and scores, reused
    from the ledger when there), so that every change can be decided."""
    if not (route.asks_comparison and state.get("study_id")
            and (state.get("prior_study_id") or earlier_ids(state))):
        return route
    if route.intent in RECONCILED_INTENTS:
        return route.model_copy(update={"clarify": None})
    return route.model_copy(update={
        "intent": "report", "needs_image": True, "clarify": None,
        "reason": f"{route.reason}; compared with the prior: the current study is read in full"})


def _study_facts(study: Callable[[str], Any], study_id: str) -> tuple[str, dict[str, Any]]:
    try:
        s = study(study_id)
    except Exception:  # noqa: BLE001 - a study gone from the store: its ledger still compares, headers unknown
        return "unknown", {}
    return str(getattr(s, "view", "unknown") or "unknown"), dict(getattr(s, "metadata", {}) or {})


def compare_with_prior(state: Mapping[str, Any], route: Route, *, study: Callable[[str], Any],
                       roles: ToolRoles, labels: Mapping[str, str],
                       policy: ChangePolicy | None = None, reader: ChangeReader | None = None) -> Comparison | None:
    """The comparison of the current study with its prior, or None when the turn asks none or the
    conversation holds no earlier study (the reply then says no earlier image was compared).
    ``reader``: asks the tools that compare priors (without one, only each study's own reads count)."""
    current_id = state.get("study_id")
    ledger = as_ledger(state.get("ledger"))
    if not route.asks_comparison or not current_id or ledger is None or ledger.study_id != current_id:
        return None
    named = state.get("prior_study_id")
    shelf = as_earlier(state.get("earlier"))
    pair = as_pairs(state.get("pairs")).get(current_id)
    if named:
        if named == current_id or named not in shelf:
            return Comparison(opening=(missing_prior_line(named),), payload={"prior_study_id": named, "compared": False})
        prior_id = named
    elif pair is not None and pair.prior_study_id in shelf:
        prior_id = pair.prior_study_id
    else:
        ids = [sid for sid in shelf if sid != current_id]
        if not ids:
            return None
        prior_id = ids[-1]
    prior_view, prior_meta = _study_facts(study, prior_id)
    view, meta = _study_facts(study, current_id)
    pair = pair if pair is not None and pair.prior_study_id == prior_id else None
    # keys from the pair itself, else from any pairs keyed under the conversation's salt
    patient: PatientCheck = same_patient(prior_meta, meta, patient_keys(state.get("pairs"), prior_id, current_id))
    base = {"prior_study_id": prior_id, "study_id": current_id, "named_by_reader": bool(named),
            "patient": patient.verdict, "order": "headers" if pair else "reader",
            "interval_days": pair.interval_days if pair else None}
    if patient.verdict == "mismatch":
        return Comparison(opening=refusal_lines(patient), payload={**base, "compared": False})
    kept = shelf[prior_id]
    prior = StudyRead(study_id=prior_id, view=prior_view, position=prior_meta.get("patient_position"),
                      decisions=list(kept.decisions), evidence=kept.ledger.evidence())
    now = StudyRead(study_id=current_id, view=view, position=meta.get("patient_position"),
                    decisions=as_decisions(state.get("decisions")), evidence=ledger.evidence())
    scorers = list(roles.scorers)
    writers = [n for n in roles.writers if n not in roles.comparers]
    asked = list(route.findings or ([route.finding] if route.finding else []))
    reads = reader.read(prior_id, ledger) if reader is not None and reader.sources else ChangeReads()
    targets = candidate_findings(prior, now, asked, reads.calls)
    policy = policy or ChangePolicy()

    def decide(reasks: list[Any]) -> list[ChangeDecision]:
        return compare(prior, now, policy, score_sources=scorers, statement_sources=writers,
                       change_calls=reads.calls, findings=targets, reasks=reasks)

    changes = decide([])
    disputed = _disputed(changes, reader.sources if reader is not None else [], scorers)
    if disputed and reader is not None:
        changes = decide(reader.reask(prior_id, disputed, reads))
    films = film_reasons(prior, now)
    opening = change_lines(changes, prior_id=prior_id, current_id=current_id, named_by_reader=bool(named),
                           patient=patient, films=films, labels=labels,
                           direct=bool(roles.comparers),
                           interval_days=pair.interval_days if pair else None)
    failed = {e.tool: e.error for e in reads.evidence if not e.ok}
    opening += tuple(unread_line(labels.get(name, f"tool '{name}'"), error) for name, error in failed.items())
    return Comparison(opening=opening, payload={**base, "compared": True,
                                                "changes": [d.model_dump(mode="json") for d in changes]},
                      evidence=reads.evidence, ledger=reads.ledger if reads.evidence else None)


def _disputed(changes: list[ChangeDecision], comparing: list[str], scorers: list[str]) -> list[tuple[str, str]]:
    """(comparing tool, finding) for each conflict between a comparing tool's statement and a score reader."""
    out = []
    for d in changes:
        if d.conflict and any(s in d.disagreeing for s in scorers):
            out += [(s, d.finding) for s in comparing if s in d.disagreeing]
    return out


@dataclass(frozen=True)
class StudyChanges:
    """A study's current change since its prior, as the thread's latest comparison of it recorded it."""

    prior_study_id: str
    changes: tuple[ChangeEntry, ...]


def recorded_changes(payloads: Iterable[Mapping[str, Any]], study_id: str) -> StudyChanges | None:
    """The latest comparison of ``study_id`` with its prior among reply payloads (``cxr``), oldest first: what
    the SR and FHIR exports carry. None when no comparison of it was made (or none could be)."""
    from tools.interop.change import ChangeEntry  # pydicom's code tables: loaded for an export only

    for cxr in reversed(list(payloads)):
        cmp = cxr.get("comparison") if isinstance(cxr, Mapping) else None
        if not isinstance(cmp, Mapping) or cmp.get("study_id") != study_id or not cmp.get("compared"):
            continue
        prior = cmp.get("prior_study_id")
        if isinstance(prior, str) and prior:
            return StudyChanges(prior_study_id=prior, changes=tuple(
                ChangeEntry.model_validate(c) for c in cmp.get("changes") or []))
    return None


def thread_changes(messages: Iterable[Any], study_id: str) -> StudyChanges | None:
    """``recorded_changes`` read from a thread's messages (``graph.get_state(cfg).values["messages"]``)."""
    return recorded_changes(((getattr(m, "additional_kwargs", None) or {}).get("cxr") or {} for m in messages),
                            study_id)


def with_comparison(parts: ReplyParts, comparison: Comparison | None) -> str:
    """The reply rendered with the comparison as its opening (in place of "no earlier image was compared")."""
    if comparison is None:
        return parts.render()
    kept = tuple(line for line in parts.opening if NO_COMPARISON not in line)
    return replace(parts, opening=(*comparison.opening, *kept)).render()
