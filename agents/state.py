"""The graph's state: references and per-turn results, never pixel arrays.

``evidence`` and ``decisions`` hold what THIS turn produced: the first node of every turn
writes ``None`` to them (the reset marker), parallel tool branches then append their
Evidence, and decisions are upserted by finding (verification replaces a conflicted
decision instead of duplicating it). ``last_result`` keeps the latest reconciled turn so
``explain`` can answer from it without re-running any tool. ``image`` is an untracked
channel: it is read by ingest within the turn and never written into a checkpoint channel
(the raw invoke input is still recorded once by LangGraph; pass a ``study_id`` of an
already stored study to keep image bytes out of checkpoints entirely).
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.graph.message import add_messages

from knowledge.evidence import Decision, Evidence


def per_turn(left: list | None, right: list | None) -> list:
    """Append reducer that a ``None`` update resets (one reset per turn, then branches append)."""
    if right is None:
        return []
    return [*(left or []), *right]


def per_turn_by_finding(left: list[Decision] | None, right: list[Decision] | None) -> list[Decision]:
    """Like per_turn, but a decision for a finding already present replaces it in place."""
    if right is None:
        return []
    out = list(left or [])
    index = {d.finding: i for i, d in enumerate(out)}
    for d in right:
        if d.finding in index:
            out[index[d.finding]] = d
        else:
            index[d.finding] = len(out)
            out.append(d)
    return out


class CxrState(TypedDict, total=False):
    """State of one conversation thread.

    Input keys: ``messages`` (the user turn), optionally ``image`` (path, bytes) with
    ``image_name`` (file name for bytes), or ``study_id`` (an id already in the StudyStore).
    """

    messages: Annotated[list[AnyMessage], add_messages]
    image: Annotated[Any, UntrackedValue(Any)]
    image_name: Annotated[str | None, UntrackedValue(Any)]
    study_id: str | None
    route: dict[str, Any] | None
    evidence: Annotated[list[Evidence], per_turn]
    decisions: Annotated[list[Decision], per_turn_by_finding]
    notes: Annotated[list[str], per_turn]
    ingest_error: str | None
    last_result: dict[str, Any] | None
