"""Which tool plays which part, read from the tools' capabilities (never their names) in one place.

The graph builds one ``ToolRoles`` when it is compiled (``from_capabilities`` is the only place a role
is derived) and passes it to every reply and to the reconciler's policy; each turn record carries it,
so the UI's evidence columns and box colours read the same value and a custom report writer is
treated like the VLM everywhere, in-process or behind LangGraph Server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from agents.reconciling.policy import DEFAULT_SOURCE_LABELS
from agents.replying.phrases import source_name
from knowledge.evidence import Decision, Evidence, FindingCall
from tools.base import ToolCapabilities

Role = Literal["writer", "image", "prior"]
"""What a source's evidence is on the image: a report writer's, another image source's, or a prior's."""


@dataclass(frozen=True)
class ToolRoles:
    """``writers`` write the report and answer questions (writes_report); ``scorers`` are the other image
    sources (e.g. the classifier); ``priors`` do not read the image (their calls only shift confidence);
    ``neighbours`` return similar prior cases; ``labels``: how replies name each tool (its declared
    ``label`` over the built-ins' defaults); ``drafted`` run after a report writer with its draft;
    ``verifiers`` answer re-asks; ``comparers`` read a study against its prior. Tuples keep the
    registry order."""

    writers: tuple[str, ...] = ()
    scorers: tuple[str, ...] = ()
    priors: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    image_writers: tuple[str, ...] = ()
    drafted: tuple[str, ...] = ()
    verifiers: tuple[str, ...] = ()
    comparers: tuple[str, ...] = ()

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
            drafted=tuple(n for n, c in caps.items() if c.needs_draft and not c.writes_report),
            verifiers=tuple(n for n, c in caps.items() if c.verifies),
            comparers=tuple(n for n, c in caps.items() if c.compares_priors),
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

    @property
    def prior_sources(self) -> frozenset[str]:
        """Tools that do not read the image: their calls only shift confidence."""
        return frozenset(self.priors)

    @property
    def image_sources(self) -> frozenset[str]:
        """Tools whose calls read the image and vote."""
        return frozenset((*self.image_writers, *self.scorers))

    # ---------------------------------------------------------------- what the UI reads
    def role(self, name: str) -> Role | None:
        """The part ``name`` plays (None: a tool this graph does not have)."""
        if name in self.writers:
            return "writer"
        if name in self.scorers:
            return "image"
        return "prior" if name in self.priors else None

    def of_role(self, role: Role) -> tuple[str, ...]:
        """The tools of one role, in registry order."""
        return tuple(n for n in dict.fromkeys((*self.writers, *self.scorers, *self.priors)) if self.role(n) == role)

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
