"""The verify node: re-ask a verifying tool about the turn's conflicted findings, then apply the
reconciler's transparent rule to each.

All conflicts go to the verifier in ONE ``verify(study, findings, ...)`` call (a model can batch
them), under one timeout: the tool timeout capped by what is left of the turn's deadline, so re-asks
share the remaining time instead of each getting the full timeout. A conflict goes to the first
tool that declares ``verifies``, did not fail this turn and made one of the disputed calls (with
two VLM families side by side, the one whose call is disputed), else to the first usable one.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.runnables import RunnableConfig

from agents.memory.ledger import Ask, as_decisions, as_ledger, key_for
from agents.reconciling.study import settle, signature, unasked
from agents.state import CxrState
from agents.turn.events import writer
from agents.turn.tool_runner import Deadline, call_many_with_timeout
from knowledge.evidence import Box, Decision, Evidence
from tools.base import verify_findings

if TYPE_CHECKING:
    from agents.reconciling.policy import Policy
    from agents.replying.roles import ToolRoles
    from cxr_agent.settings import Settings
    from tools.ingestion.study import Study


class Nodes(Protocol):
    """What the re-ask needs of the graph's nodes (agents/turn/nodes.py passes itself)."""

    settings: Settings
    policy: Policy
    tools: dict[str, Any]
    roles: ToolRoles  # the graph's one reading of its tools' capabilities
    pool: Any
    runners: dict[str, str]

    def study(self, study_id: str) -> Study: ...

log = logging.getLogger(__name__)


def verifiers(nodes: Nodes, evidence: list[Evidence]) -> tuple[list[str], str | None]:
    """The tools that can be re-asked this turn (declared ``verifies``, did not fail), in registry
    order, and why none can be when the list is empty."""
    declared = list(nodes.roles.verifiers)
    if not declared:
        return [], "no tool that answers verification questions is configured"
    usable, why = [], None
    for name in declared:
        own = next((e for e in evidence if e.tool == name and not e.meta.get("verification")), None)
        if own is None or own.ok:
            usable.append(name)
        else:
            why = why or f"{name} is unavailable ({own.error})"
    return usable, why


def pick_verifier(decision: Decision, usable: list[str]) -> str:
    """The verifier for one conflict: the first usable one on the disagreeing side, else among the
    decision's sources (with two VLM families, the one whose call is disputed), else the first."""
    for pool in (set(decision.disagreeing), {c.source for c in decision.calls}):
        found = next((n for n in usable if n in pool), None)
        if found is not None:
            return found
    return usable[0]


def verify_conflicts(nodes: Nodes, state: CxrState, config: RunnableConfig) -> dict[str, Any]:
    emit = writer()
    decisions = as_decisions(state.get("decisions"))
    conflicted = unasked(decisions, nodes.policy)  # a conflict the ledger holds a re-ask for is settled already
    if not nodes.settings.verify_conflicts:
        note = unchecked_note(len(conflicted), "verification is turned off (CXR_AGENT_VERIFY_CONFLICTS=false)")
        emit({"event": "note", "message": note})
        return {"notes": [note]}
    evidence = list(state.get("evidence") or [])
    usable, why = verifiers(nodes, evidence)
    deadline = Deadline(state["deadline"]) if state.get("deadline") is not None else \
        Deadline.after(nodes.settings.turn_timeout_s)
    if usable and deadline.budget(nodes.settings.tool_timeout_s) <= 0:
        usable, why = [], f"the turn's deadline ({nodes.settings.turn_timeout_s:g} s) has passed"
    if not usable:
        note = unchecked_note(len(conflicted), why or "no tool can answer")
        for d in conflicted:
            emit({"event": "verify", "finding": d.finding, "outcome": "skipped"})
        emit({"event": "note", "message": note})
        return {"notes": [note]}

    groups: dict[str, list[Decision]] = {}
    for d in conflicted:
        groups.setdefault(pick_verifier(d, usable), []).append(d)
    image_sources = set(nodes.roles.image_sources)
    ledger = as_ledger(state.get("ledger"))
    ledger = ledger if ledger is not None and ledger.study_id == state.get("study_id") else None
    known = [*(ledger.evidence() if ledger is not None else []), *evidence]
    resolved: list[Decision] = []
    checks: list[Evidence] = []
    settled: list[tuple[Any, Evidence, str | None]] = []
    for verifier, group in groups.items():  # one batched call per verifier (usually one)
        answers = _ask(nodes, state, config, verifier, [d.finding for d in group], deadline, emit)
        for d, ev in zip(group, answers, strict=True):
            ev = ev.model_copy(update={"meta": {**ev.meta, "verification": d.finding}})
            try:
                box = heatmap_box(known, d.finding, exclude=verifier, image_sources=image_sources)
                new = settle(d, ev, classifier_box=box, policy=nodes.policy)
            except Exception as exc:  # noqa: BLE001
                log.exception("resolve failed")
                new = d.model_copy(update={"needs_review": True,
                                           "verification": f"verification failed ({type(exc).__name__})"})
            emit({"event": "verify", "finding": d.finding, "outcome": "unresolved" if new.conflict else "resolved",
                  "status": new.status.value, "needs_review": new.needs_review, "detail": new.verification})
            resolved.append(new)
            checks.append(ev)
            if ledger is not None:  # the answer settles this conflict in later turns too, never asked again
                ask = Ask(kind="verify", findings=(d.finding,))
                settled.append((key_for(ledger.study_id, verifier, ask, ev, runner=nodes.runners.get(verifier)),
                                ev, signature(d, nodes.policy)))
    by_finding = {d.finding: d for d in resolved}
    update: dict[str, Any] = {"decisions": [by_finding.get(d.finding, d) for d in decisions], "evidence": checks}
    if ledger is not None and settled:
        update["ledger"] = ledger.record(settled, same_turn=True)
    return update


def unchecked_note(count: int, why: str) -> str:
    """The one note on conflicts left without a re-ask: how many and why, never which (each is named once,
    on its own review line, and stays flagged there)."""
    what = "1 conflict was" if count == 1 else f"{count} conflicts were"
    return f"{what} not re-checked: {why}; {'it stays' if count == 1 else 'they stay'} flagged for review."


def _ask(nodes: Nodes, state: CxrState, config: RunnableConfig, verifier: str, findings: list[str],
         deadline: Deadline, emit: Any) -> list[Evidence]:
    """One batched re-ask under the tool timeout capped by what is left of the turn."""
    tool = nodes.tools[verifier]
    study_id = state.get("study_id")
    thread_id = (config.get("configurable") or {}).get("thread_id")
    cancel = threading.Event()
    emit({"event": "tool_start", "tool": verifier, "purpose": "verify", "findings": findings})

    def ask() -> list[Evidence]:
        return verify_findings(tool, nodes.study(study_id), findings, thread_id=thread_id, cancel=cancel)

    timeout = deadline.budget(nodes.settings.tool_timeout_s)
    answers = call_many_with_timeout(verifier, ask, len(findings), timeout, cancel=cancel, pool=nodes.pool)
    emit({"event": "tool_end", "tool": verifier, "ok": all(a.ok for a in answers),
          "latency_ms": sum(a.latency_ms or 0.0 for a in answers),
          "error": next((a.error for a in answers if not a.ok), None), "purpose": "verify", "findings": findings})
    return answers


def heatmap_box(evidence: list[Evidence], finding: str, *, exclude: str, image_sources: set[str]) -> Box | None:
    """Another image tool's box for ``finding`` this turn (a heatmap artifact first, then a call's
    box), to compare with the verifier's answer; never the verifier's own."""
    others = [e for e in evidence if e.ok and e.tool != exclude and e.tool in image_sources
              and not e.meta.get("verification")]
    for e in others:
        for a in e.artifacts:
            if a.kind == "heatmap" and a.finding == finding and a.box is not None:
                return a.box
    for e in others:
        for c in e.calls:
            if c.finding == finding and c.box is not None and c.source == e.tool:
                return c.box
    return None
