"""The graph's nodes. Each is a method of ``Nodes``, which holds what nodes share but the state
must not: settings, the tool registry (with each tool's declared capabilities), the studies and
the tool runner.

Nothing here raises into LangGraph except an invalid input (``GraphInputError``): a tool's
exception or timeout becomes Evidence(ok=False), a file that cannot be read becomes a polite reply,
and the turn always ends in ``respond``. UI events are the typed ones of agents/turn/events.py. Tools
are told apart by their capabilities (tools.base.ToolCapabilities), never by name.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, Send

from agents.reconciling import decide as reconciler
from agents.replying import compose as responder
from agents.routing.rules import asked_aspect, asked_side, asks_comparison, follow_up
from agents.state import CxrState, validate_input
from agents.turn.events import ToolStartEvent, writer
from agents.turn.history import chat_history
from agents.turn.tool_runner import Deadline, call_with_timeout, plan_chains, shared_pool
from agents.turn.verify import verify_conflicts
from knowledge.evidence import Decision, Evidence
from tools.base import RECONCILED_INTENTS, ToolRequest, capabilities
from tools.ingestion.intake import Studies
from tools.ingestion.study import StudyError

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

HISTORY_TURNS = 20  # chat context passed to the tools: the last N messages (and settings.chat_history_chars)


def message_text(message: BaseMessage | Any) -> str:
    """The text of a message whose content may be a string or a list of content blocks."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b if isinstance(b, str) else str(b.get("text", "")) for b in content if isinstance(b, str | dict)
        ).strip()
    return str(content)


def last_user_text(messages: list[Any]) -> str:
    """The text of the thread's latest user message ("" if there is none)."""
    return next((message_text(m) for m in reversed(messages) if isinstance(m, HumanMessage)), "")


def previous_findings(messages: list[Any]) -> list[str]:
    """The finding(s) the previous turn asked about, from its reply's payload (what "it" refers to)."""
    for m in reversed(messages[:-1]):
        if isinstance(m, AIMessage):
            cxr = (m.additional_kwargs or {}).get("cxr") or {}
            found = cxr.get("findings") or ([cxr["finding"]] if cxr.get("finding") else [])
            return [f for f in found if isinstance(f, str)]
    return []


def _as_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return dict(obj)
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


class Nodes:
    """Node functions bound to one graph's settings, tools and studies."""

    def __init__(self, settings: Settings, tools: dict[str, Any], *, studies: Studies):
        self.settings = settings
        self.tools = tools
        self.caps = {name: capabilities(tool) for name, tool in tools.items()}
        self.studies = studies
        self.pool = shared_pool(int(getattr(settings, "tool_workers", 8)))
        self.roles = responder.ToolRoles.from_capabilities(self.caps)
        from agents.routing import make_router

        self._route = make_router(settings)
        prior = {n for n, c in self.caps.items() if not c.image_source}
        # Whose words are statements, and whose box a decision shows first: report writers, then the other
        # image sources (registry order) - read from capabilities, so a custom writer is treated like the VLM.
        writers = [n for n, c in self.caps.items() if c.image_source and c.writes_report]
        others = [n for n, c in self.caps.items() if c.image_source and not c.writes_report]
        self.policy = reconciler.Policy.from_settings(
            settings, prior_sources=frozenset(prior), statement_sources=frozenset(writers),
            box_preference=(*writers, *others), source_labels=self.roles.labels)

    def study(self, study_id: str) -> Any:
        """The decoded study (memory cache, then the store). Raises KeyError if unknown."""
        return self.studies.get(study_id)

    # ------------------------------------------------------------------ nodes
    def ingest(self, state: CxrState) -> Command:
        """Check the input, reset this turn's results, start the turn's clock, load a new image (or
        check a given study id); go on to the router, or straight to respond when the image could
        not be used."""
        validate_input(state)  # a programming error: raise, naming the key
        update: dict[str, Any] = {"evidence": None, "decisions": None,  # this turn's lists: always reset
                                  "deadline": time.monotonic() + float(self.settings.turn_timeout_s)}
        # The other per-turn keys are reset only when stale: every write, even of an unchanged None,
        # costs a channel version and a serialised checkpoint entry.
        if state.get("notes"):
            update["notes"] = None
        if state.get("ingest_error") is not None:
            update["ingest_error"] = None
        image, previous = state.get("image"), state.get("study_id")
        if too_long := self._too_long(state.get("messages") or [], image is not None):
            update["ingest_error"] = too_long  # refused before anything runs; the conversation goes on
            if refused_id := state["messages"][-1].id:  # not kept in the thread (nor sent to a model later)
                update["messages"] = [RemoveMessage(id=refused_id)]
        elif image is not None:
            try:
                update["study_id"], _ = self.studies.ingest(image, filename=state.get("image_name"))
            except StudyError as exc:
                update["ingest_error"] = self._ingest_message(str(exc), previous)
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not end the conversation
                log.exception("unexpected error while loading an image")
                update["ingest_error"] = self._ingest_message(
                    f"the file could not be decoded ({type(exc).__name__})", previous
                )
        elif previous:
            try:
                self.study(previous)
            except Exception as exc:  # noqa: BLE001 - StudyNotFound, unreadable store entry
                update["study_id"] = None
                update["ingest_error"] = (
                    f"The study `{previous[:12]}` is no longer available ({exc}). "
                    "Please upload the image again."
                )
        if not update.get("ingest_error"):
            return Command(update=update, goto="router")  # the router writes this turn's route
        if state.get("route") is not None:
            update["route"] = None  # respond must not answer with the previous turn's route
        return Command(update=update, goto="respond")

    def _too_long(self, messages: list[Any], with_image: bool) -> str | None:
        """The refusal of an over-long user message (``max_message_chars``, as the UI and ``ask`` apply it)."""
        last = messages[-1] if messages else None
        limit = int(self.settings.max_message_chars)
        if not isinstance(last, HumanMessage) or len(text := message_text(last)) <= limit:
            return None
        image = " The image sent with it was not loaded." if with_image else ""
        return (f"Your message is {len(text):,} characters; the limit is {limit:,} (CXR_AGENT_MAX_MESSAGE_CHARS). "
                f"Please shorten it: nothing was run, and the conversation goes on.{image}")

    @staticmethod
    def _ingest_message(problem: str, previous: str | None) -> str:
        keep = (
            " The previously loaded study is still here: you can keep asking about it, or upload another file."
            if previous
            else " Please upload a chest radiograph as PNG, JPEG or DICOM."
        )
        return f"I could not use that image: {problem.rstrip('.')}.{keep}"

    def router(self, state: CxrState, config: RunnableConfig) -> Command:
        """Classify the turn, then fan out to the tool branches (or go straight to respond).

        Routing by ``Command(goto=...)`` rather than conditional edges: a conditional edge makes
        LangGraph copy every state channel to show it a fresh view, once per edge per turn.
        """
        messages = state.get("messages") or []
        text = last_user_text(messages)
        has_history = bool(state.get("last_result")) or len(messages) > 1
        try:
            route = _as_dict(self._route(text, has_image=bool(state.get("study_id")), has_history=has_history))
            route = follow_up(route, text, previous_findings(messages))
            route["asks_comparison"] = asks_comparison(text)
            route["side"] = asked_side(text)
            route["aspect"] = asked_aspect(text)
        except Exception as exc:  # noqa: BLE001 - routing must never end the turn
            log.exception("router failed")
            route = {"intent": "chat", "finding": None, "phrase": None, "tools": [], "needs_image": False,
                     "reason": f"router failed ({type(exc).__name__}); treated as chat"}
        writer()({"event": "route", "intent": route.get("intent"), "finding": route.get("finding"),
                  "tools": self.selected(route), "reason": route.get("reason", ""),
                  "needs_image": bool(route.get("needs_image")) and not state.get("study_id")})
        return Command(update={"route": route}, goto=self.fan_out(route, state, config))

    def selected(self, route: dict[str, Any]) -> list[str]:
        """Tools to run: every tool, built-in or custom, that serves the turn's intent."""
        intent = route.get("intent")
        if intent == "explain":
            return []
        return [name for name, caps in self.caps.items() if intent in caps.intents]

    def fan_out(self, route: dict[str, Any], state: CxrState, config: RunnableConfig) -> list[Send] | str:
        """Where the router goes: one Send per branch of tools, or straight to respond."""
        intent = route.get("intent", "chat")
        study_id = state.get("study_id")
        if intent == "explain" or (route.get("needs_image") and not study_id):
            return "respond"
        names = self.selected(route)
        if not names:
            return "respond"
        messages = state.get("messages") or []
        text = last_user_text(messages)
        history = (chat_history(messages[:-1], int(self.settings.chat_history_chars), message_text, HISTORY_TURNS)
                   if intent == "chat" else [])
        task = {
            "intent": intent, "text": text, "finding": route.get("finding"), "findings": route.get("findings") or [],
            "phrase": route.get("phrase"),
            "study_id": study_id, "history": history, "deadline": state.get("deadline"),
            "thread_id": (config.get("configurable") or {}).get("thread_id"),
        }
        return [Send("tools", {"chain": chain, "task": task}) for chain in plan_chains(intent, self.tools, names)]

    def _deadline(self, at: float | None) -> Deadline:
        return Deadline(at) if at is not None else Deadline.after(self.settings.turn_timeout_s)

    def run_tools(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One parallel branch: run its tools in order, each on a pool worker with a timeout (its own,
        capped by what is left of the turn); a report writer's draft goes to the tools after it."""
        emit = writer()
        task, chain = payload["task"], payload["chain"]
        deadline = self._deadline(task.get("deadline"))
        study = None
        study_error = None
        if task.get("study_id"):
            try:
                study = self.study(task["study_id"])
            except Exception as exc:  # noqa: BLE001
                study_error = f"study {task['study_id'][:12]} could not be loaded ({exc})"
        out: list[Evidence] = []
        draft: str | None = None
        for i, name in enumerate(chain):
            tool, caps = self.tools[name], self.caps[name]
            start: ToolStartEvent = {"event": "tool_start", "tool": name}
            if self._building_index(tool):
                start["building_index"] = True
            emit(start)
            timeout = deadline.budget(self.settings.tool_timeout_s)
            if study_error:
                ev = Evidence.failure(name, study_error, latency_ms=0.0)
            elif caps.needs_draft and any(self.caps[n].writes_report for n in chain[:i]) and draft is None:
                # "write a report" is no query; neighbours for it would be noise presented as context
                writer_name = next(n for n in chain[:i] if self.caps[n].writes_report)
                ev = Evidence.failure(name, f"not run: {writer_name} produced no draft report to search with",
                                      latency_ms=0.0)
            elif timeout <= 0:
                ev = Evidence.failure(name, f"{name} not run: the turn's deadline "
                                            f"({self.settings.turn_timeout_s:g} s) has passed", latency_ms=0.0)
            else:
                ev = self._call(name, tool, task, study, draft, timeout, emit)
                if caps.writes_report and ev.ok and ev.report and task["intent"] == "report":
                    ev = self._label(ev)
            if caps.writes_report and ev.ok and ev.report:
                draft = ev.report
            emit({"event": "tool_end", "tool": name, "ok": ev.ok, "latency_ms": ev.latency_ms, "error": ev.error})
            out.append(ev)
        return {"evidence": out}

    def _call(self, name: str, tool: Any, task: dict[str, Any], study: Any, draft: str | None,
              timeout: float, emit: Any) -> Evidence:
        live = [True]  # cleared when the call returns or times out: a late tool's events are dropped

        def on_token(text: str) -> None:
            if live[0]:
                emit({"event": "token", "tool": name, "text": text})

        def on_progress(stage: str, done: int, total: int | None) -> None:
            if live[0]:
                emit({"event": "progress", "tool": name, "stage": stage, "done": done, "total": total})

        request = ToolRequest(
            intent=task["intent"], text=task["text"], study=study, finding=task.get("finding"),
            findings=tuple(task.get("findings") or ()), phrase=task.get("phrase"), history=list(task.get("history") or []), draft_report=draft,
            thread_id=task.get("thread_id"), settings=self.settings, on_token=on_token, on_progress=on_progress,
        )
        ev = call_with_timeout(name, lambda: tool.run(request), timeout, cancel=request.cancel, pool=self.pool)
        live[0] = False
        return ev

    def _building_index(self, tool: Any) -> bool:
        """True when a tool that is not ready yet (``ready`` False) will build the prior-report index
        on this call (the UI says that takes a while)."""
        try:
            if getattr(tool, "ready", True) is not False:
                return False
            from tools.retrieval.index import ReportIndex

            return not ReportIndex.exists(self.settings.resolved_index_dir)
        except Exception:  # noqa: BLE001 - a hint only
            return False

    @staticmethod
    def _label(ev: Evidence) -> Evidence:
        """Turn a report's text into FindingCalls (source = the tool, task = "report"), keeping the
        report calls the tool already made; calls of its other skills (e.g. a classification list)
        stay beside them and the reconciler weighs both per source."""
        try:
            from knowledge.labeler import label_report

            labelled = [c.model_copy(update={"source": ev.tool, "task": "report"})
                        for c in label_report(ev.report or "", source=ev.tool)]
        except Exception as exc:  # noqa: BLE001 - an unlabelled report is still shown
            log.warning("labelling the %s report failed: %s", ev.tool, exc)
            return ev.model_copy(update={"meta": {**ev.meta, "label_error": str(exc)}})
        have = {c.finding for c in ev.calls if c.task in (None, "report")}
        return ev.model_copy(update={"calls": [*ev.calls, *(c for c in labelled if c.finding not in have)]})

    def reconcile(self, state: CxrState) -> Command:
        """Decide per finding; go on to verify when a decision is conflicted, else to respond."""
        intent = (state.get("route") or {}).get("intent")
        calls = [c for e in state.get("evidence") or [] if e.ok for c in e.calls]
        emit = writer()
        if intent not in RECONCILED_INTENTS:  # chat / similar cases: nothing about this image to decide
            emit({"event": "reconcile", "decisions": 0, "conflicts": []})
            return Command(goto="respond")
        try:
            # A full report's silence on a finding is weak evidence of absence (reconciler docstring).
            report_sources = {e.tool for e in state.get("evidence") or []
                              if e.ok and e.report and intent == "report" and self._writes_report(e.tool)}
            decisions = reconciler.decide(calls, self.policy, report_sources=report_sources)
            conflicted = reconciler.conflicts(decisions, self.policy)
        except Exception as exc:  # noqa: BLE001
            log.exception("reconciliation failed")
            emit({"event": "reconcile", "decisions": 0, "conflicts": []})
            return Command(
                update={"notes": [f"Reconciliation failed ({type(exc).__name__}: {exc}); tool outputs are shown as-is."]},
                goto="respond",
            )
        emit({"event": "reconcile", "decisions": len(decisions), "conflicts": [d.finding for d in conflicted]})
        return Command(update={"decisions": decisions}, goto="verify" if conflicted else "respond")

    def _writes_report(self, tool_name: str) -> bool:
        caps = self.caps.get(tool_name)
        return caps is not None and caps.writes_report

    def verify(self, state: CxrState, config: RunnableConfig) -> dict[str, Any]:
        """Re-ask a verifying tool about every conflict in one batched call, then apply the
        reconciler's transparent rule (agents/turn/verify.py)."""
        return verify_conflicts(self, state, config)

    def respond(self, state: CxrState) -> dict[str, Any]:
        route = state.get("route") or {"intent": "chat"}
        evidence = list(state.get("evidence") or [])
        decisions = list(state.get("decisions") or [])
        study_id = state.get("study_id")
        study_info = None
        if study_id:
            try:
                s = self.study(study_id)
                study_info = {"id": s.id, "width": s.width, "height": s.height, "view": s.view}
            except Exception:  # noqa: BLE001 - the reply can do without the size
                study_info = {"id": study_id}
        notes = list(state.get("notes") or [])
        if (route.get("intent") not in {"explain", None} and not state.get("ingest_error") and not evidence
                and not (route.get("needs_image") and not study_id)):
            notes.append(f"No tool serves the {str(route.get('intent')).replace('_', ' ')} intent in this setup.")
        prior = state.get("last_result")
        if route.get("intent") == "explain" and prior and study_id and prior.get("study_id") != study_id:
            notes.append("These conclusions were reached on the previously loaded study.")
        try:
            text = responder.compose(route, evidence, decisions, demo=self.settings.is_demo, notes=notes,
                                     study=study_info, prior=prior, ingest_error=state.get("ingest_error"),
                                     roles=self.roles)
        except Exception as exc:  # noqa: BLE001 - the reply itself must not crash the turn
            log.exception("responder failed")
            text = f"The answer could not be composed ({type(exc).__name__}: {exc})."
            if self.settings.is_demo:
                from cxr_agent.settings import DEMO_WARNING

                text = f"> **{DEMO_WARNING}**\n\n{text}"
        cxr = responder.payload(route, evidence, decisions, study_id=study_id, demo=self.settings.is_demo)
        writer()({"event": "reply", "text": text})
        from agents.memory.audit_log import record_reply  # one PHI-free line per reply

        record_reply(self.settings, state, evidence=evidence, policy=self.policy)
        update: dict[str, Any] = {"messages": [AIMessage(content=text, additional_kwargs={"cxr": cxr})]}
        if route.get("intent") in RECONCILED_INTENTS and decisions:
            update["last_result"] = remember(prior, study_id, route.get("intent"), evidence, decisions)
        return update


def remember(prior: dict[str, Any] | None, study_id: str | None, intent: str | None,
             evidence: list[Evidence], decisions: list[Decision]) -> dict[str, Any]:
    """The thread's explainable memory: decisions merged by finding (same study), latest evidence per tool.

    Bounded by the vocabulary and the tool count, so checkpoints do not grow with the conversation.
    """
    if prior and prior.get("study_id") == study_id:
        merged = {d.finding: d for d in prior.get("decisions") or []}
        merged.update({d.finding: d for d in decisions})
        tools = {e.tool: e for e in prior.get("evidence") or []}
        tools.update({e.tool: e for e in evidence if not e.meta.get("verification")})
        return {"study_id": study_id, "intent": intent, "decisions": list(merged.values()),
                "evidence": list(tools.values())}
    return {"study_id": study_id, "intent": intent, "decisions": list(decisions),
            "evidence": [e for e in evidence if not e.meta.get("verification")]}
