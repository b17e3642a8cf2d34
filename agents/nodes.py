"""The graph's nodes. Each is a method of ``Nodes``, which holds what nodes share but the state
must not: settings, the tool registry, the study store and a small cache of decoded studies.

Nothing here raises into LangGraph: a tool's exception or timeout becomes Evidence(ok=False),
a file that cannot be read becomes a polite reply, and the turn always ends in ``respond``.
UI events go through LangGraph's stream writer (``stream_mode="custom"``); see EVENTS below.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, Send

from agents import reconciler, responder
from agents.state import CxrState
from knowledge.evidence import BUILTIN_SOURCES, Box, Decision, Evidence
from tools.base import ToolRequest
from tools.registry import is_image_source, to_evidence
from tools.study import StudyError

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.study import Study

log = logging.getLogger(__name__)

# The custom stream events (stream_mode="custom"), a contract with the UI:
EVENTS = {
    "route": ("intent", "finding", "tools", "reason"),
    "tool_start": ("tool",),
    "tool_end": ("tool", "ok", "latency_ms", "error"),
    "token": ("tool", "text"),
    "reconcile": ("decisions", "conflicts"),
    "verify": ("finding", "outcome"),
    "reply": ("text",),
    "note": ("message",),  # something the user should know (e.g. verification skipped)
}
RECONCILED_INTENTS = frozenset({"report", "locate", "finding_question"})
HISTORY_TURNS = 20  # chat context passed to the VLM: the last N messages
STUDY_CACHE = 16  # decoded studies kept in memory (tool branches of one turn share one decode)


def _writer() -> Callable[[dict[str, Any]], None]:
    """LangGraph's stream writer inside a run; a no-op outside one (unit tests, direct calls)."""
    try:
        from langgraph.config import get_stream_writer

        return get_stream_writer()
    except Exception:  # not inside a runnable context
        return lambda _event: None


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


def _as_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return dict(obj)
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


class DaemonPool:
    """Reusable daemon worker threads for tool calls.

    Not a ThreadPoolExecutor: its workers are joined at interpreter exit, so one tool that hangs
    forever would hang the app's shutdown. Here a hung tool keeps its (daemon) worker and the pool
    starts another when no worker is idle; idle workers are reused, so a turn does not pay for
    starting threads (milliseconds each on a loaded machine). A call is handed over as a ``_Call``
    whose lock is released when it finishes: one C-level lock per call instead of a Future's
    Condition machinery, since every tool call of every turn pays for the handoff.
    """

    def __init__(self, prefix: str = "cxr-tool") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._prefix = prefix
        self._count = 0

    def submit(self, fn: Callable[[], Any]) -> _Call:
        call = _Call(fn)
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._count += 1
                threading.Thread(target=self._work, name=f"{self._prefix}-{self._count}", daemon=True).start()
        self._jobs.put(call)
        return call

    def _work(self) -> None:
        while True:
            call = self._jobs.get()
            try:
                call.result = call.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting node
                call.error = exc
            finally:
                call.fn = None
                with self._lock:  # idle before the waiter wakes: its next submit reuses this worker
                    self._idle += 1
                call.finished.release()


class _Call:
    """One call handed to a DaemonPool worker: ``finished`` is released once result/error is set."""

    __slots__ = ("fn", "result", "error", "finished")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn: Callable[[], Any] | None = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = threading.Lock()
        self.finished.acquire()

    def wait(self, timeout_s: float) -> bool:
        """True when the call finished within ``timeout_s`` seconds."""
        return self.finished.acquire(timeout=min(max(0.0, timeout_s), threading.TIMEOUT_MAX))


_POOL = DaemonPool()


def call_with_timeout(name: str, fn: Callable[[], Any], timeout_s: float) -> Evidence:
    """Run ``fn`` on a daemon worker thread; stop waiting after ``timeout_s``. Never raises.

    A timed-out call keeps running on its worker (Python cannot kill a thread); its late result is
    discarded.
    """
    t0 = time.perf_counter()
    context = contextvars.copy_context()  # the run's config: stream writer, callbacks, tracing
    call = _POOL.submit(lambda: context.run(fn))
    if not call.wait(timeout_s):
        latency = (time.perf_counter() - t0) * 1000
        return Evidence.failure(name, f"{name} timed out after {timeout_s:g} s", latency_ms=latency)
    latency = (time.perf_counter() - t0) * 1000
    if call.error is not None:  # a tool that raises TimeoutError itself lands here, not as a timeout
        exc = call.error
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc)
        return Evidence.failure(name, f"{name} failed: {type(exc).__name__}: {exc}", latency_ms=latency)
    out = call.result
    try:
        ev = to_evidence(name, out)
    except Exception as exc:  # noqa: BLE001 - a custom tool returned something unusable
        return Evidence.failure(name, f"{name} returned {type(out).__name__}, not Evidence ({exc})", latency_ms=latency)
    if ev.latency_ms is None:
        ev = ev.model_copy(update={"latency_ms": latency})
    return ev


def plan_chains(intent: str, names: list[str]) -> list[list[str]]:
    """Parallel branches, each a sequence of tools.

    For a report, retrieval runs right after the VLM in the VLM's branch so it can query with the
    VLM's draft report (a far better query than "write a report"); the classifier and custom tools
    run beside that branch. Retrieval costs ~25 ms against the VLM's seconds, so the turn's
    critical path grows by one retrieval, not by the classifier. Everything else: one branch per tool.
    """
    if intent == "report" and "vlm" in names and "retrieval" in names:
        rest = [n for n in names if n not in {"vlm", "retrieval"}]
        return [["vlm", "retrieval"], *([n] for n in rest)]
    return [[n] for n in names]


class Nodes:
    """Node functions bound to one graph's settings, tools and study store."""

    def __init__(self, settings: Settings, tools: dict[str, Any], *, store: Any = None):
        self.settings = settings
        self.tools = tools
        self._store = store
        self._store_lock = threading.Lock()
        self._cache: OrderedDict[str, Study] = OrderedDict()
        self._cache_lock = threading.Lock()
        from agents.router import make_router

        self._route = make_router(settings)
        prior = {"retrieval", *(n for n, t in tools.items() if not is_image_source(t))}
        self.policy = reconciler.Policy.from_settings(settings, prior_sources=frozenset(prior))

    # ------------------------------------------------------------------ studies
    @property
    def store(self) -> Any:
        with self._store_lock:
            if self._store is None:
                from tools.study_store import StudyStore

                self._store = StudyStore.from_settings(self.settings)
            return self._store

    def _remember(self, study: Study) -> None:
        with self._cache_lock:
            self._cache[study.id] = study
            self._cache.move_to_end(study.id)
            while len(self._cache) > STUDY_CACHE:
                self._cache.popitem(last=False)

    def study(self, study_id: str) -> Study:
        """The decoded study (memory cache, then the store). Raises KeyError if unknown."""
        with self._cache_lock:
            if study_id in self._cache:
                self._cache.move_to_end(study_id)
                return self._cache[study_id]
        study = self.store.get(study_id)
        self._remember(study)
        return study

    def store_image(self, source: Any, *, filename: str | None = None) -> str:
        """Decode, de-identify and store an image; returns its study id (raises StudyError)."""
        from tools.imaging import load_study

        study = load_study(source, filename=filename)
        study_id = self.store.put(study)
        self._remember(study)
        return study_id

    # ------------------------------------------------------------------ nodes
    def ingest(self, state: CxrState) -> Command:
        """Reset this turn's results; load a new image (or check a given study id); go on to the
        router, or straight to respond when the image could not be used."""
        update: dict[str, Any] = {"evidence": None, "decisions": None}  # this turn's lists: always reset
        # The other per-turn keys are reset only when stale: every write, even of an unchanged None,
        # costs a channel version and a serialised checkpoint entry.
        if state.get("notes"):
            update["notes"] = None
        if state.get("ingest_error") is not None:
            update["ingest_error"] = None
        image, previous = state.get("image"), state.get("study_id")
        if image is not None:
            try:
                update["study_id"] = self.store_image(image, filename=state.get("image_name"))
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
        text = next((message_text(m) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        has_history = bool(state.get("last_result")) or len(messages) > 1
        try:
            route = _as_dict(self._route(text, has_image=bool(state.get("study_id")), has_history=has_history))
        except Exception as exc:  # noqa: BLE001 - routing must never end the turn
            log.exception("router failed")
            route = {"intent": "chat", "finding": None, "phrase": None, "tools": ["vlm"], "needs_image": False,
                     "reason": f"router failed ({type(exc).__name__}); treated as chat"}
        _writer()({"event": "route", "intent": route.get("intent"), "finding": route.get("finding"),
                   "tools": self.selected(route), "reason": route.get("reason", ""),
                   "needs_image": bool(route.get("needs_image")) and not state.get("study_id")})
        return Command(update={"route": route}, goto=self.fan_out(route, state, config))

    def selected(self, route: dict[str, Any]) -> list[str]:
        """Tools to run: the router's built-ins plus every custom tool serving the intent."""
        intent, wanted = route.get("intent"), set(route.get("tools") or ())
        if intent == "explain":
            return []
        return [
            name for name, tool in self.tools.items()
            if (name in wanted and intent in tool.intents) or (name not in BUILTIN_SOURCES and intent in tool.intents)
        ]

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
        text = next((message_text(m) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        history = []
        if intent == "chat":
            for m in messages[:-1][-HISTORY_TURNS:]:
                role = "user" if isinstance(m, HumanMessage) else "assistant" if isinstance(m, AIMessage) else None
                if role:
                    history.append({"role": role, "content": message_text(m)})
        task = {
            "intent": intent, "text": text, "finding": route.get("finding"), "phrase": route.get("phrase"),
            "study_id": study_id, "history": history,
            "thread_id": (config.get("configurable") or {}).get("thread_id"),
        }
        return [Send("tools", {"chain": chain, "task": task}) for chain in plan_chains(intent, names)]

    def run_tools(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One parallel branch: run its tools in order, each in a worker thread with a timeout."""
        writer = _writer()
        task, chain = payload["task"], payload["chain"]
        timeout = float(self.settings.tool_timeout_s)
        study = None
        study_error = None
        if task.get("study_id"):
            try:
                study = self.study(task["study_id"])
            except Exception as exc:  # noqa: BLE001
                study_error = f"study {task['study_id'][:12]} could not be loaded ({exc})"
        out: list[Evidence] = []
        draft: str | None = None
        for name in chain:
            tool = self.tools[name]
            start: dict[str, Any] = {"event": "tool_start", "tool": name}
            if self._building_index(name, tool):
                start["building_index"] = True
            writer(start)
            if study_error:
                ev = Evidence.failure(name, study_error, latency_ms=0.0)
            elif name == "retrieval" and "vlm" in chain[: chain.index(name)] and draft is None:
                # "write a report" is no query; neighbours for it would be noise presented as context
                ev = Evidence.failure(name, "not run: the VLM produced no draft report to search with",
                                      latency_ms=0.0)
            else:
                live = [True]  # cleared when the call returns or times out

                def on_token(text: str, _name: str = name, _live: list[bool] = live) -> None:
                    if _live[0]:  # a timed-out tool's late tokens are dropped
                        writer({"event": "token", "tool": _name, "text": text})

                def on_progress(stage: str, done: int, total: int | None, _name: str = name,
                                _live: list[bool] = live) -> None:
                    if _live[0]:
                        writer({"event": "progress", "tool": _name, "stage": stage, "done": done, "total": total})

                request = ToolRequest(
                    intent=task["intent"], text=task["text"], study=study, finding=task.get("finding"),
                    phrase=task.get("phrase"), history=list(task.get("history") or []), draft_report=draft,
                    thread_id=task.get("thread_id"), settings=self.settings, on_token=on_token,
                    on_progress=on_progress,
                )
                ev = call_with_timeout(name, lambda t=tool, r=request: t.run(r), timeout)
                live[0] = False
                if ev.ok and ev.report and task["intent"] == "report":
                    ev = self._label(ev)
            if name == "vlm" and ev.ok and ev.report:
                draft = ev.report
            writer({"event": "tool_end", "tool": name, "ok": ev.ok, "latency_ms": ev.latency_ms, "error": ev.error})
            out.append(ev)
        return {"evidence": out}

    def _building_index(self, name: str, tool: Any) -> bool:
        """True when the retrieval tool will build its index on this call (the UI says it takes a while)."""
        if name != "retrieval":
            return False
        try:
            if getattr(tool, "ready", True):
                return False
            from tools.retrieval.index import ReportIndex

            return not ReportIndex.exists(self.settings.resolved_index_dir)
        except Exception:  # noqa: BLE001 - a hint only
            return False

    @staticmethod
    def _label(ev: Evidence) -> Evidence:
        """Turn a report's text into FindingCalls (source = the tool), keeping calls it already made."""
        try:
            from knowledge.labeler import label_report

            labelled = [c if c.source == ev.tool else c.model_copy(update={"source": ev.tool})
                        for c in label_report(ev.report or "", source=ev.tool)]
        except Exception as exc:  # noqa: BLE001 - an unlabelled report is still shown
            log.warning("labelling the %s report failed: %s", ev.tool, exc)
            return ev.model_copy(update={"meta": {**ev.meta, "label_error": str(exc)}})
        have = {c.finding for c in ev.calls}
        return ev.model_copy(update={"calls": [*ev.calls, *(c for c in labelled if c.finding not in have)]})

    def reconcile(self, state: CxrState) -> Command:
        """Decide per finding; go on to verify when a decision is conflicted, else to respond."""
        intent = (state.get("route") or {}).get("intent")
        calls = [c for e in state.get("evidence") or [] if e.ok for c in e.calls]
        if intent not in RECONCILED_INTENTS:  # chat / similar cases: nothing about this image to decide
            _writer()({"event": "reconcile", "decisions": 0, "conflicts": []})
            return Command(goto="respond")
        try:
            # A full report's silence on a finding is weak evidence of absence (reconciler docstring).
            report_sources = {e.tool for e in state.get("evidence") or []
                              if e.ok and e.report and intent == "report"}
            decisions = reconciler.decide(calls, self.policy, report_sources=report_sources)
            conflicted = reconciler.conflicts(decisions, self.policy)
        except Exception as exc:  # noqa: BLE001
            log.exception("reconciliation failed")
            _writer()({"event": "reconcile", "decisions": 0, "conflicts": []})
            return Command(
                update={"notes": [f"Reconciliation failed ({type(exc).__name__}: {exc}); tool outputs are shown as-is."]},
                goto="respond",
            )
        _writer()({"event": "reconcile", "decisions": len(decisions), "conflicts": [d.finding for d in conflicted]})
        return Command(update={"decisions": decisions}, goto="verify" if conflicted else "respond")

    def verify(self, state: CxrState, config: RunnableConfig) -> dict[str, Any]:
        """One targeted VLM re-ask per conflict, then the reconciler's transparent rule."""
        writer = _writer()
        conflicted = reconciler.conflicts(list(state.get("decisions") or []), self.policy)
        names = ", ".join(d.finding.replace("_", " ") for d in conflicted)
        if not self.settings.verify_conflicts:
            note = (f"Conflicts ({names}) were not re-checked: verification is turned off "
                    "(CXR_AGENT_VERIFY_CONFLICTS=false); they stay flagged for review.")
            writer({"event": "note", "message": note})
            return {"notes": [note]}
        vlm = self.tools.get("vlm")
        evidence = list(state.get("evidence") or [])
        vlm_ev = next((e for e in evidence if e.tool == "vlm"), None)
        if vlm is None or (vlm_ev is not None and not vlm_ev.ok):
            why = vlm_ev.error if vlm_ev is not None else "no VLM tool is configured"
            note = f"Conflicts ({names}) were not re-checked: the VLM is unavailable ({why}); they stay flagged for review."
            for d in conflicted:
                writer({"event": "verify", "finding": d.finding, "outcome": "skipped"})
            writer({"event": "note", "message": note})
            return {"notes": [note]}
        study_id = state.get("study_id")
        thread_id = (config.get("configurable") or {}).get("thread_id")
        resolved: list[Decision] = []
        checks: list[Evidence] = []
        for d in conflicted:
            writer({"event": "tool_start", "tool": "vlm", "purpose": "verify", "finding": d.finding})

            def ask(finding: str = d.finding) -> Evidence:
                return vlm.verify_finding(self.study(study_id), finding, thread_id=thread_id)

            ev = call_with_timeout("vlm", ask, float(self.settings.tool_timeout_s))
            ev = ev.model_copy(update={"meta": {**ev.meta, "verification": d.finding}})
            writer({"event": "tool_end", "tool": "vlm", "ok": ev.ok, "latency_ms": ev.latency_ms, "error": ev.error,
                    "purpose": "verify", "finding": d.finding})
            try:
                new = reconciler.resolve(d, ev, classifier_box=classifier_box(evidence, d.finding), policy=self.policy)
            except Exception as exc:  # noqa: BLE001
                log.exception("resolve failed")
                new = d.model_copy(update={"needs_review": True,
                                           "verification": f"verification failed ({type(exc).__name__})"})
            writer({"event": "verify", "finding": d.finding,
                    "outcome": "unresolved" if new.conflict else "resolved",
                    "status": new.status.value, "needs_review": new.needs_review, "detail": new.verification})
            resolved.append(new)
            checks.append(ev)
        return {"decisions": resolved, "evidence": checks}

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
                                     study=study_info, prior=prior, ingest_error=state.get("ingest_error"))
        except Exception as exc:  # noqa: BLE001 - the reply itself must not crash the turn
            log.exception("responder failed")
            text = f"The answer could not be composed ({type(exc).__name__}: {exc})."
            if self.settings.is_demo:
                from cxr_agent.settings import DEMO_WARNING

                text = f"> **{DEMO_WARNING}**\n\n{text}"
        cxr = responder.payload(route, evidence, decisions, study_id=study_id, demo=self.settings.is_demo)
        _writer()({"event": "reply", "text": text})
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


def classifier_box(evidence: list[Evidence], finding: str) -> Box | None:
    """The classifier's heatmap box for ``finding`` this turn (artifact first, then the call's box)."""
    for e in evidence:
        if e.tool != "classifier" or not e.ok:
            continue
        for a in e.artifacts:
            if a.kind == "heatmap" and a.finding == finding and a.box is not None:
                return a.box
        for c in e.calls:
            if c.finding == finding and c.box is not None:
                return c.box
    return None
