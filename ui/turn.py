"""Run one chat turn through the graph and turn its stream into progress lines and a result.

Stream events are progress only; what the turn produced (reply, evidence, decisions, overlays, the
tool roles) is read once, from the turn's ``TurnRecord`` in the respond node's update, in-process and
behind LangGraph Server alike (never from the thread's state). Kept free of Streamlit: the app
passes callbacks that write into its placeholders, and tests drive it with any object that has
``stream``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.replying.roles import ToolRoles
from agents.turn.events import StreamEvent, parse_event
from agents.turn.record import TurnRecord
from knowledge.evidence import Decision, Evidence
from knowledge.vocabulary import display_name

log = logging.getLogger(__name__)


@dataclass
class TurnResult:
    """What one turn produced, in a form the session can keep and the exports can write."""

    user_text: str
    reply: str = ""
    progress: list[str] = field(default_factory=list)
    cxr: dict[str, Any] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    verifications: dict[str, str] = field(default_factory=dict)
    failed_tools: list[str] = field(default_factory=list)
    study_id: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    streamed_chars: int = 0  # text the tools streamed while writing (token events)
    stopped: bool = False  # the reader stopped it (or it never got an answer): no reply is kept
    record: TurnRecord | None = None  # what the graph recorded of the turn (None: restored, stopped or failed)

    @property
    def roles(self) -> ToolRoles | None:
        """Which tool wrote, scored or was a prior this turn (the graph's, from the record)."""
        return self.record.roles if self.record is not None else None

    @property
    def answered(self) -> bool:
        return not self.stopped and not self.error

    @property
    def intent(self) -> str | None:
        return self.cxr.get("intent")


def _names(findings: Any) -> str:
    items = [display_name(str(f)) for f in (findings or [])]
    return ", ".join(items)


def describe_event(event: StreamEvent | Mapping[str, Any]) -> str | None:
    """One human-readable progress line for a stream event (agents/turn/events.py; None for tokens,
    progress and anything unknown)."""
    kind = event.get("event")
    if kind == "route":
        tools = ", ".join(event.get("tools") or []) or "none"
        line = f":material/alt_route: Router: **{event.get('intent', '?')}**"
        if event.get("finding"):
            line += f" about {display_name(str(event['finding']))}"
        line += f" -> tools: {tools}"
        if event.get("reason"):
            line += f" ({event['reason']})"
        return line
    if kind == "tool_start":
        tool = event.get("tool", "?")
        extra = " (first use: building the prior-report index, this can take a minute)" if event.get("building_index") else ""
        if event.get("purpose") == "verify" and event.get("findings"):
            extra = f" (re-asking about {_names(event['findings'])})"
        return f":material/hourglass_top: {tool} started{extra}"
    if kind == "tool_end":
        tool = event.get("tool", "?")
        ms = event.get("latency_ms")
        took = f" in {ms:.0f} ms" if isinstance(ms, int | float) else ""
        if event.get("ok", True):
            return f":material/check_circle: {tool} finished{took}"
        return f":material/error: {tool} failed{took}: {event.get('error') or 'unknown error'}"
    if kind == "reconcile":
        n = event.get("decisions", 0)
        conflicts = event.get("conflicts") or []
        line = f":material/balance: Reconciler: {n} finding decision{'s' if n != 1 else ''}"
        line += f", {len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}"
        if conflicts:
            line += f" ({_names(conflicts)})"
        return line
    if kind == "verify":
        return f":material/fact_check: Verification of {display_name(str(event.get('finding', '?')))}: {event.get('outcome', '?')}"
    if kind == "reply":
        return ":material/edit_note: Reply written"
    if kind in {"token"}:
        return None
    if kind and event.get("message"):  # any other informative event a node chooses to emit
        return f"• {event['message']}"
    return None


def reply_text(message: Any) -> str:
    content = getattr(message, "content", None)
    if content is None and isinstance(message, Mapping):
        content = message.get("content")
    if isinstance(content, list):  # content blocks
        parts = [b.get("text", "") if isinstance(b, Mapping) else str(b) for b in content]
        return "".join(parts)
    return str(content or "")


def cxr_meta(message: Any) -> dict[str, Any]:
    kwargs = getattr(message, "additional_kwargs", None)
    if kwargs is None and isinstance(message, Mapping):
        kwargs = message.get("additional_kwargs")
    meta = (kwargs or {}).get("cxr") if isinstance(kwargs, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def turn_record(update: Any) -> tuple[TurnRecord, Any] | None:
    """The turn record in a stream ``updates`` chunk (``{node: update}``), with the reply message
    written beside it; None when the chunk holds none. A record from a server arrives as a dict."""
    if not isinstance(update, Mapping):
        return None
    for written in update.values():
        found = written.get("record") if isinstance(written, Mapping) else None
        if found is None:
            continue
        record = found if isinstance(found, TurnRecord) else TurnRecord.model_validate(found)
        messages = written.get("messages") or []
        return record, (messages[-1] if isinstance(messages, list | tuple) and messages else None)
    return None


def run_turn(
    graph: Any,
    text: str,
    *,
    thread_id: str,
    extra_inputs: Mapping[str, Any] | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_token: Callable[[str], None] | None = None,
    on_reply: Callable[[str], None] | None = None,
    on_work: Callable[[str, str, int, int | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TurnResult:
    """Stream one turn. Never raises: an unexpected failure comes back as ``result.error``.

    ``on_work(tool, stage, done, total)`` hears long work inside a tool (the first-use index build).

    extra_inputs: graph input keys besides the message, e.g. ``{"study_id": ...}`` for a newly
    uploaded study (or ``{"image": bytes, "image_name": ...}``). The graph itself marks a retrieval
    start that builds the index (``building_index``), so that step is announced as the one-off build.

    ``should_stop()`` is asked after every stream event; once it says True the stream is closed (the
    graph stops before its reply is written, so nothing half-done is checkpointed as an answer) and the
    result comes back with ``stopped`` set and no reply."""
    started = time.perf_counter()
    result = TurnResult(user_text=text)
    inputs: dict[str, Any] = {"messages": [("user", text)], **dict(extra_inputs or {})}
    config = {"configurable": {"thread_id": thread_id}}

    def progress(line: str) -> None:
        result.progress.append(line)
        if on_progress:
            on_progress(line)

    stream = None
    recorded: tuple[TurnRecord, Any] | None = None
    try:
        stream = graph.stream(inputs, config=config, stream_mode=["custom", "updates"])
        for item in stream:
            if should_stop is not None and should_stop():
                result.stopped = True
                break
            mode, chunk = item if isinstance(item, tuple) and len(item) == 2 else ("updates", item)
            if mode == "updates":
                recorded = turn_record(chunk) or recorded
                continue
            chunk = parse_event(chunk) if mode == "custom" else None
            if chunk is None:
                continue
            kind = chunk["event"]
            if kind == "token":
                piece = str(chunk.get("text") or "")
                result.streamed_chars += len(piece)
                if on_token and piece:
                    on_token(piece)
                continue
            if kind == "progress":  # long work inside a tool (first-use index build)
                if on_work:
                    on_work(str(chunk.get("tool") or ""), str(chunk.get("stage") or ""),
                            int(chunk.get("done") or 0), chunk.get("total"))
                continue
            if kind == "reply" and on_reply:  # shown while the turn ends; the record's text is kept
                on_reply(str(chunk.get("text") or ""))
            line = describe_event(chunk)
            if line:
                progress(line)
        if result.stopped:
            _close(stream)
            result.elapsed_s = time.perf_counter() - started
            return result
    except Exception as exc:  # the app must survive anything the graph does
        log.exception("turn failed")
        result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        result.elapsed_s = time.perf_counter() - started
        return result

    if recorded is None:
        result.error = "The assistant returned no reply."
    else:
        read_record(result, *recorded)
    result.elapsed_s = time.perf_counter() - started
    return result


def read_record(result: TurnResult, record: TurnRecord, message: Any) -> None:
    """Fill ``result`` from the turn's record (and the reply message's ``cxr`` payload: its boxes and
    heatmaps as the reply cites them)."""
    result.record = record
    result.reply = record.reply or (reply_text(message) if message is not None else "")
    result.cxr = cxr_meta(message) if message is not None else {}
    result.evidence = [e.evidence for e in record.evidence]
    result.decisions = list(record.decisions)
    result.verifications = {d.finding: d.verification for d in record.decisions if d.verification}
    result.failed_tools = list(record.unavailable)
    result.study_id = record.study_id or result.cxr.get("study_id")
    if not result.reply:
        result.error = "The assistant returned no reply."


def _close(stream: Any) -> None:
    """Close a stopped turn's stream: LangGraph then cancels the step in flight and runs no further node."""
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - the turn is already stopped; closing is best effort
            log.warning("closing a stopped turn's stream failed", exc_info=True)
