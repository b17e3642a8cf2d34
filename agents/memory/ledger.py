"""The evidence ledger of one study: every tool output on it, recorded once, keyed by what was asked.

Why: a decision must be reconciled from everything known about a study, not from the last turn's
slice, and a tool must not read the same study twice with the same model. A ``LedgerEntry`` is one
tool's Evidence under a ``LedgerKey``: study, tool, model id, weights hash, prompt/adapter id,
retrieval index id, the settings it ran under (``runner``) and the ``Ask`` (task, findings, and a
hash of the user's words or draft for anything built from them). A newer entry for the same tool
and ask replaces the older one, so the ledger is bounded by tools x asks (at most ``MAX_ENTRIES``).

Only successful outputs are recorded (a failure says nothing about the image and must never
replace what a tool did say). Only *complete* entries (ok, not truncated) are reused instead of
running the tool again. The ledger holds evidence only: the study's decisions are the state's
``decisions`` (reconciled from the whole ledger), so nothing is checkpointed twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from knowledge.bounded_memo import BoundedMemo
from knowledge.evidence import Decision, Evidence

MAX_ENTRIES = 96  # tools x asks stays far below this; the oldest entries go first beyond it
ASK_META = "ask"  # Evidence.meta key carrying the ask a tool output answered (set by the turn's nodes)
REUSED_META = "reused"  # Evidence.meta key marking a turn's evidence taken from the ledger, not run again


def words_hash(text: str | None) -> str | None:
    """A short digest standing for the user's words (or a draft) in a key: the words themselves are
    never stored in the ledger."""
    if not text:
        return None
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:16]


class Ask(BaseModel):
    """What a tool was asked. ``kind``: the intent, ``"image"`` for a tool that reads the whole image
    whatever the question (its scores answer every later turn), or ``"verify"`` (a re-ask).
    ``words``: digest of the user's words or the draft the output was built from; None for a fixed prompt."""

    model_config = ConfigDict(frozen=True)

    kind: str
    findings: tuple[str, ...] = ()
    words: str | None = None

    @property
    def fixed(self) -> bool:
        """Built from a fixed prompt only (no user words): may be shared with other threads."""
        return self.words is None


class LedgerKey(BaseModel):
    """Which output this is: study, tool, model identity and the ask."""

    model_config = ConfigDict(frozen=True)

    study_id: str
    tool: str
    model_id: str | None = None
    weights: str | None = None
    prompt_id: str | None = None
    index_id: str | None = None
    runner: str | None = Field(None, description="Digest of the model settings the tool ran under.")
    ask: Ask


class LedgerEntry(BaseModel):
    """One tool output on the study and the turn that recorded it."""

    key: LedgerKey
    evidence: Evidence
    turn: int = 0
    settles: str | None = Field(None, description="A re-ask: the signature of the conflict it was asked about.")

    @property
    def complete(self) -> bool:
        """Reusable: the tool answered in full (not failed, not timed out, not cut at the token limit)."""
        return self.evidence.ok and not self.evidence.truncated


class StudyLedger(BaseModel):
    """All evidence recorded on one study in this thread (immutable use: ``record`` returns a copy)."""

    study_id: str
    entries: list[LedgerEntry] = Field(default_factory=list)
    turns: int = 0

    def record(self, items: Iterable[tuple[LedgerKey, Evidence, str | None]], *,
               same_turn: bool = False) -> StudyLedger:
        """A new ledger with ``items`` (key, evidence, settles) recorded as a new turn's entries (or the
        current turn's: ``same_turn``): a failure is not recorded; an entry for the same tool and ask
        replaces the older one."""
        turn = self.turns if same_turn else self.turns + 1
        entries = list(self.entries)
        for key, ev, settles in items:
            if not ev.ok or key.study_id != self.study_id:
                continue
            clean = ev.model_copy(update={"meta": {k: v for k, v in ev.meta.items() if k != REUSED_META}})
            entries = [e for e in entries if (e.key.tool, e.key.ask) != (key.tool, key.ask)]
            entries.append(LedgerEntry(key=key, evidence=clean, turn=turn, settles=settles))
        return StudyLedger(study_id=self.study_id, entries=entries[-MAX_ENTRIES:], turns=turn)

    def lookup(self, tool: str, ask: Ask, runner: str | None = None) -> LedgerEntry | None:
        """The complete entry answering ``ask`` with ``tool`` under the same settings, if any."""
        for e in reversed(self.entries):
            if e.key.tool == tool and e.key.ask == ask and e.complete and (runner is None or e.key.runner == runner):
                return e
        return None

    def of_tool(self, tool: str, kind: str, runner: str | None = None) -> list[LedgerEntry]:
        """Complete entries of ``tool`` with asks of ``kind``, newest first."""
        return [e for e in reversed(self.entries) if e.key.tool == tool and e.key.ask.kind == kind and e.complete
                and (runner is None or e.key.runner == runner)]

    def evidence(self) -> list[Evidence]:
        """Every recorded output except re-asks (what the reconciler weighs), oldest first."""
        return [e.evidence for e in self.entries if e.key.ask.kind != "verify"]

    def reasks(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.key.ask.kind == "verify"]


MAX_EARLIER_STUDIES = 8  # a conversation's earlier studies kept with their ledgers (the oldest go first)


class EarlierStudy(BaseModel):
    """A study the conversation read before its current one: its ledger and decisions, kept so that going
    back to it, comparing with it, or exporting it reads what was known, not nothing."""

    ledger: StudyLedger
    decisions: list[Decision] = Field(default_factory=list)


def shelve(earlier: Mapping[str, Any] | None, ledger: StudyLedger | None, decisions: Iterable[Decision],
           *, taking: str | None = None) -> dict[str, EarlierStudy]:
    """The conversation's earlier studies after moving ``ledger`` (with its decisions) onto the shelf and
    taking ``taking`` off it (the study the turn goes back to); bounded by ``MAX_EARLIER_STUDIES``."""
    out = {sid: s for sid, s in (as_earlier(earlier) or {}).items() if sid != taking}
    if ledger is not None and ledger.study_id != taking:
        out.pop(ledger.study_id, None)
        out[ledger.study_id] = EarlierStudy(ledger=ledger, decisions=list(decisions))
    return dict(list(out.items())[-MAX_EARLIER_STUDIES:])


def as_earlier(value: Any) -> dict[str, EarlierStudy]:
    """The ``earlier`` state value as typed models (a checkpoint may hold plain dicts)."""
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for sid, item in value.items():
        if isinstance(item, EarlierStudy):
            out[str(sid)] = item
        elif isinstance(item, Mapping):
            try:
                out[str(sid)] = EarlierStudy.model_validate(item)
            except ValueError:
                continue
    return out


class SharedOutputs:
    """Fixed-prompt outputs (no user words in the ask) shared by every conversation of one process, by
    pixel-hash study id: a second thread's report on a study reads nothing again. In memory only and
    bounded in entries and in MiB (``Settings.shared_outputs_max_mib``; least recently used go first),
    so nothing derived from an image outlives the process and a long-lived server does not grow with it."""

    def __init__(self, max_entries: int = 256, max_mib: float | None = None) -> None:
        if max_mib is None:
            from cxr_agent.settings import get_settings

            max_mib = get_settings().shared_outputs_max_mib
        self.max_entries = max_entries
        self._memo: BoundedMemo[Evidence] = BoundedMemo(max_entries, max_mib)

    def __len__(self) -> int:
        return len(self._memo)

    @property
    def nbytes(self) -> int:
        """The estimated bytes kept."""
        return self._memo.nbytes

    def get(self, study_id: str, tool: str, ask: Ask, runner: str | None) -> Evidence | None:
        return self._memo.lookup((study_id, tool, ask, runner))

    def put(self, key: LedgerKey, evidence: Evidence) -> None:
        """Keep a complete fixed-prompt output; anything built from a user's words stays in its thread."""
        if not key.ask.fixed or not evidence.ok or evidence.truncated:
            return
        self._memo.store((key.study_id, key.tool, key.ask, key.runner), evidence)


def key_for(study_id: str, tool: str, ask: Ask, evidence: Evidence | None = None, runner: str | None = None) -> LedgerKey:
    """The key of ``evidence`` (its model identity read from ``Evidence.meta``: ``model_id`` or
    ``model``, ``weights``, ``prompt_id``, ``index_id``)."""
    meta: Mapping[str, Any] = evidence.meta if evidence is not None else {}

    def text(*names: str) -> str | None:
        value = next((meta.get(n) for n in names if meta.get(n) is not None), None)
        return None if value is None else str(value)

    return LedgerKey(study_id=study_id, tool=tool, model_id=text("model_id", "model"), weights=text("weights"),
                     prompt_id=text("prompt_id", "adapter_id"), index_id=text("index_id"), runner=runner, ask=ask)


def ask_of(evidence: Evidence) -> Ask | None:
    """The ask an Evidence answered (carried in its meta by the turn's nodes), if recorded."""
    raw = evidence.meta.get(ASK_META)
    if isinstance(raw, Ask):
        return raw
    if isinstance(raw, dict):
        try:
            return Ask(kind=str(raw["kind"]), findings=tuple(raw.get("findings") or ()), words=raw.get("words"))
        except (KeyError, TypeError, ValueError):
            return None
    return None


def as_ledger(value: Any) -> StudyLedger | None:
    """The state's ledger as a StudyLedger: a server whose own serializer does not know our types
    hands it back as plain data (its strict mode blocks unregistered classes), read here."""
    if isinstance(value, StudyLedger) or value is None:
        return value
    try:
        return StudyLedger.model_validate(value)
    except ValueError:
        return None


def as_decisions(values: Any) -> list[Decision]:
    """Decisions from the state, read back into ``Decision`` when they come as plain data."""
    out = []
    for d in values or []:
        try:
            out.append(d if isinstance(d, Decision) else Decision.model_validate(d))
        except ValueError:
            continue
    return out


def _as_evidence(values: Any) -> list[Evidence]:
    out = []
    for e in values or []:
        try:
            out.append(e if isinstance(e, Evidence) else Evidence.model_validate(e))
        except ValueError:
            continue
    return out


def from_legacy(last_result: Mapping[str, Any] | None, ask: Callable[[str, str], Ask] | None = None,
                runners: Mapping[str, str] | None = None) -> StudyLedger | None:
    """A ledger from the ``last_result`` an earlier version kept (study id, decisions, latest evidence
    per tool): each tool's evidence becomes an entry under ``ask(tool, intent)`` (default: the ask of
    that turn's intent), as if run under ``runners[tool]`` (the settings of the tool as configured now)."""
    if not isinstance(last_result, Mapping) or not isinstance(last_result.get("study_id"), str):
        return None
    study_id = last_result["study_id"]
    kind = str(last_result.get("intent") or "report")
    items = [(key_for(study_id, e.tool, ask(e.tool, kind) if ask else Ask(kind=kind), e,
                      runner=(runners or {}).get(e.tool)), e, None)
             for e in _as_evidence(last_result.get("evidence"))]
    return StudyLedger(study_id=study_id).record(items)


def study_decisions(values: Mapping[str, Any], study_id: str | None = None) -> list[Decision]:
    """The current decisions of a study from a thread's state values (``graph.get_state(cfg).values``):
    the ledger's study by default; an earlier study of the conversation by its id (``[]`` for one it never
    read). Reads checkpoints
    written before the ledger (their ``last_result``) too."""
    ledger = as_ledger(values.get("ledger"))
    if ledger is not None:
        if study_id is not None and study_id != ledger.study_id:
            shelved = as_earlier(values.get("earlier")).get(study_id)
            return list(shelved.decisions) if shelved is not None else []
        return as_decisions(values.get("decisions"))
    last = values.get("last_result")
    if isinstance(last, Mapping) and last.get("study_id") and (study_id is None or last["study_id"] == study_id):
        return as_decisions(last.get("decisions"))
    return []
