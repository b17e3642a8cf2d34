"""What travels beside the reply (``AIMessage.additional_kwargs["cxr"]``): everything the short text leaves
out. The UI's evidence panel draws from it: every decision, every call with its score, quote and box,
the boxes and heatmaps to overlay, which findings need review, which tools failed or were cut off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.replying.parts import unavailable
from agents.routing.rules import Route, as_route
from knowledge.evidence import Decision, Evidence, FindingCall, Status
from knowledge.vocabulary import display_name

_CALL_FIELDS = {"finding", "status", "score", "score_kind", "source", "box", "text", "span", "implied", "task"}


def _call(c: FindingCall) -> dict[str, Any]:
    return c.model_dump(mode="json", include=_CALL_FIELDS, exclude_none=True)


def payload(
    route: Route | Mapping[str, Any],
    evidence: Sequence[Evidence],
    decisions: Sequence[Decision],
    *,
    study_id: str | None,
    demo: bool,
) -> dict[str, Any]:
    """additional_kwargs["cxr"] of the reply. ``calls``: every call of the turn (re-ask answers included),
    with its decision's finding; ``decisions``: each decision without its calls (they are in ``calls``)."""
    typed = as_route(route) or Route(intent="chat")
    boxes: list[dict[str, Any]] = []
    heatmaps: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for e in evidence:
        if not e.ok:
            continue
        for c in e.calls:
            calls.append(_call(c))
            if c.box is None or c.status == Status.absent:
                continue
            key = (c.finding, c.source, c.box.x1, c.box.y1, c.box.x2, c.box.y2)
            if key in seen:
                continue
            seen.add(key)
            boxes.append(
                {"finding": c.finding, "source": c.source, "x1": c.box.x1, "y1": c.box.y1, "x2": c.box.x2,
                 "y2": c.box.y2, "label": c.box.label or display_name(c.finding)}
            )
        for a in e.artifacts:
            if a.kind == "boxes" and a.box is not None and a.meta.get("location_only"):
                # A VLM grounding box: drawn as a location, never counted as a finding call.
                key = (a.finding, e.tool, a.box.x1, a.box.y1, a.box.x2, a.box.y2)
                if key not in seen:
                    seen.add(key)
                    boxes.append({"finding": a.finding or "", "source": e.tool, "x1": a.box.x1, "y1": a.box.y1,
                                  "x2": a.box.x2, "y2": a.box.y2, "location_only": True,
                                  "label": f"{a.meta.get('target') or a.box.label or 'region'} (location)"})
            if a.kind == "heatmap":
                heatmaps.append(
                    {"finding": a.finding, "source": e.tool, "uri": a.uri,
                     "box": a.box.model_dump() if a.box is not None else None}
                )
    # Calls the reconciler implied (a report's silence) exist only on the decision: keep them too.
    listed = {(c["finding"], c["source"], c.get("task"), c["status"]) for c in calls}
    for d in decisions:
        for c in d.calls:
            if (c.finding, c.source, c.task, c.status.value) not in listed:
                listed.add((c.finding, c.source, c.task, c.status.value))
                calls.append(_call(c))
    return {
        "study_id": study_id,
        "intent": typed.intent,
        "finding": typed.finding,  # what the turn asked about: a later "where is it?" refers to it
        "findings": list(typed.findings),
        "demo": demo,
        "boxes": boxes,
        "heatmaps": heatmaps,
        "unavailable": sorted({e.tool for e in unavailable(evidence)}),
        "truncated": sorted({e.tool for e in evidence if e.ok and e.truncated}),
        "review": [d.finding for d in decisions if d.needs_review],
        "calls": calls,
        "decisions": [d.model_dump(mode="json", exclude={"calls", "reasons"}) for d in decisions],
    }
