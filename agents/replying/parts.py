"""A reply as typed parts, and how they are rendered to Markdown.

The order is what a radiologist reads first: what needs their eyes, then the report as written, then
the other findings at a glance. Everything else (every call, score, box, quote and rule) is in the
turn's payload and in a "Why?" answer, so a reply never tells the same finding twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Evidence

FIX_HINT = "see the model panel or `cxr-agent models list`"
REASON_CHARS = 70  # an unavailable tool's reason is cut here: the full error is in the payload and the logs


@dataclass(frozen=True)
class Row:
    """One line of the other-findings table."""

    finding: str
    status: str
    confidence: str
    sources: str


@dataclass(frozen=True)
class ReplyParts:
    """One turn's reply before rendering: ``compose_parts`` builds it, ``render`` writes it."""

    intent: str
    demo: bool = False
    opening: tuple[str, ...] = ()  # said before anything else (no earlier image compared, a refusal)
    review: tuple[str, ...] = ()  # the bullets of the findings that need the reader's eyes
    review_count: int = 0  # how many findings those bullets name
    writer: str | None = None  # who drafted ``report``
    report: str | None = None  # the report as written
    truncated: bool = False  # the report stopped at the token limit
    no_report: str | None = None  # why there is no report (report turns only)
    table: tuple[Row, ...] = ()
    body: tuple[str, ...] = ()  # the intent's own lines (a yes/no, where, similar cases, an explanation)
    context: tuple[str, ...] = ()  # short lines under the table: score legend, prior reports, other checks
    unavailable: str | None = None
    notes: tuple[str, ...] = ()
    disclaimer: bool = False

    def render(self) -> str:
        lines: list[str] = [f"> **{DEMO_WARNING}**", ""] if self.demo else []
        for line in self.opening:
            lines += [line, ""]
        if self.review:
            lines += [f"### Needs your review ({self.review_count or len(self.review)})", "", *self.review, ""]
        if self.report is not None:
            cut = "; cut off at the token limit: its silence is not read as absence" if self.truncated else ""
            lines += ["### Report", "", f"_Drafted by {self.writer}; shown as written{cut}._", ""]
            lines += [self.report.strip(), ""]
        elif self.no_report:
            lines += ["### Report", "", f"_{self.no_report}_", ""]
        if self.table:
            title = "### Other findings" if self.review or self.report is not None else "### Findings"
            lines += [title, "", "| finding | status | conf. | sources |", "|---|---|---|---|"]
            lines += [f"| {r.finding} | {r.status} | {r.confidence} | {r.sources} |" for r in self.table]
            lines.append("")
        if self.body:
            lines += [*self.body, ""]
        lines += [f"_{c}_" if not c.startswith(("- ", "_", "**")) else c for c in self.context]
        if self.context:
            lines.append("")
        if self.unavailable:
            lines += [f"_{self.unavailable}_", ""]
        lines += [f"_{n}_" for n in self.notes if n]
        if self.disclaimer:
            lines += ["", f"_{DISCLAIMER}_"]
        return "\n".join(lines).strip() + "\n"


def short_reason(error: str | None) -> str:
    """A tool's error, first sentence, cut at a word: enough to name what broke."""
    text = " ".join((error or "failed").split())
    for stop in (". ", "; ", " (see", " — "):
        if stop in text:
            text = text.split(stop, 1)[0]
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS].rsplit(" ", 1)[0] + "\u2026"
    return text.rstrip(".")


def unavailable(evidence: Sequence[Evidence]) -> list[Evidence]:
    """Tools that failed this turn (a failed re-ask is told with its decision)."""
    return [e for e in evidence if not e.ok and not e.meta.get("verification")]


def unavailable_line(evidence: Sequence[Evidence], *, consequence: str = "") -> str | None:
    """The one line naming every tool that failed this turn, why in a few words, and where to fix it."""
    bad = unavailable(evidence)
    if not bad:
        return None
    names = ", ".join(f"**{e.tool}** ({short_reason(e.error)})" for e in bad)
    if not any(e.ok for e in evidence):
        consequence = "No tool answered, so nothing above comes from this image."
    return f"Unavailable this turn: {names}; {FIX_HINT}.{f' {consequence}' if consequence else ''}"
