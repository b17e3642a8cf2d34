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

from agents.memory.ledger import (
    REUSED_META,
    Ask,
    SharedOutputs,
    StudyLedger,
    as_decisions,
    as_earlier,
    as_ledger,
    ask_of,
    from_legacy,
    key_for,
    shelve,
    study_decisions,
    words_hash,
)
from agents.reconciling import decide as reconciler
from agents.reconciling.study import reconcile_study, signature, unasked
from agents.replying import clarify as clarifying
from agents.replying import compose as responder
from agents.routing import Route, as_route, route_turn
from agents.state import CxrState, validate_input
from agents.turn.change_reads import ChangeReader
from agents.turn.comparison import compare_with_prior, comparison_route, with_comparison
from agents.turn.events import ToolStartEvent, writer
from agents.turn.history import chat_history
from agents.turn.record import build_record, payload_extras
from agents.turn.tool_runner import Deadline, call_with_timeout, plan_chains, shared_pool
from agents.turn.verify import heatmap_box, verify_conflicts
from knowledge.evidence import Evidence
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


_MODEL_SETTINGS = ("model_profile", "vlm_", "classifier_", "embedder", "index_", "openai_model", "retrieval_")


def runner_digest(settings: Any, name: str, tool: Any) -> str:
    """A digest of what a tool's output depends on besides the study and the ask: its name and kind
    and every model setting, so an output is never reused after a model or its weights change."""
    import hashlib
    import json

    fields = getattr(type(settings), "model_fields", {})
    values = {k: str(getattr(settings, k, None)) for k in sorted(fields) if k.startswith(_MODEL_SETTINGS)}
    kind = getattr(tool, "target", None) or f"{type(tool).__module__}.{type(tool).__qualname__}"
    blob = json.dumps({"tool": name, "kind": str(kind), "settings": values}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Nodes:
    """Node functions bound to one graph's settings, tools and studies."""

    def __init__(self, settings: Settings, tools: dict[str, Any], *, studies: Studies):
        self.settings = settings
        self.tools = tools
        self.caps = {name: capabilities(tool) for name, tool in tools.items()}
        self.studies = studies
        self.pool = shared_pool(int(getattr(settings, "tool_workers", 8)))
        # The graph's one reading of roles from capabilities: the policy, every reply and each turn record
        # (which the UI draws from) use this value, so a custom writer is treated like the VLM everywhere.
        self.roles = responder.ToolRoles.from_capabilities(self.caps)
        from agents.routing import make_router

        self._route = make_router(settings)
        self.policy = reconciler.Policy.from_settings(
            settings, prior_sources=self.roles.prior_sources, statement_sources=self.roles.statement_sources,
            box_preference=self.roles.box_preference, source_labels=self.roles.labels)
        self.image_sources = self.roles.image_sources
        self.runners = {name: runner_digest(settings, name, tool) for name, tool in tools.items()}
        self.shared = SharedOutputs()  # fixed-prompt outputs, shared by this graph's conversations

    def study(self, study_id: str) -> Any:
        """The decoded study (memory cache, then the store). Raises KeyError if unknown."""
        return self.studies.get(study_id)

    # ------------------------------------------------------------------ the study's ledger
    def cacheable(self, name: str) -> bool:
        """Whether a tool's complete output may answer a later identical ask instead of a new run."""
        return bool(getattr(self.caps[name], "cacheable", False) or getattr(self.tools[name], "cacheable", False))

    def ask_for(self, name: str, task: dict[str, Any], draft: str | None = None) -> Ask | None:
        """What ``name`` is asked this turn (None: not a study read, e.g. chat; never recorded).

        A non-writing image source (the classifier) reads the whole image whatever the question, so its
        ask is ``image`` (a locate asks it for heatmaps of the named findings too); a report is a fixed
        prompt; a draft-reader is asked with the draft; any other ask carries a digest of the user's words.
        """
        intent = task.get("intent")
        if intent not in RECONCILED_INTENTS:
            return None
        findings = tuple(task.get("findings") or ([task["finding"]] if task.get("finding") else []))
        if name in self.roles.drafted:
            return Ask(kind=intent, findings=() if draft else findings, words=words_hash(draft or task.get("text")))
        if name in self.roles.scorers:
            return Ask(kind="locate", findings=findings) if intent == "locate" and findings else Ask(kind="image")
        if intent == "report":
            return Ask(kind="report")
        return Ask(kind=intent, findings=findings, words=words_hash(" ".join(filter(None, (task.get("text"),
                                                                                          task.get("phrase"))))))

    def reusable(self, ledger: StudyLedger | None, name: str, ask: Ask | None,
                 study_id: str | None = None) -> Evidence | None:
        """This study's complete output answering ``ask`` with the same tool and settings, if any: from
        the thread's ledger, else (a fixed-prompt ask) from another conversation on the same study."""
        if ask is None or not self.cacheable(name):
            return None
        runner = self.runners.get(name)
        if ledger is None:
            shared = self.shared.get(study_id, name, ask, runner) if study_id else None
            return None if shared is None else shared.model_copy(
                update={"meta": {**shared.meta, REUSED_META: True, "ask": ask.model_dump(mode="json")}})
        hit = ledger.lookup(name, ask, runner)
        if hit is None and ask.kind == "image":  # every output of a whole-image reader holds its scores
            hit = next(iter(ledger.of_tool(name, "locate", runner)), None)
        if hit is None and ask.kind == "locate":  # a whole-image read, with heatmaps of the named findings if any
            reads = ledger.of_tool(name, "image", runner)
            hit = next((e for e in reads
                        if set(ask.findings) <= {a.finding for a in e.evidence.artifacts if a.kind == "heatmap"}),
                       next(iter(reads), None))
        if hit is None:
            return self.reusable(None, name, ask, ledger.study_id)
        return hit.evidence.model_copy(update={"meta": {**hit.evidence.meta, REUSED_META: True,
                                                        "ask": ask.model_dump(mode="json")}})

    def ledger_of(self, state: CxrState, study_id: str | None) -> StudyLedger | None:
        """The thread's ledger of ``study_id``: the current one, an earlier study's from the shelf, or one
        read from an older ``last_result`` if that is all there is."""
        if not study_id:
            return None
        ledger = as_ledger(state.get("ledger")) or self._legacy_ledger(state.get("last_result"))
        if ledger is not None and ledger.study_id == study_id:
            return ledger
        shelved = as_earlier(state.get("earlier")).get(study_id) if study_id else None
        return shelved.ledger if shelved is not None else None

    def _legacy_ledger(self, last: Any) -> StudyLedger | None:
        """The ledger of an earlier version's ``last_result``: its evidence, and the re-asks its
        decisions record (as settlements of the conflicts they were asked about)."""
        ledger = from_legacy(last, self._legacy_ask, self.runners)
        if ledger is None:
            return None
        items = []
        for d in as_decisions(last.get("decisions")):
            r = next((r for r in reversed(d.reasons) if r.rule.startswith("reask_") and r.answer is not None), None)
            if r is not None and r.answer is not None:
                answer, asked, base = r.answer, r.asked or r.answer.source, d
            elif d.verification and d.calls and not d.reasons:  # v0.1: the re-ask's answer is the last call
                answer, base = d.calls[-1], d.model_copy(update={"calls": d.calls[:-1]})
                asked = answer.source
                if asked not in self.roles.verifiers:
                    continue
            else:
                continue
            ev = Evidence(tool=asked, calls=[answer.model_copy(update={"task": "verification"})],
                          meta={"verification": d.finding})
            key = key_for(ledger.study_id, asked, Ask(kind="verify", findings=(d.finding,)), ev,
                          runner=self.runners.get(asked))
            items.append((key, ev, signature(base, self.policy)))
        return ledger.record(items, same_turn=True) if items else ledger

    def _legacy_ask(self, tool: str, intent: str) -> Ask:
        """The ask an output kept by an earlier version answered, as far as its tool and turn tell."""
        if tool in self.roles.scorers:
            return Ask(kind="image")
        if tool in self.roles.writers and intent == "report":
            return Ask(kind="report")
        return Ask(kind=intent, words=words_hash(f"kept by an earlier version: {tool} {intent}"))

    # ------------------------------------------------------------------ nodes
    def ingest(self, state: CxrState) -> Command:
        """Check the input, reset this turn's results, start the turn's clock, load a new image (or
        check a given study id); go on to the router, or straight to respond when the image could
        not be used."""
        validate_input(state)  # a programming error: raise, naming the key
        update: dict[str, Any] = {"evidence": None,  # this turn's list: always reset
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
        has_history = bool(state.get("ledger") or state.get("last_result")) or len(messages) > 1
        try:
            route = route_turn(self._route, text, has_image=bool(state.get("study_id")), has_history=has_history,
                               previous_findings=previous_findings(messages))
        except Exception as exc:  # noqa: BLE001 - routing must never end the turn
            log.exception("router failed")
            route = Route(intent="chat", reason=f"router failed ({type(exc).__name__}); treated as chat")
        route = comparison_route(route, state)  # a comparison reads the current study in full
        writer()({"event": "route", "intent": route.intent, "finding": route.finding,
                  "tools": [] if route.clarify else self.selected(route), "reason": route.reason,
                  "needs_image": route.needs_image and not state.get("study_id")})
        goto, reused = ("respond", []) if route.clarify else self.fan_out(route, state, config, text=text)  # ask back
        update: dict[str, Any] = {"route": route}
        if reused:
            update["evidence"] = reused  # answered from the study's ledger: not run again
        return Command(update=update, goto=goto)

    def selected(self, route: Route) -> list[str]:
        """Tools to run: every tool, built-in or custom, that serves the turn's intent."""
        intent = route.intent
        if intent == "explain":
            return []
        return [name for name, caps in self.caps.items() if intent in caps.intents]

    def fan_out(self, route: Route, state: CxrState, config: RunnableConfig,
                text: str | None = None) -> tuple[list[Send] | str, list[Evidence]]:
        """Where the router goes (one Send per branch of tools still to run, reconcile when the study's
        ledger answers every ask, or straight to respond), and the evidence the ledger answers with.
        ``text``: the user's message, when the caller has read it already."""
        intent = route.intent
        study_id = state.get("study_id")
        if intent == "explain" or (route.needs_image and not study_id):
            return "respond", []
        names = self.selected(route)
        if not names:
            return "respond", []
        messages = state.get("messages") or []
        text = last_user_text(messages) if text is None else text
        history = (chat_history(messages[:-1], int(self.settings.chat_history_chars), message_text, HISTORY_TURNS)
                   if intent == "chat" else [])
        task = {
            "intent": intent, "text": text, "finding": route.finding, "findings": list(route.findings),
            "phrase": route.phrase,
            "study_id": study_id, "history": history, "deadline": state.get("deadline"),
            "thread_id": (config.get("configurable") or {}).get("thread_id"),
        }
        ledger = self.ledger_of(state, study_id)
        sends: list[Send] = []
        reused: list[Evidence] = []
        for chain in plan_chains(intent, self.roles, names):
            draft: str | None = None
            for i, name in enumerate(chain):
                hit = self.reusable(ledger, name, self.ask_for(name, task, draft), study_id) \
                    if self.cacheable(name) else None
                if hit is None:
                    sends.append(Send("tools", {"chain": chain[i:], "task": task, "draft": draft}))
                    break
                reused.append(hit)
                if name in self.roles.writers and hit.report:
                    draft = hit.report
        return (sends or "reconcile"), reused

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
        draft: str | None = payload.get("draft")  # a report writer's, when the ledger answered for it
        for i, name in enumerate(chain):
            tool, writes, drafted = self.tools[name], name in self.roles.writers, name in self.roles.drafted
            start: ToolStartEvent = {"event": "tool_start", "tool": name}
            if self._building_index(tool):
                start["building_index"] = True
            emit(start)
            timeout = deadline.budget(self.settings.tool_timeout_s)
            if study_error:
                ev = Evidence.failure(name, study_error, latency_ms=0.0)
            elif drafted and any(n in self.roles.writers for n in chain[:i]) and draft is None:
                # "write a report" is no query; neighbours for it would be noise presented as context
                writer_name = next(n for n in chain[:i] if n in self.roles.writers)
                ev = Evidence.failure(name, f"not run: {writer_name} produced no draft report to search with",
                                      latency_ms=0.0)
            elif timeout <= 0:
                ev = Evidence.failure(name, f"{name} not run: the turn's deadline "
                                            f"({self.settings.turn_timeout_s:g} s) has passed", latency_ms=0.0)
            else:
                ev = self._call(name, tool, task, study, draft, timeout, emit)
            # one copy of the output with its report's calls and the key it is recorded under
            update = self._labelled(ev) if writes and ev.ok and ev.report and task["intent"] == "report" else {}
            ask = self.ask_for(name, task, draft if drafted else None)
            if ask is not None:  # what this output answers: the key it is recorded under
                update["meta"] = {**update.get("meta", ev.meta), "ask": ask.model_dump(mode="json")}
            if update:
                ev = ev.model_copy(update=update)
            if writes and ev.ok and ev.report:
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
    def _labelled(ev: Evidence) -> dict[str, Any]:
        """The update that turns a report's text into FindingCalls (source = the tool, task = "report"),
        keeping the report calls the tool already made; calls of its other skills (e.g. a classification
        list) stay beside them and the reconciler weighs both per source."""
        try:
            from knowledge.labeler import label_report

            labelled = [c for c in label_report(ev.report or "", source=ev.tool, task="report")
                        # a report cut at the token limit is not a normal study for saying nothing more
                        if not (ev.truncated and c.finding == "no_finding" and not c.text)]
        except Exception as exc:  # noqa: BLE001 - an unlabelled report is still shown
            log.warning("labelling the %s report failed: %s", ev.tool, exc)
            return {"meta": {**ev.meta, "label_error": str(exc)}}
        have = {c.finding for c in ev.calls if c.task in (None, "report")}
        return {"calls": [*ev.calls, *(c for c in labelled if c.finding not in have)]}

    def reconcile(self, state: CxrState) -> Command:
        """Record this turn's new outputs in the study's ledger and decide every finding from the whole
        ledger (agents/reconciling/study.py); go on to verify when a conflict has had no re-ask yet."""
        route = as_route(state.get("route"))
        intent = route.intent if route is not None else None
        emit = writer()
        if intent not in RECONCILED_INTENTS:  # chat / similar cases: nothing about this image to decide
            emit({"event": "reconcile", "decisions": 0, "conflicts": []})
            return Command(goto="respond")
        study_id = state.get("study_id")
        try:
            # the study's decisions as they stood (what the turn record compares with)
            update: dict[str, Any] = {"decisions_before": study_decisions(state, study_id) if study_id else []}
            if study_id:
                current = as_ledger(state.get("ledger"))
                ledger = self.record_outputs(state, study_id)
                decisions = self.decide_study(ledger)
                update["ledger"] = ledger
                if current is not None and current.study_id != study_id:  # another study: shelve the one held
                    update["earlier"] = shelve(state.get("earlier"), current, as_decisions(state.get("decisions")),
                                               taking=study_id)
                if state.get("last_result") is not None:
                    update["last_result"] = None  # read into the ledger: kept once
            else:  # no study (a custom tool that needs no image): this turn's calls alone
                calls = [c for e in state.get("evidence") or [] if e.ok for c in e.calls]
                decisions = reconciler.decide(calls, self.policy)
            conflicted = unasked(decisions, self.policy)
            update["decisions"] = decisions
        except Exception as exc:  # noqa: BLE001
            log.exception("reconciliation failed")
            emit({"event": "reconcile", "decisions": 0, "conflicts": []})
            return Command(
                update={"notes": [f"Reconciliation failed ({type(exc).__name__}: {exc}); tool outputs are shown as-is."]},
                goto="respond",
            )
        emit({"event": "reconcile", "decisions": len(decisions), "conflicts": [d.finding for d in conflicted]})
        return Command(update=update, goto="verify" if conflicted else "respond")

    def record_outputs(self, state: CxrState, study_id: str) -> StudyLedger:
        """The study's ledger with this turn's new outputs recorded (reused ones are already there)."""
        ledger = self.ledger_of(state, study_id) or StudyLedger(study_id=study_id)
        items = []
        for ev in state.get("evidence") or []:
            ask = ask_of(ev)
            if ask is None or ev.meta.get("verification"):
                continue
            runner = self.runners.get(ev.tool)
            if ev.meta.get(REUSED_META) and ledger.lookup(ev.tool, ask, runner) is not None:
                continue  # already this thread's
            key = key_for(study_id, ev.tool, ask, ev, runner=runner)
            items.append((key, ev, None))
            if self.cacheable(ev.tool):
                self.shared.put(key, ev)
        return ledger.record(items)

    def decide_study(self, ledger: StudyLedger, *, before_turn: int | None = None) -> list[Any]:
        """Every decision on the study from its whole ledger (``before_turn``: from the entries
        recorded before that turn only, i.e. the decisions as they stood)."""
        entries = [e for e in ledger.entries if before_turn is None or e.turn < before_turn]
        evidence = [e.evidence for e in entries if e.key.ask.kind != "verify"]
        reasks = [(e.evidence, e.settles) for e in entries if e.key.ask.kind == "verify"]

        def box_for(finding: str, asked: str) -> Any:
            return heatmap_box(evidence, finding, exclude=asked, image_sources=set(self.image_sources))

        return reconcile_study(evidence, reasks, self.policy, box_for, order=list(self.tools))

    def verify(self, state: CxrState, config: RunnableConfig) -> dict[str, Any]:
        """Re-ask a verifying tool about every conflict in one batched call, then apply the
        reconciler's transparent rule (agents/turn/verify.py)."""
        return verify_conflicts(self, state, config)

    def respond(self, state: CxrState) -> dict[str, Any]:
        route = as_route(state.get("route")) or Route(intent="chat")
        evidence = list(state.get("evidence") or [])
        before = state.get("decisions_before")  # set when this turn reconciled
        decisions = as_decisions(state.get("decisions")) if before is not None else []
        study_id = state.get("study_id")
        study_info = None
        if study_id:
            try:
                s = self.study(study_id)
                study_info = {"id": s.id, "width": s.width, "height": s.height, "view": s.view}
            except Exception:  # noqa: BLE001 - the reply can do without the size
                study_info = {"id": study_id}
        notes = list(state.get("notes") or [])
        if (route.intent != "explain" and not state.get("ingest_error") and not evidence
                and not (route.needs_image and not study_id)):
            notes.append(f"No tool serves the {route.intent.replace('_', ' ')} intent in this setup.")
        ledger = as_ledger(state.get("ledger")) or self._legacy_ledger(state.get("last_result"))
        prior = None  # what "why?" explains: the decisions held for the ledger's study, and its evidence
        if ledger is not None:
            prior = {"study_id": ledger.study_id, "evidence": ledger.evidence(), "decisions": study_decisions(state)}
        if route.intent == "explain" and prior and study_id and prior.get("study_id") != study_id:
            notes.append("These conclusions were reached on the previously loaded study.")
        compared = None
        try:
            if not route.clarify and not state.get("ingest_error"):
                compared = compare_with_prior(state, route, study=self.study, roles=self.roles,
                                              labels=dict(self.roles.labels),
                                              reader=self.change_reader(state) if route.asks_comparison else None)
            text = clarifying.question(route.clarify, last_user_text(state.get("messages") or [])) \
                if route.clarify else \
                with_comparison(responder.compose_parts(
                    route, evidence, decisions, demo=self.settings.is_demo, notes=notes, study=study_info,
                    prior=prior, ingest_error=state.get("ingest_error"), roles=self.roles), compared)
        except Exception as exc:  # noqa: BLE001 - the reply itself must not crash the turn
            log.exception("responder failed")
            text = f"The answer could not be composed ({type(exc).__name__}: {exc})."
            if self.settings.is_demo:
                from cxr_agent.settings import DEMO_WARNING

                text = f"> **{DEMO_WARNING}**\n\n{text}"
        record = build_record(route, evidence, decisions, list(before or []), text, study_id=study_id, notes=notes,
                              roles=self.roles, compared=compared.evidence if compared is not None else ())
        cxr = {**responder.payload(route, evidence, decisions, study_id=study_id, demo=self.settings.is_demo),
               **payload_extras(record)}
        update: dict[str, Any] = {}
        if compared is not None:  # which study was the prior, the patient check and every change decision
            cxr["comparison"] = compared.payload
            if compared.evidence:  # what the tools that read both films said, recorded on the current study
                update["evidence"] = compared.evidence
            if compared.ledger is not None:
                update["ledger"] = compared.ledger
        if route.clarify:  # the two readings, for the UI's buttons
            cxr["clarify"] = {"choices": clarifying.choices(route.clarify,
                                                            last_user_text(state.get("messages") or []))}
        writer()({"event": "reply", "text": text})
        from agents.memory.audit_log import record_reply  # one PHI-free line per reply

        record_reply(self.settings, state, evidence=[*evidence, *update.get("evidence", [])], policy=self.policy)
        return {"messages": [AIMessage(content=text, additional_kwargs={"cxr": cxr})], "record": record, **update}

    def change_reader(self, state: CxrState) -> ChangeReader:
        """The tools that compare priors, asked under what is left of this turn (agents/turn/change_reads.py)."""
        return ChangeReader(tools=self.tools, roles=self.roles, study=self.study, runners=self.runners, pool=self.pool,
                            tool_timeout_s=float(self.settings.tool_timeout_s),
                            deadline=self._deadline(state.get("deadline")))
