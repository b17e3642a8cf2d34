"""Scripted tools with controlled outputs for graph tests (no models)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from knowledge.evidence import Artifact, Box, Evidence, FindingCall, RetrievedReport, Status
from tools.base import ToolRequest

Result = Evidence | Callable[[ToolRequest], Evidence]


class ScriptedTool:
    """Returns a fixed Evidence (or result(request)); counts calls; can sleep or raise."""

    def __init__(self, name: str, intents: set[str], result: Result | None = None, *, delay: float = 0.0,
                 raises: Exception | None = None, image_source: bool = True):
        self.name = name
        self.intents = frozenset(intents)
        self.image_source = image_source
        self.result = result
        self.delay = delay
        self.raises = raises
        self.requests: list[ToolRequest] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def run(self, request: ToolRequest) -> Evidence:
        with self._lock:
            self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        if self.raises is not None:
            raise self.raises
        if callable(self.result) and not isinstance(self.result, Evidence):
            return self.result(request)
        return self.result if self.result is not None else Evidence(tool=self.name)


class ScriptedVLM(ScriptedTool):
    """A VLM: report / answer per intent, tokens streamed, and scripted verification re-asks
    (declares the built-in VLM's capabilities: image source, report writer, verifier)."""

    writes_report = True
    verifies = True

    def __init__(self, report: str = "The lungs are clear. No pleural effusion. Heart size is normal.", *,
                 verify: Callable[[str], Evidence] | None = None, answer: str = "Chat answer.", **kw: Any):
        super().__init__("vlm", {"report", "locate", "finding_question", "chat"}, self._answer, **kw)
        self.report = report
        self.answer = answer
        self.verify_script = verify
        self.verify_calls: list[str] = []
        self.verify_batches: list[list[str]] = []

    def _answer(self, request: ToolRequest) -> Evidence:
        if request.on_token:
            for word in ("Drafting", " report"):
                request.on_token(word)
        if request.intent == "report":
            return Evidence(tool="vlm", report=self.report)
        if request.intent == "locate":
            f = request.finding or "lung_opacity"
            return Evidence(tool="vlm", calls=[FindingCall(finding=f, status=Status.present, source="vlm",
                                                           box=Box(x1=0.1, y1=0.5, x2=0.4, y2=0.9))])
        if request.intent == "finding_question":
            return Evidence(tool="vlm", answer="Yes.", calls=[
                FindingCall(finding=request.finding or "pleural_effusion", status=Status.present, source="vlm")])
        return Evidence(tool="vlm", answer=f"{self.answer} (history {len(request.history)})")

    def verify_finding(self, study: Any, finding: str, *, thread_id: str | None = None) -> Evidence:
        self.verify_calls.append(finding)
        if self.verify_script is None:
            return Evidence.failure("vlm", "no verification scripted")
        return self.verify_script(finding)

    def verify(self, study: Any, findings: list[str], *, thread_id: str | None = None,
               cancel: threading.Event | None = None) -> list[Evidence]:
        self.verify_batches.append(list(findings))
        return [self.verify_finding(study, f, thread_id=thread_id) for f in findings]


def classifier(scores: dict[str, float], boxes: dict[str, Box] | None = None, **kw: Any) -> ScriptedTool:
    """A classifier calling each finding present/absent/uncertain around 0.5 +/- 0.1 (op-norm scores)."""
    boxes = boxes or {}

    def result(request: ToolRequest) -> Evidence:
        calls, arts = [], []
        for f, s in scores.items():
            st = Status.present if s >= 0.6 else Status.absent if s <= 0.4 else Status.uncertain
            calls.append(FindingCall(finding=f, status=st, score=s, score_kind="op_norm", source="classifier",
                                     box=boxes.get(f)))
            if f in boxes:
                arts.append(Artifact(kind="heatmap", finding=f, uri=f"/tmp/{f}.npy", box=boxes[f]))
        return Evidence(tool="classifier", calls=calls, artifacts=arts, meta={"study": request.study.id if request.study else None})

    return ScriptedTool("classifier", {"report", "locate", "finding_question"}, result, **kw)


def retrieval(labels: list[list[str]], **kw: Any) -> ScriptedTool:
    def result(request: ToolRequest) -> Evidence:
        n = len(labels)
        neighbors = [RetrievedReport(id=f"r{i}", score=0.9 - i * 0.01, text=f"Report {i}: " + ", ".join(ls),
                                     labels=ls) for i, ls in enumerate(labels)]
        counts: dict[str, int] = {}
        for ls in labels:
            for f in ls:
                counts[f] = counts.get(f, 0) + 1
        calls = [FindingCall(finding=f, status=Status.present if c / n >= 0.5 else Status.uncertain, score=c / n,
                             score_kind="neighbor_fraction", source="retrieval") for f, c in counts.items()]
        return Evidence(tool="retrieval", neighbors=neighbors, calls=calls,
                        meta={"query": request.draft_report or request.text})

    tool = ScriptedTool("retrieval", {"report", "similar_cases"}, result, image_source=False, **kw)
    tool.needs_draft = True  # like the built-in: runs after the report writer, on its draft
    return tool
