"""The verify node: re-ask a verifying tool about the turn's conflicted findings, then apply the
reconciler's transparent rule to each.

All conflicts go to the verifier in ONE ``verify(study, findings, ...)`` call (a model can batch
them), under one timeout: the tool timeout capped by what is left of the turn's deadline, so re-asks
share the remaining time instead of each getting the full timeout. The verifier is the first tool
that declares ``verifies`` and did not fail this turn.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from agents import reconciler
from agents.events import writer
from agents.runner import Deadline, call_many_with_timeout
from agents.state import CxrState
from knowledge.evidence import Box, Decision, Evidence
from tools.base import verify_findings

if TYPE_CHECKING:
    from agents.nodes import Nodes

log = logging.getLogger(__name__)


def pick_verifier(nodes: Nodes, evidence: list[Evidence]) -> tuple[str | None, str | None]:
    """(name of the tool to re-ask, None) or (None, why no tool can be re-asked)."""
    verifiers = [n for n, c in nodes.caps.items() if c.verifies]
    if not verifiers:
        return None, "no tool that answers verification questions is configured"
    why = None
    for name in verifiers:
        own = next((e for e in evidence if e.tool == name and not e.meta.get("verification")), None)
        if own is None or own.ok:
            return name, None
        why = why or f"{name} is unavailable ({own.error})"
    return None, why


def verify_conflicts(nodes: Nodes, state: CxrState, config: RunnableConfig) -> dict[str, Any]:
    emit = writer()
    conflicted = reconciler.conflicts(list(state.get("decisions") or []), nodes.policy)
    names = ", ".join(d.finding.replace("_", " ") for d in conflicted)
    if not nodes.settings.verify_conflicts:
        note = (f"Conflicts ({names}) were not re-checked: verification is turned off "
                "(CXR_AGENT_VERIFY_CONFLICTS=false); they stay flagged for review.")
        emit({"event": "note", "message": note})
        return {"notes": [note]}
    evidence = list(state.get("evidence") or [])
    verifier, why = pick_verifier(nodes, evidence)
    deadline = Deadline(state["deadline"]) if state.get("deadline") is not None else \
        Deadline.after(nodes.settings.turn_timeout_s)
    timeout = deadline.budget(nodes.settings.tool_timeout_s)
    if verifier is not None and timeout <= 0:
        verifier, why = None, f"the turn's deadline ({nodes.settings.turn_timeout_s:g} s) has passed"
    if verifier is None:
        note = f"Conflicts ({names}) were not re-checked: {why}; they stay flagged for review."
        for d in conflicted:
            emit({"event": "verify", "finding": d.finding, "outcome": "skipped"})
        emit({"event": "note", "message": note})
        return {"notes": [note]}

    tool = nodes.tools[verifier]
    study_id = state.get("study_id")
    thread_id = (config.get("configurable") or {}).get("thread_id")
    findings = [d.finding for d in conflicted]
    cancel = threading.Event()
    emit({"event": "tool_start", "tool": verifier, "purpose": "verify", "findings": findings})

    def ask() -> list[Evidence]:
        return verify_findings(tool, nodes.study(study_id), findings, thread_id=thread_id, cancel=cancel)

    answers = call_many_with_timeout(verifier, ask, len(findings), timeout, cancel=cancel, pool=nodes.pool)
    ok = all(a.ok for a in answers)
    total_ms = sum(a.latency_ms or 0.0 for a in answers)
    emit({"event": "tool_end", "tool": verifier, "ok": ok, "latency_ms": total_ms,
          "error": next((a.error for a in answers if not a.ok), None), "purpose": "verify", "findings": findings})
    resolved: list[Decision] = []
    checks: list[Evidence] = []
    for d, ev in zip(conflicted, answers, strict=True):
        ev = ev.model_copy(update={"meta": {**ev.meta, "verification": d.finding}})
        try:
            box = heatmap_box(evidence, d.finding, exclude=verifier,
                              image_sources={n for n, c in nodes.caps.items() if c.image_source})
            new = reconciler.resolve(d, ev, classifier_box=box, policy=nodes.policy)
        except Exception as exc:  # noqa: BLE001
            log.exception("resolve failed")
            new = d.model_copy(update={"needs_review": True,
                                       "verification": f"verification failed ({type(exc).__name__})"})
        emit({"event": "verify", "finding": d.finding, "outcome": "unresolved" if new.conflict else "resolved",
              "status": new.status.value, "needs_review": new.needs_review, "detail": new.verification})
        resolved.append(new)
        checks.append(ev)
    return {"decisions": resolved, "evidence": checks}


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
