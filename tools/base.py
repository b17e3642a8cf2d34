"""The interface every tool (built-in or custom) implements, so the graph can treat them alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from knowledge.evidence import Evidence

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.study import Study

INTENTS = ("report", "locate", "finding_question", "similar_cases", "explain", "chat")


@dataclass
class ToolRequest:
    """What a tool is asked to do for one turn. Holds the Study object itself (tools need pixels);
    the graph state holds only its id."""

    intent: str
    text: str = ""
    study: Study | None = None
    finding: str | None = None  # canonical finding id the turn names, if any
    phrase: str | None = None  # free-text phrase to ground, if no vocabulary finding
    history: list[dict[str, str]] = field(default_factory=list)  # earlier turns: {"role", "content"}
    draft_report: str | None = None  # the VLM's report this turn, when available (retrieval query)
    thread_id: str | None = None
    settings: Settings | None = None
    on_token: Callable[[str], None] | None = None  # streaming sink for generated text
    on_progress: Callable[[str, int, int | None], None] | None = None  # long work: (stage, done, total)


@runtime_checkable
class CxrTool(Protocol):
    """A tool: a name (used as FindingCall.source), the intents it serves, and run() -> Evidence.

    run() should not raise; the graph still wraps it and turns any exception or timeout into
    Evidence(ok=False, error=...).
    """

    name: str
    intents: frozenset[str]

    def run(self, request: ToolRequest) -> Evidence: ...


@dataclass
class WeightStatus:
    """Whether one configured model's weights are usable here, and how to fix it if not."""

    name: str  # e.g. "classifier: densenet121-res224-all"
    kind: str  # "classifier" | "vlm" | "embedder"
    present: bool
    location: str  # file or directory looked at (or server URL)
    fix: str | None = None  # the command or setting that makes it present
    detail: str = ""
