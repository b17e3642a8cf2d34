"""The interface every tool (built-in or custom) implements, so the graph can treat them alike.

A tool is a name, the intents it serves, ``run(ToolRequest) -> Evidence`` and a few declared
capabilities (``ToolCapabilities``) that say how the graph uses it. The graph reads these
capabilities, never tool names, so a custom tool that declares ``writes_report`` is treated exactly
like the built-in VLM. The one intent table (``INTENT_TABLE``) lives here too: the router, the
registry, the built-in tools and the nodes all read it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from knowledge.evidence import Evidence

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.ingestion.study import Study


@dataclass(frozen=True)
class IntentSpec:
    """One intent: the built-in tools that serve it, whether it needs a study, whether its
    finding calls are reconciled into per-finding decisions."""

    builtin_tools: tuple[str, ...]
    needs_image: bool
    reconciled: bool


# The one intent table. Order of INTENTS is the order the router's evaluation reports them in.
INTENT_TABLE: dict[str, IntentSpec] = {
    "report": IntentSpec(("vlm", "classifier", "retrieval"), needs_image=True, reconciled=True),
    "locate": IntentSpec(("vlm", "classifier"), needs_image=True, reconciled=True),
    "finding_question": IntentSpec(("vlm", "classifier"), needs_image=True, reconciled=True),
    "similar_cases": IntentSpec(("retrieval",), needs_image=False, reconciled=False),
    "explain": IntentSpec((), needs_image=False, reconciled=False),
    "chat": IntentSpec(("vlm",), needs_image=False, reconciled=False),
}
INTENTS: tuple[str, ...] = tuple(INTENT_TABLE)
INTENT_TOOLS: dict[str, list[str]] = {i: list(s.builtin_tools) for i, s in INTENT_TABLE.items()}
IMAGE_INTENTS = frozenset(i for i, s in INTENT_TABLE.items() if s.needs_image)  # ask for an image first
RECONCILED_INTENTS = frozenset(i for i, s in INTENT_TABLE.items() if s.reconciled)


def builtin_intents(tool_name: str) -> frozenset[str]:
    """The intents a built-in tool serves, read off the intent table."""
    return frozenset(i for i, s in INTENT_TABLE.items() if tool_name in s.builtin_tools)


@dataclass
class ToolRequest:
    """What a tool is asked to do for one turn. Holds the Study object itself (tools need pixels);
    the graph state holds only its id."""

    intent: str
    text: str = ""
    study: Study | None = None
    finding: str | None = None  # canonical finding id the turn names, if any (the first of ``findings``)
    findings: tuple[str, ...] = ()  # every finding the turn names ("pneumothorax or effusion?"), in order
    phrase: str | None = None  # free-text phrase to ground, if no vocabulary finding
    history: list[dict[str, str]] = field(default_factory=list)  # earlier turns: {"role", "content"}
    draft_report: str | None = None  # a report writer's draft this turn (tools with needs_draft)
    thread_id: str | None = None
    settings: Settings | None = None
    on_token: Callable[[str], None] | None = None  # streaming sink for generated text
    on_progress: Callable[[str, int, int | None], None] | None = None  # long work: (stage, done, total)
    # Set by the graph when this call timed out or the turn's deadline passed: a tool that can stop
    # early (e.g. a generation's stopping criterion) should check it and return.
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class ToolCapabilities:
    """How the graph uses a tool. Every field defaults to the plain case, so a custom tool that
    declares nothing is a non-voting tool whose Evidence is shown as-is.

    image_source: its FindingCalls read the image, so they vote in reconciliation (else: a prior).
    writes_report: it writes a full report: the report is labelled into FindingCalls and its
        silence on a finding is weak evidence of absence (the reconciler's report-silence rule).
    needs_draft: it runs after a report writer in the same branch and gets its draft
        (``ToolRequest.draft_report``); without a draft it is not run.
    verifies: it answers targeted re-asks: ``verify(study, findings, *, thread_id, cancel)``.
    cacheable: its complete Evidence on a study may be reused for the same study, model, weights and
        prompt, in any conversation. Declare it only when the output depends on the study alone; a tool
        whose Evidence varies per ask says so per Evidence (``meta["fixed_prompt"]``, like the VLM).
    compares_priors: it reads a study against an earlier one of the same patient, so its statements of
        change (new, worse, stable, improved, resolved) may support a change decision. Without it, a
        difference between a tool's two reads is never more than a flagged possible change. Such a tool
        answers ``compare(prior, current, *, finding=None, thread_id=None, cancel=None) -> Evidence`` with
        ``meta["changes"]``: ``[{"finding", "change", "text"}]`` (``finding``: a re-ask about that one); one
        that also takes ``on_token`` has its answer streamed to the user as it is written.
    label: how replies name it ("the VLM"); None: ``tool '<name>'``.
    """

    intents: frozenset[str] = frozenset()
    image_source: bool = False
    writes_report: bool = False
    needs_draft: bool = False
    verifies: bool = False
    cacheable: bool = False
    compares_priors: bool = False
    label: str | None = None

    FLAGS = ("image_source", "writes_report", "needs_draft", "verifies", "cacheable", "compares_priors")


@runtime_checkable
class CxrTool(Protocol):
    """A tool: a name (used as FindingCall.source), the intents it serves, and run() -> Evidence.

    run() should not raise; the graph still wraps it and turns any exception or timeout into
    Evidence(ok=False, error=...). Optional class attributes ``image_source``, ``writes_report``,
    ``needs_draft``, ``verifies``, ``cacheable``, ``compares_priors`` (bools, default False) and ``label`` (str) declare its
    ToolCapabilities; a tool with
    ``verifies = True`` also implements ``verify`` (see ``Verifier``).
    """

    name: str
    intents: frozenset[str]

    def run(self, request: ToolRequest) -> Evidence: ...


@runtime_checkable
class Verifier(Protocol):
    """A tool that answers the reconciler's targeted re-asks, several findings in one call (so a
    model can batch them): one Evidence per finding, in the order given."""

    def verify(
        self, study: Study, findings: list[str], *, thread_id: str | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Evidence]: ...


def capabilities(tool: Any) -> ToolCapabilities:
    """A tool's declared capabilities (attributes of the same names; missing ones default to False).

    Never loads a lazily constructed tool: LazyTool carries its capabilities itself."""
    caps = getattr(tool, "capabilities", None)
    if isinstance(caps, ToolCapabilities):
        return caps
    flags = {f: bool(getattr(tool, f, False)) for f in ToolCapabilities.FLAGS}
    if flags["verifies"] is False and callable(getattr(type(tool), "verify_finding", None)):
        flags["verifies"] = True  # a tool written before verify(): its one-finding re-ask still counts
    label = getattr(tool, "label", None)
    return ToolCapabilities(intents=frozenset(getattr(tool, "intents", ()) or ()),
                            label=label if isinstance(label, str) and label.strip() else None, **flags)


def verify_findings(
    tool: Any, study: Study, findings: Sequence[str], *, thread_id: str | None = None,
    cancel: threading.Event | None = None,
) -> list[Evidence]:
    """Call a verifier's ``verify``; a tool that only has the older one-finding ``verify_finding``
    is asked once per finding (stopping early when ``cancel`` is set)."""
    name = str(getattr(tool, "name", "tool"))
    if callable(getattr(tool, "verify", None)):
        out = list(tool.verify(study, list(findings), thread_id=thread_id, cancel=cancel))
    else:
        out = []
        for f in findings:
            if cancel is not None and cancel.is_set():
                break
            out.append(tool.verify_finding(study, f, thread_id=thread_id))
    if len(out) < len(findings):  # a verifier that returned too few answers: say which are missing
        out += [Evidence.failure(name, f"{name} gave no verification answer for {f}") for f in findings[len(out):]]
    return out[: len(findings)]


@dataclass
class WeightStatus:
    """Whether one configured model's weights are usable here, and how to fix it if not."""

    name: str  # e.g. "classifier: densenet121-res224-all"
    kind: str  # "classifier" | "vlm" | "embedder"
    present: bool
    location: str  # file or directory looked at (or server URL)
    fix: str | None = None  # the command or setting that makes it present
    detail: str = ""


def elapsed_ms(t0: float) -> float:
    """Milliseconds since ``t0`` (a ``time.perf_counter()`` reading), as Evidence.latency_ms records it."""
    return round((time.perf_counter() - t0) * 1000.0, 1)
