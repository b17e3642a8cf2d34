"""Pieces every reply is built from: which tool plays which part (ToolRoles, from capabilities), the
tools that failed, one decision's line, how the VLM's own statement on a finding is told.

Shared by agents/replying/compose.py (report, locate, finding replies) and agents/replying/other_intents.py (similar cases,
explain, chat, the UI payload).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache

from agents.reconciling.policy import DEFAULT_SOURCE_LABELS
from agents.replying.phrases import STATUS_WORD, cap, cite_decision, source_name
from cxr_agent.settings import DEMO_WARNING
from knowledge.evidence import Decision, Evidence, FindingCall, Status
from knowledge.vocabulary import display_name
from tools.base import ToolCapabilities

_STATUS_WORD = STATUS_WORD


def unavailable(evidence: Iterable[Evidence]) -> list[Evidence]:
    """Tools that failed this turn (a failed verification re-ask is reported with its decision)."""
    return [e for e in evidence if not e.ok and not e.meta.get("verification")]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


@dataclass(frozen=True)
class ToolRoles:
    """Which tools play which part in a reply, read from their capabilities (never their names):
    ``writers`` write the report and answer questions (writes_report), ``neighbours`` return similar
    prior cases (serve similar_cases without reading the image); any other tool's answer is listed
    under its own name. ``labels``: how replies name each tool (its declared ``label`` over the built-ins'
    defaults); the graph gives the same mapping to its Policy, so rationales and replies agree."""

    writers: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_capabilities(cls, caps: dict[str, ToolCapabilities]) -> ToolRoles:
        return cls(
            writers=tuple(n for n, c in caps.items() if c.writes_report),
            neighbours=tuple(n for n, c in caps.items()
                             if "similar_cases" in c.intents and not c.image_source and not c.writes_report),
            labels=tuple({**DEFAULT_SOURCE_LABELS, **{n: c.label for n, c in caps.items() if c.label}}.items()),
        )

    def label(self, name: str | None) -> str:
        """How a reply names tool ``name`` (``labels``, else ``tool 'name'``); no name: "the report writer"."""
        if not name:
            return "the report writer"
        return source_name(name, dict(self.labels))

    def writer_label(self, evidence: Evidence | None) -> str:
        """The label of the report writer behind ``evidence`` (else of the first configured writer)."""
        return self.label(evidence.tool if evidence is not None else (self.writers[0] if self.writers else None))

    @classmethod
    def builtin(cls) -> ToolRoles:
        return _builtin_roles()


@cache
def _builtin_roles() -> ToolRoles:
    """The built-ins' roles (for replies composed outside a graph), computed once."""
    from tools.registry import BUILTINS

    return ToolRoles.from_capabilities({n: c for n, (_, c) in BUILTINS.items()})


_ROLES: ContextVar[ToolRoles | None] = ContextVar("cxr_tool_roles", default=None)


def _roles() -> ToolRoles:
    return _ROLES.get() or ToolRoles.builtin()


def _by_tool(evidence: Sequence[Evidence], *tools: str) -> Evidence | None:
    for e in evidence:
        if e.tool in tools and not e.meta.get("verification"):
            return e
    return None


def _k(evidence: Sequence[Evidence]) -> int | None:
    r = _by_tool(evidence, *_roles().neighbours)
    return len(r.neighbors) if r is not None and r.ok and r.neighbors else None


def _header(demo: bool) -> list[str]:
    return [f"> **{DEMO_WARNING}**", ""] if demo else []


def _unavailable_lines(evidence: Sequence[Evidence]) -> list[str]:
    bad = unavailable(evidence)
    if not bad:
        return []
    names = ", ".join(f"**{e.tool}** ({e.error or 'failed'})" for e in bad)
    if not any(e.ok for e in evidence):  # nothing is left for the answer to rest on: say so
        return [f"_Unavailable this turn: {names}. No tool answered, so nothing above comes from this image._", ""]
    return [f"_Unavailable this turn: {names}. The answer rests on the remaining tools._", ""]


def _custom_lines(evidence: Sequence[Evidence]) -> list[str]:
    """Answers from tools other than the built-ins (e.g. an image-quality check)."""
    out = []
    for e in evidence:
        if e.ok and e.tool not in {*_roles().writers, *_roles().neighbours} and e.answer:
            out.append(f"- **{e.tool}**: {e.answer}")
    return out


def _vlm_mentions(d: Decision) -> FindingCall | None:
    """The report writer's own statement on the finding: its report's, else its classification's."""
    writers = _roles().writers
    own = [c for c in d.calls if c.source in writers]
    return next((c for c in own if c.task != "classification"), own[0] if own else None)


def _silent(call: FindingCall | None) -> bool:
    """A call the reconciler implied from the VLM report not mentioning the finding at all."""
    return call is not None and call.implied == "report_silence"


def _vlm_says(call: FindingCall) -> str:
    """The report writer's own statement, told in its label's words ("The VLM report says ...")."""
    who = cap(_roles().label(call.source))
    if call.implied == "normal_study":
        return f"{who} report does not mention it and reads the study as normal"
    if _silent(call):
        return f"{who} report does not mention it"
    if call.task == "classification":
        return (f"{who}'s abnormality classification lists it" if call.status is Status.present
                else f"{who}'s abnormality classification leaves it out")
    return f"{who} report says {_STATUS_WORD[call.status]}"


def _prior_only(d: Decision) -> bool:
    """A decision resting only on retrieval neighbours (a prior, no image evidence)."""
    return bool(d.calls) and all(c.score_kind == "neighbor_fraction" for c in d.calls)


def _decision_line(d: Decision, k: int | None) -> str:
    line = f"**{display_name(d.finding)}**: {_STATUS_WORD[d.status]} (confidence {d.confidence:.2f})"
    if d.conflict or d.verification:
        line += " — image sources disagreed"
        if d.verification:
            line += f"; {d.verification.rstrip('.')}"
        if d.conflict:
            line += "; **unresolved, flagged for human review**"
        else:
            line += "; resolved" + (" (still flagged for review)" if d.needs_review else "")
    elif d.needs_review:
        line += " — **flagged for review**"
    return f"- {line}. {d.rationale} {cite_decision(d, k=k)}".rstrip()
