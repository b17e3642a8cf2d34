"""One typed record per turn: what the turn asked, used and concluded, in one place.

Why: the UI, the CLI and the exports otherwise piece a turn together from stream events, the
reply's payload and the state. ``TurnRecord`` is the turn's route, its evidence (each marked run
or reused from the study's ledger; a comparison's asks of the tools that read two films together, made
inside the respond node, among them), the study's decisions after the turn and which of them changed
(before, after and the evidence that moved it), the reply text, the tools that were unavailable,
the artifacts and the study it concerns. ``graph.invoke`` returns it under ``record``; the reply's
``additional_kwargs["cxr"]`` carries its compact part (``payload_extras``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from agents.replying.roles import ToolRoles
from agents.routing.rules import Route, as_route
from agents.turn.change_reads import is_change_read
from knowledge.evidence import Artifact, Decision, Evidence, Status


class TurnEvidence(BaseModel):
    """One output the turn used."""

    tool: str
    reused: bool = Field(False, description="Taken from the study's ledger: the tool did not run again.")
    verification: bool = Field(False, description="A targeted re-ask about a conflict.")
    comparison: bool = Field(False, description="A read of the study against its prior by a tool that compares "
                             "priors (or its re-ask about one finding).")
    evidence: Evidence


class DecisionChange(BaseModel):
    """A decision this turn changed, and why."""

    finding: str
    before: Status | None = Field(None, description="None: the study had no decision on it yet.")
    after: Status
    confidence_before: float | None = None
    confidence_after: float
    review_before: bool | None = None
    review_after: bool
    because: list[str] = Field(default_factory=list, description="The outputs of this turn bearing on the finding "
                               "('<tool> (<ask>)', '<tool> re-ask'); empty: it follows from other findings' changes.")


class TurnRecord(BaseModel):
    """Everything one turn did, typed."""

    study_id: str | None = None
    route: Route = Field(default_factory=lambda: Route(intent="chat"), description="The turn's route, typed.")
    evidence: list[TurnEvidence] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list, description="The study's decisions after the turn.")
    changed: list[DecisionChange] = Field(default_factory=list)
    reply: str = ""
    unavailable: list[str] = Field(default_factory=list, description="Tools that failed or timed out this turn.")
    artifacts: list[Artifact] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    roles: ToolRoles = Field(default_factory=ToolRoles.builtin,
                             description="The graph's tool roles: which tool writes, scores or is a prior.")

    @property
    def reused(self) -> list[str]:
        return [e.tool for e in self.evidence if e.reused]


def _bearing(evidence: Sequence[Evidence]) -> dict[str, list[str]]:
    """Per finding, the outputs of this turn that bear on it ('<tool> (<ask>)', '<tool> re-ask'), in
    evidence order, each once: read in one pass over the turn's calls."""
    out: dict[str, list[str]] = {}
    for e in evidence:
        if not e.ok or e.meta.get("reused") or not e.calls:
            continue
        if e.meta.get("verification"):
            label = f"{e.tool} re-ask"
        else:
            ask = e.meta.get("ask") or {}
            label = f"{e.tool} ({str(ask.get('kind', 'output')).replace('_', ' ')})"
        for c in e.calls:
            labels = out.setdefault(c.finding, [])
            if label not in labels:
                labels.append(label)
    return out


def build_record(route: Route | Mapping[str, Any], evidence: Sequence[Evidence], decisions: Sequence[Decision],
                 before: Sequence[Decision], reply: str, *, study_id: str | None,
                 notes: Sequence[str] = (), roles: ToolRoles | None = None,
                 compared: Sequence[Evidence] = ()) -> TurnRecord:
    """The record of a turn from its evidence and the study's decisions before and after it.
    ``compared``: what the tools that compare priors said in this turn's comparison (asked or reused)."""
    evidence = [*evidence, *compared]
    old = {d.finding: d for d in before}
    bearing = _bearing(evidence)
    changed = []
    for d in decisions:
        o = old.get(d.finding)
        if o is not None and (o.status, o.confidence, o.needs_review, o.conflict, o.verification) == \
                (d.status, d.confidence, d.needs_review, d.conflict, d.verification):
            continue
        changed.append(DecisionChange(
            finding=d.finding, before=o.status if o else None, after=d.status,
            confidence_before=o.confidence if o else None, confidence_after=d.confidence,
            review_before=o.needs_review if o else None, review_after=d.needs_review,
            because=list(bearing.get(d.finding, ()))))
    return TurnRecord(
        study_id=study_id, route=as_route(route) or Route(intent="chat"),
        evidence=[TurnEvidence(tool=e.tool, reused=bool(e.meta.get("reused")),
                               verification=bool(e.meta.get("verification")), comparison=is_change_read(e),
                               evidence=e) for e in evidence],
        decisions=list(decisions), changed=changed, reply=reply,
        unavailable=sorted({e.tool for e in evidence if not e.ok and not e.meta.get("verification")}),
        artifacts=[a for e in evidence if e.ok for a in e.artifacts], notes=list(notes),
        roles=roles or ToolRoles.builtin(),
    )


def _change_json(c: DecisionChange) -> dict[str, Any]:
    """``c.model_dump(mode="json")``, written out: a fresh thread's report turn changes every decision."""
    return {"finding": c.finding, "before": None if c.before is None else c.before.value, "after": c.after.value,
            "confidence_before": c.confidence_before, "confidence_after": c.confidence_after,
            "review_before": c.review_before, "review_after": c.review_after, "because": list(c.because)}


def payload_extras(record: TurnRecord) -> dict[str, Any]:
    """What the reply's ``cxr`` payload adds from the record: tools reused, decisions changed and why."""
    return {
        "reused": record.reused,
        "changed": [_change_json(c) for c in record.changed],
    }
