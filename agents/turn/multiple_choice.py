"""Answer a lettered multiple-choice question about chest radiographs from the tools, not the router.

Why a path of its own: a benchmark asked through the chat graph would measure the router as much as
the tools. Here the options themselves say what to ask.

The rule, in order (numbers in ``ChoiceRule``):

1. **Read the options.** Each option's findings (the vocabulary's mentions, ``no_finding`` for
   "normal"), whether it asserts their absence ("no", "without", "absent", "negative for", ...) and
   the side it names (left / right / bilateral).
2. **Ask the tools** on every image: each image tool with the ``finding_question`` intent gets one
   request naming every finding the options name, a sided one first (the VLM answers with its
   trained yes/no form; the classifier scores every finding and maps the first one's heatmap box);
   when options name a side, each report-writing image tool with the ``locate`` intent is asked to
   ground them (the VLM's trained grounding form); a prior tool (retrieval) is asked for similar
   cases with the question: its calls only shift confidence, never a status.
3. **Reconcile**: ``agents.reconciling.decide.decide`` over every call, with the graph's policy
   (prior tools never vote); a conflict between image sources is re-asked once of a verifying tool
   and settled by ``agents.reconciling.settle.resolve``.
4. **Score each option**: per finding it names, the decision's confidence when the decision agrees
   with what the option asserts (present, or absent for a negated option), one minus it when it
   contradicts, 0.5 when the decision is uncertain or missing; a side the located box contradicts
   scores 0. The option's score is the mean over its findings. A "normal" option asserts that
   every finding asked about is absent: its score is the weakest of their absence supports.
5. **Pick**: the best option when at least one option was assessed, its score is >= ``min_score``
   and it leads the runner-up by >= ``min_margin`` (``decided_by="tools"``).
6. **Otherwise** the VLM is asked the question and its options directly (its chat form) and a
   single letter read from its answer is taken, said so (``decided_by="vlm_direct"``). When that
   gives no letter either, the result is an abstention (``decided_by="fallback"``, ``letter=None``):
   never a silent forced guess.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from agents.reconciling.decide import conflicts, decide
from agents.reconciling.policy import Policy
from agents.reconciling.settle import resolve
from agents.replying.roles import ToolRoles
from agents.routing.mentions import extract_findings
from knowledge.evidence import Box, Decision, Evidence, FindingCall, Status
from tools.base import ToolCapabilities, ToolRequest, capabilities, verify_findings

DecidedBy = Literal["tools", "vlm_direct", "fallback"]
Side = Literal["left", "right", "bilateral"]

_LETTER = re.compile(r"^[A-Z]$")
_NEGATION = re.compile(r"\b(no|not|without|absent|absence of|negative for|free of|rules? out|ruled out|"
                       r"resolved|resolution of)\b")
_NORMAL = re.compile(r"\b(normal (chest|study|radiograph|x-ray|examination|findings)|no (acute|significant) "
                     r"(abnormalit|cardiopulmonary|findings))", re.I)
_SIDE = re.compile(r"\b(bilateral|both|left|right)\b")
_ANSWER_LETTER = re.compile(r"(?i:answer(?: is)?|option)\s*[:\-]?\s*\(?([A-Z])\)?(?![\w'])|^\s*\(?([A-Z])(?:[).:]|\s*$)",
                            re.M)


class MultipleChoiceQuestion(BaseModel):
    """One question with lettered options about one or more images (paths), plus optional context
    (e.g. the clinical indication a benchmark gives)."""

    question: str
    options: dict[str, str]
    images: list[Path]
    context: str | None = None

    @field_validator("question")
    @classmethod
    def _question(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the question is empty")
        return v.strip()

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) < 2:
            raise ValueError(f"a multiple-choice question needs at least 2 options, got {len(v)}")
        bad = [k for k in v if not _LETTER.match(k)]
        if bad:
            raise ValueError(f"option keys must be single capital letters, got {bad}")
        empty = [k for k, t in v.items() if not t.strip()]
        if empty:
            raise ValueError(f"options {empty} have no text")
        return dict(sorted(v.items()))

    @model_validator(mode="after")
    def _images(self) -> MultipleChoiceQuestion:
        if not self.images:
            raise ValueError("the question names no image")
        return self


class OptionReading(BaseModel):
    """What one option asserts, as the tools can check it."""

    letter: str
    findings: list[str] = Field(default_factory=list)
    negated: bool = False
    side: Side | None = None
    score: float | None = None  # None: no tool assessed anything this option names
    assessed: bool = False


class MultipleChoiceAnswer(BaseModel):
    """The letter (None: abstained), who decided it, and the evidence behind it."""

    letter: str | None
    decided_by: DecidedBy
    confidence: float | None = None  # the chosen option's score (tools) ; None otherwise
    reason: str
    options: list[OptionReading]
    decisions: list[Decision] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    vlm_answer: str | None = None
    tools_called: dict[str, int] = Field(default_factory=dict)
    thread_id: str

    @property
    def abstained(self) -> bool:
        return self.letter is None


@dataclass(frozen=True)
class ChoiceRule:
    """The numbers of the pick rule (module docstring, 5)."""

    min_score: float = 0.6
    min_margin: float = 0.1
    side_margin: float = 0.05  # a box whose centre lies within 0.5 +/- this names no side


# ---------------------------------------------------------------------------------------- reading options

def read_option(letter: str, text: str) -> OptionReading:
    """Findings, negation and side of one option (module docstring, 1)."""
    low = text.lower()
    findings = extract_findings(low, allow_no_finding=True)
    if _NORMAL.search(low):
        return OptionReading(letter=letter, findings=["no_finding"], side=None)
    negated = bool(findings) and bool(_NEGATION.search(low))
    sides = {m.group(1) for m in _SIDE.finditer(low)}
    side: Side | None = None
    if "bilateral" in sides or "both" in sides or {"left", "right"} <= sides:
        side = "bilateral"
    elif sides:
        side = "left" if "left" in sides else "right"
    return OptionReading(letter=letter, findings=[f for f in findings if f != "no_finding"] or findings,
                         negated=negated, side=side)


def box_side(box: Box, margin: float = 0.05) -> Side | None:
    """The patient's side a box lies on, on a frontal radiograph (the patient's right is the image's
    left); a box reaching across the midline is bilateral; one centred on it names no side."""
    if box.x1 < 0.5 - margin and box.x2 > 0.5 + margin and (box.x2 - box.x1) > 0.5:
        return "bilateral"
    centre = (box.x1 + box.x2) / 2
    if centre < 0.5 - margin:
        return "right"
    if centre > 0.5 + margin:
        return "left"
    return None


def score_option(option: OptionReading, decisions: Mapping[str, Decision], boxes: Mapping[str, list[Box]],
                 rule: ChoiceRule) -> OptionReading:
    """The option's support from the decisions (module docstring, 4)."""
    if option.findings == ["no_finding"] and "no_finding" not in decisions:
        return _score_normal(option, decisions)
    parts: list[float] = []
    assessed = False
    for f in option.findings:
        d = decisions.get(f)
        if d is None or d.status is Status.uncertain:
            parts.append(0.5)
            continue
        assessed = True
        wanted = Status.absent if option.negated else Status.present
        support = d.confidence if d.status is wanted else 1.0 - d.confidence
        if option.side and not option.negated and d.status is Status.present:
            sides = {box_side(b, rule.side_margin) for b in boxes.get(f, [])} - {None}
            if sides and option.side not in sides:
                support = 0.0
        parts.append(support)
    score = sum(parts) / len(parts) if parts else None
    return option.model_copy(update={"score": None if score is None else round(score, 4), "assessed": assessed})


def _score_normal(option: OptionReading, decisions: Mapping[str, Decision]) -> OptionReading:
    """'Normal' asserts every finding asked about is absent: its support is the weakest of theirs."""
    parts = [0.5 if d.status is Status.uncertain else (d.confidence if d.status is Status.absent else 1.0 - d.confidence)
             for f, d in decisions.items() if f != "no_finding"]
    assessed = any(d.status is not Status.uncertain for f, d in decisions.items() if f != "no_finding")
    return option.model_copy(update={"score": round(min(parts), 4) if parts else None, "assessed": assessed})


def pick(options: list[OptionReading], rule: ChoiceRule) -> tuple[str | None, float | None, str]:
    """The tools' letter, if the rule lets them decide (module docstring, 5): (letter, score, why)."""
    scored = sorted((o for o in options if o.score is not None), key=lambda o: -(o.score or 0.0))
    if not any(o.assessed for o in options):
        return None, None, "no tool assessed any finding the options name"
    best = scored[0]
    runner = scored[1].score if len(scored) > 1 else 0.0
    if (best.score or 0.0) < rule.min_score:
        return None, best.score, f"the best option scores {best.score:.2f} < {rule.min_score}"
    if (best.score or 0.0) - (runner or 0.0) < rule.min_margin:
        return None, best.score, f"the best option leads by {(best.score or 0) - (runner or 0):.2f} < {rule.min_margin}"
    return best.letter, best.score, f"option {best.letter} scores {best.score:.2f}, the runner-up {runner:.2f}"


def read_letter(answer: str, letters: list[str]) -> str | None:
    """A single option letter stated in a model's answer ("B", "Answer: C", "(D) ..."); None when it
    states none or several."""
    found = {(m.group(1) or m.group(2)).upper() for m in _ANSWER_LETTER.finditer(answer or "")}
    found &= set(letters)
    return found.pop() if len(found) == 1 else None


def direct_prompt(q: MultipleChoiceQuestion) -> str:
    """The VLM's chat ask: question, options, one letter."""
    lines = [q.question, *(f"{k}) {v}" for k, v in q.options.items())]
    if q.context:
        lines.insert(0, f"Context: {q.context}")
    lines.append("Answer with the letter of the single best option.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- the answerer

class MultipleChoice:
    """Asks the given tools about each question (module docstring). ``tools``/``caps``: a graph
    runtime's tools and capabilities (any subset, custom tools included); ``roles``: that graph's
    one reading of them (``runtime(g).roles``; without a graph, read from ``caps`` the same way);
    ``load_study``: path -> Study (the graph's ingestion, so limits and de-identification apply)."""

    def __init__(self, tools: Mapping[str, Any], load_study: Callable[[Path], Any], *,
                 caps: Mapping[str, ToolCapabilities] | None = None, settings: Any = None,
                 roles: ToolRoles | None = None, rule: ChoiceRule | None = None) -> None:
        self.tools = dict(tools)
        self.caps = {n: (caps or {}).get(n) or capabilities(t) for n, t in self.tools.items()}
        self.load_study = load_study
        self.rule = rule or ChoiceRule()
        self.roles = roles or ToolRoles.from_capabilities(self.caps)
        self.policy = Policy.from_settings(
            settings, prior_sources=self.roles.prior_sources, statement_sources=self.roles.statement_sources,
            box_preference=self.roles.box_preference, source_labels=self.roles.labels)
        self.counts: Counter[str] = Counter()  # every tool call, over the answerer's life
        self._lock = threading.Lock()

    def _intent(self, name: str, intent: str) -> bool:
        return intent in (self.caps[name].intents or getattr(self.tools[name], "intents", frozenset()))

    def _run(self, name: str, request: ToolRequest, called: Counter[str]) -> Evidence:
        called[name] += 1
        with self._lock:
            self.counts[name] += 1
        try:
            ev = self.tools[name].run(request)
        except Exception as exc:  # a tool never raises into the answer
            return Evidence.failure(name, f"{type(exc).__name__}: {exc}")
        return ev if isinstance(ev, Evidence) else Evidence.failure(name, "the tool returned no Evidence")

    def answer(self, q: MultipleChoiceQuestion, *, thread_id: str,
               history: list[dict[str, str]] | None = None) -> MultipleChoiceAnswer:
        """Answer one question on ``thread_id``; ``history``: earlier turns of the same thread (only
        when a caller deliberately shares a thread across questions)."""
        called: Counter[str] = Counter()
        options = [read_option(k, v) for k, v in q.options.items()]
        # 'normal' is judged from the other findings' absence, never asked as a finding of its own
        findings = list(dict.fromkeys(f for o in options for f in o.findings if f != "no_finding"))
        sided = [f for o in options if o.side for f in o.findings if f != "no_finding"]
        studies = [self.load_study(Path(p)) for p in q.images]
        evidence: list[Evidence] = []
        image_tools = [n for n in self.tools if n in self.roles.image_sources]
        focus = sided[0] if sided else (findings[0] if findings else None)
        for study in studies:
            if findings:
                for n in image_tools:
                    if self._intent(n, "finding_question"):
                        evidence.append(self._run(n, ToolRequest(
                            intent="finding_question", text=q.question, study=study, finding=focus,
                            findings=tuple(dict.fromkeys([f for f in (focus,) if f] + findings)),
                            thread_id=thread_id), called))
            for n in image_tools:  # grounding is a report writer's form; a scorer's box comes with its answer
                if sided and n in self.roles.writers and self._intent(n, "locate"):
                    evidence.append(self._run(n, ToolRequest(
                        intent="locate", text=q.question, study=study, finding=sided[0],
                        findings=tuple(dict.fromkeys(sided)), thread_id=thread_id), called))
        for n in self.tools:
            if n in self.roles.priors and findings and self._intent(n, "similar_cases"):
                evidence.append(self._run(n, ToolRequest(intent="similar_cases", text=q.question,
                                                         thread_id=thread_id), called))
        calls: list[FindingCall] = [c for e in evidence if e.ok for c in e.calls]
        decisions = decide(calls, self.policy) if calls else []
        decisions = self._settle(decisions, studies, thread_id, evidence, called)
        by_finding = {d.finding: d for d in decisions}
        boxes: dict[str, list[Box]] = {}
        for e in evidence:
            for a in (e.artifacts if e.ok else []):
                if getattr(a, "box", None) is not None and getattr(a, "finding", None):
                    boxes.setdefault(a.finding, []).append(a.box)
            for c in (e.calls if e.ok else []):
                if c.box is not None and c.status is Status.present:
                    boxes.setdefault(c.finding, []).append(c.box)
        options = [score_option(o, by_finding, boxes, self.rule) for o in options]
        letter, score, why = pick(options, self.rule)
        common = dict(options=options, decisions=decisions, evidence=evidence, thread_id=thread_id)
        if letter is not None:
            return MultipleChoiceAnswer(letter=letter, decided_by="tools", confidence=score, reason=why,
                                        tools_called=dict(called), **common)
        chat = next((n for n in image_tools if self._intent(n, "chat")), None)
        if chat is None:
            return MultipleChoiceAnswer(letter=None, decided_by="fallback", reason=f"abstained: {why}; no tool "
                                        "answers the question directly", tools_called=dict(called), **common)
        ev = self._run(chat, ToolRequest(intent="chat", text=direct_prompt(q), study=studies[0],
                                         history=list(history or []), thread_id=thread_id), called)
        evidence.append(ev)
        direct = read_letter(ev.answer or "", list(q.options)) if ev.ok else None
        if direct is not None:
            return MultipleChoiceAnswer(letter=direct, decided_by="vlm_direct", vlm_answer=ev.answer,
                                        reason=f"the tools did not decide ({why}); {chat} answered directly",
                                        tools_called=dict(called), **common)
        return MultipleChoiceAnswer(letter=None, decided_by="fallback", vlm_answer=ev.answer if ev.ok else None,
                                    reason=f"abstained: {why}; {chat}'s direct answer names no single option"
                                    + ("" if ev.ok else f" ({ev.error})"), tools_called=dict(called), **common)

    def _settle(self, decisions: list[Decision], studies: list[Any], thread_id: str, evidence: list[Evidence],
                called: Counter[str]) -> list[Decision]:
        """One batched re-ask of a verifying tool per image for the conflicts (module docstring, 3)."""
        disputed = conflicts(decisions, self.policy)
        verifier = next((n for n in self.tools if n in self.roles.verifiers and n in self.roles.image_sources), None)
        if not disputed or verifier is None:
            return decisions
        names = [d.finding for d in disputed]
        answers: dict[str, Evidence] = {}
        for study in studies:
            called[verifier] += 1
            with self._lock:
                self.counts[verifier] += 1
            try:
                got = verify_findings(self.tools[verifier], study, names, thread_id=thread_id)
            except Exception as exc:  # a failed re-ask leaves the conflict standing (rule C)
                got = [Evidence.failure(verifier, f"{type(exc).__name__}: {exc}") for _ in names]
            evidence.extend(got)
            for f, ev in zip(names, got, strict=False):
                answers.setdefault(f, ev)
        out = []
        for d in decisions:
            ev = answers.get(d.finding) if d in disputed else None
            out.append(resolve(d, ev, policy=self.policy) if ev is not None else d)
        return out
