"""Asking the tools that read two films together (``compares_priors``) what changed, in a comparison turn.

Each is asked once per pair of studies, in one fresh prompt (``compare(prior, current)``), and its
statements of change (``Evidence.meta["changes"]``: finding, change, the sentence) become ``ChangeCall``s
under its own name. A conflict between its statement and the classifier's two reads is asked again, as a
fresh prompt about that one finding (``compare(..., finding=f)``). Both outputs are recorded in the current
study's ledger, keyed like other evidence (tool, model, prompt, ask: ``compare`` or ``compare_reask`` with the
finding, and a digest of the prior study's id), so a later turn on the same pair reads them instead of asking
again, and a re-ask on record is not repeated. Calls run on the graph's pool under the tool timeout capped by
what is left of the turn, and never raise.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.comparing.decide import ChangeCall
from agents.memory.ledger import Ask, StudyLedger, key_for, words_hash
from agents.turn.events import writer
from agents.turn.tool_runner import Deadline, call_with_timeout
from knowledge.evidence import Evidence

if TYPE_CHECKING:
    from agents.replying.roles import ToolRoles

COMPARE = "compare"  # the ask kind of a comparison read
REASK = "compare_reask"  # ... and of a re-ask about one finding


def is_change_read(evidence: Evidence) -> bool:
    """Whether ``evidence`` answers a comparison ask (a read of two films together, or its re-ask)."""
    ask = evidence.meta.get("ask")
    return isinstance(ask, Mapping) and ask.get("kind") in (COMPARE, REASK)


def change_calls(evidence: Evidence, *, finding: str | None = None) -> list[ChangeCall]:
    """The statements of change in a comparing tool's Evidence, as its own (``source`` = the tool); a
    statement naming an unknown finding or change is skipped. ``finding``: a re-ask's, whose answer counts
    for that finding only, and says nothing (``cannot_compare``) when it names no change of it."""
    out: list[ChangeCall] = []
    for item in evidence.meta.get("changes") or [] if evidence.ok else []:
        if not isinstance(item, Mapping):
            continue
        try:
            call = ChangeCall(finding=item.get("finding"), change=item.get("change"), source=evidence.tool,
                              text=item.get("text"))
        except ValueError:
            continue
        if finding is None or call.finding == finding:
            out.append(call)
    if finding is not None and not out:
        out.append(ChangeCall(finding=finding, change="cannot_compare", source=evidence.tool, text=None))
    return out[-1:] if finding is not None else out


@dataclass
class ChangeReads:
    """What the comparing tools said this turn: their statements, their Evidence, the ledger recording it."""

    calls: list[ChangeCall] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    ledger: StudyLedger | None = None


@dataclass
class ChangeReader:
    """The comparing tools of one graph, asked within one turn (built by the respond node)."""

    tools: Mapping[str, Any]
    roles: ToolRoles  # the graph's one reading of its tools: ``comparers`` read a study against its prior
    study: Callable[[str], Any]
    runners: Mapping[str, str]
    pool: Any
    tool_timeout_s: float
    deadline: Deadline
    thread_id: str | None = None
    emit: Callable[[Any], None] = field(default_factory=writer)

    @property
    def sources(self) -> list[str]:
        return list(self.roles.comparers)

    def read(self, prior_id: str, ledger: StudyLedger) -> ChangeReads:
        """Every comparing tool's statements on the prior -> current pair (from the ledger when on record)."""
        out = ChangeReads(ledger=ledger)
        for name in self.sources:
            ev = self._ask(name, prior_id, out, finding=None)
            out.calls += change_calls(ev)
        return out

    def reask(self, prior_id: str, asks: Sequence[tuple[str, str]], reads: ChangeReads) -> list[ChangeCall]:
        """The answers of ``(tool, finding)`` re-asks, one fresh prompt each; recorded into ``reads``."""
        answers: list[ChangeCall] = []
        for name, finding in asks:
            ev = self._ask(name, prior_id, reads, finding=finding)
            answers += change_calls(ev, finding=finding)
        return answers

    def _ask(self, name: str, prior_id: str, reads: ChangeReads, *, finding: str | None) -> Evidence:
        ledger = reads.ledger
        assert ledger is not None
        ask = Ask(kind=REASK if finding else COMPARE, findings=(finding,) if finding else (),
                  words=words_hash(f"prior {prior_id}"))
        runner = self.runners.get(name)
        held = ledger.lookup(name, ask, runner)
        if held is not None:
            ev = held.evidence.model_copy(update={"meta": {**held.evidence.meta, "reused": True}})
            reads.evidence.append(ev)
            return ev
        ev = self._call(name, prior_id, ledger.study_id, finding)
        ev = ev.model_copy(update={"meta": {**ev.meta, "ask": ask.model_dump()}})
        reads.evidence.append(ev)
        reads.ledger = ledger.record([(key_for(ledger.study_id, name, ask, ev, runner=runner), ev, None)],
                                     same_turn=True)
        return ev

    def _call(self, name: str, prior_id: str, current_id: str, finding: str | None) -> Evidence:
        tool = self.tools[name]
        compare = getattr(tool, "compare", None)
        if not callable(compare):
            return Evidence.failure(name, f"{name} declares compares_priors but has no compare(prior, current) method")
        budget = self.deadline.budget(self.tool_timeout_s)
        if budget <= 0:
            return Evidence.failure(name, f"{name} was not asked to compare: the turn's deadline has passed")
        cancel = threading.Event()
        self.emit({"event": "tool_start", "tool": name, "purpose": "compare", "findings": [finding] if finding else []})
        live = [True]  # cleared when the call returns or times out: a late tool's pieces are dropped

        def on_token(text: str) -> None:
            if live[0]:
                self.emit({"event": "token", "tool": name, "text": text})

        streams = {"on_token": on_token} if _takes(compare, "on_token") else {}

        def run() -> Evidence:
            return compare(self.study(prior_id), self.study(current_id), finding=finding, thread_id=self.thread_id,
                           cancel=cancel, **streams)

        ev = call_with_timeout(name, run, budget, cancel=cancel, pool=self.pool)
        live[0] = False
        self.emit({"event": "tool_end", "tool": name, "ok": ev.ok, "latency_ms": ev.latency_ms, "error": ev.error,
                   "purpose": "compare", "findings": [finding] if finding else []})
        return ev


def _takes(method: Callable[..., Any], name: str) -> bool:
    """Whether a tool's method names the keyword ``name`` (a custom tool's ``compare`` may predate it; one
    that only passes ``**kwargs`` on may hand it to a method that does not take it)."""
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
