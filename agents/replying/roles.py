"""Which tool plays which part, read from the tools' capabilities (never their names) in one place.

The graph builds one ``ToolRoles`` when it is compiled and passes it to every reply; the reconciler's
policy, the UI's evidence columns and overlay colours can read the same value, so a custom report
writer is treated like the VLM everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from agents.reconciling.policy import DEFAULT_SOURCE_LABELS
from agents.replying.phrases import source_name
from knowledge.evidence import Decision, Evidence, FindingCall
from tools.base import ToolCapabilities


@dataclass(frozen=True)
class ToolRoles:
    """``writers`` write the report and answer questions (writes_report); ``scorers`` are the other image
    sources (e.g. the classifier); ``priors`` do not read the image (their calls only shift confidence);
    ``neighbours`` return similar prior cases; ``labels``: how replies name each tool (its declared
    ``label`` over the built-ins' defaults). Tuples keep the registry order."""

    writers: tuple[str, ...] = ()
    scorers: tuple[str, ...] = ()
    priors: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    image_writers: tuple[str, ...] = ()

    @classmethod
    def from_capabilities(cls, caps: Mapping[str, ToolCapabilities]) -> ToolRoles:
        return cls(
            writers=tuple(n for n, c in caps.items() if c.writes_report),
            scorers=tuple(n for n, c in caps.items() if c.image_source and not c.writes_report),
            priors=tuple(n for n, c in caps.items() if not c.image_source),
            neighbours=tuple(n for n, c in caps.items()
                             if "similar_cases" in c.intents and not c.image_source and not c.writes_report),
            labels=tuple({**DEFAULT_SOURCE_LABELS, **{n: c.label for n, c in caps.items() if c.label}}.items()),
            image_writers=tuple(n for n, c in caps.items() if c.image_source and c.writes_report),
        )

    @classmethod
    def builtin(cls) -> ToolRoles:
        """The built-ins' roles (a reply composed outside a graph)."""
        return _builtin_roles()

    # ---------------------------------------------------------------- what the policy reads
    @property
    def statement_sources(self) -> frozenset[str]:
        """Image sources whose words are statements (report writers)."""
        return frozenset(self.image_writers)

    @property
    def box_preference(self) -> tuple[str, ...]:
        """Whose box a decision shows first: report writers, then the other image sources."""
        return (*self.image_writers, *self.scorers)

    # ---------------------------------------------------------------- naming
    def label(self, name: str | None) -> str:
        """How a reply names tool ``name`` ("the VLM", else ``tool 'name'``); no name: "the report writer"."""
        if not name:
            return "the report writer"
        return source_name(name, dict(self.labels))

    def short(self, name: str) -> str:
        """The label without its article, for tables and lists ("VLM", "classifier")."""
        return self.label(name).removeprefix("the ")

    def writer_label(self, evidence: Evidence | None) -> str:
        """The label of the report writer behind ``evidence`` (else of the first configured writer)."""
        return self.label(evidence.tool if evidence is not None else (self.writers[0] if self.writers else None))

    # ---------------------------------------------------------------- finding a role's output
    def writer_evidence(self, evidence: Sequence[Evidence]) -> Evidence | None:
        """The first report writer's own evidence this turn (not a re-ask)."""
        return by_tool(evidence, *self.writers)

    def neighbour_evidence(self, evidence: Sequence[Evidence]) -> Evidence | None:
        return by_tool(evidence, *self.neighbours)

    def writer_answer(self, evidence: Sequence[Evidence]) -> Evidence | None:
        """The first report writer's evidence that answered this turn in words, if any."""
        return next((e for e in evidence if e.ok and e.answer and e.tool in self.writers), None)

    def k(self, evidence: Sequence[Evidence]) -> int | None:
        """How many similar prior reports were retrieved this turn (None: no retrieval)."""
        r = self.neighbour_evidence(evidence)
        return len(r.neighbors) if r is not None and r.ok and r.neighbors else None

    def writer_call(self, d: Decision) -> FindingCall | None:
        """The report writer's own statement on the finding: its report's, else its classification's."""
        own = [c for c in d.calls if c.source in self.writers and c.task != "verification"]
        return next((c for c in own if c.task not in ("classification", "detection")), own[0] if own else None)

    def custom(self, evidence: Sequence[Evidence]) -> list[Evidence]:
        """Answers of tools other than writers and neighbours (e.g. an image-quality check)."""
        return [e for e in evidence if e.ok and e.answer and e.tool not in {*self.writers, *self.neighbours}]


def by_tool(evidence: Sequence[Evidence], *tools: str) -> Evidence | None:
    """The first evidence of one of ``tools`` that is not a re-ask."""
    return next((e for e in evidence if e.tool in tools and not e.meta.get("verification")), None)


@cache
def _builtin_roles() -> ToolRoles:
    from tools.registry import BUILTINS

    return ToolRoles.from_capabilities({n: c for n, (_, c) in BUILTINS.items()})
