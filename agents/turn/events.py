"""The graph's custom stream events (``stream_mode="custom"``): one typed definition shared by the
nodes that emit them and the UI and CLI that read them.

On the wire each event is a plain dict whose ``event`` key names its kind (LangGraph streams what
the node writes, and the UI tests replay recorded dicts), so these are TypedDicts: the type checker
sees the fields, nothing is converted at run time. ``parse_event`` is the one place a consumer turns
a raw stream chunk into a known event (or None).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NotRequired, TypedDict, get_args


class RouteEvent(TypedDict):
    event: Literal["route"]
    intent: str | None
    finding: str | None
    tools: list[str]
    reason: str
    needs_image: bool


class ToolStartEvent(TypedDict):
    event: Literal["tool_start"]
    tool: str
    building_index: NotRequired[bool]  # the first-use prior-report index build starts now
    purpose: NotRequired[Literal["verify", "compare"]]  # a verification re-ask, or a two-film comparison read
    findings: NotRequired[list[str]]  # the findings re-asked (purpose == "verify"; "compare": a re-ask's one)


class ToolEndEvent(TypedDict):
    event: Literal["tool_end"]
    tool: str
    ok: bool
    latency_ms: float | None
    error: str | None
    purpose: NotRequired[Literal["verify", "compare"]]
    findings: NotRequired[list[str]]


class TokenEvent(TypedDict):
    event: Literal["token"]
    tool: str
    text: str


class ProgressEvent(TypedDict):
    """Long work inside a tool, e.g. the first-use index build: ``done`` of ``total`` (None if unknown)."""

    event: Literal["progress"]
    tool: str
    stage: str
    done: int
    total: int | None


class ReconcileEvent(TypedDict):
    event: Literal["reconcile"]
    decisions: int
    conflicts: list[str]


class VerifyEvent(TypedDict):
    event: Literal["verify"]
    finding: str
    outcome: Literal["resolved", "unresolved", "skipped"]
    status: NotRequired[str]
    needs_review: NotRequired[bool]
    detail: NotRequired[str | None]


class ReplyEvent(TypedDict):
    event: Literal["reply"]
    text: str


class NoteEvent(TypedDict):
    """Something the user should know (e.g. verification skipped)."""

    event: Literal["note"]
    message: str


StreamEvent = (RouteEvent | ToolStartEvent | ToolEndEvent | TokenEvent | ProgressEvent | ReconcileEvent
               | VerifyEvent | ReplyEvent | NoteEvent)
EventKind = Literal["route", "tool_start", "tool_end", "token", "progress", "reconcile", "verify", "reply", "note"]
EVENT_TYPES: dict[str, type] = {
    "route": RouteEvent, "tool_start": ToolStartEvent, "tool_end": ToolEndEvent, "token": TokenEvent,
    "progress": ProgressEvent, "reconcile": ReconcileEvent, "verify": VerifyEvent, "reply": ReplyEvent,
    "note": NoteEvent,
}
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))
Writer = Callable[[StreamEvent], None]


def parse_event(chunk: Any) -> StreamEvent | None:
    """The event in one ``custom`` stream chunk, or None for anything that is not one of ours."""
    if isinstance(chunk, Mapping) and chunk.get("event") in EVENT_KINDS:
        return chunk  # type: ignore[return-value]  # the wire form is the TypedDict itself
    return None


def writer() -> Writer:
    """LangGraph's stream writer inside a run; a no-op outside one (unit tests, direct calls)."""
    try:
        from langgraph.config import get_stream_writer

        return get_stream_writer()
    except Exception:  # not inside a runnable context
        return _discard


def _discard(_event: StreamEvent) -> None:
    return None
