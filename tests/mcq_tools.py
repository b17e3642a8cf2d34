"""A scripted image tool and a multiple-choice answerer over it, shared by the multiple-choice tests
(tests/agents/test_multiple_choice.py, tests/eval/test_mcq.py); no models."""

from __future__ import annotations

from agents.turn.multiple_choice import MultipleChoice
from knowledge.evidence import Artifact, Box, Evidence, FindingCall, Status
from tools.base import ToolRequest


class Tool:
    """An image tool with scripted answers per finding; records every request (thread ids included)."""

    image_source = True

    def __init__(self, name: str, present: dict[str, float], *, intents: tuple[str, ...] = ("finding_question",),
                 box: Box | None = None, chat: str | None = None, writes_report: bool = False) -> None:
        self.name, self.present, self.box, self.chat = name, present, box, chat
        self.writes_report = writes_report
        self.intents = frozenset(intents)
        self.requests: list[ToolRequest] = []

    def run(self, r: ToolRequest) -> Evidence:
        self.requests.append(r)
        if r.intent == "chat":
            return Evidence(tool=self.name, answer=self.chat or "I cannot tell.")
        if r.intent == "locate":
            return Evidence(tool=self.name, artifacts=[Artifact(kind="boxes", finding=f, box=self.box)
                                                       for f in r.findings if self.box and f in self.present])
        calls = []
        for f in r.findings:
            s = self.present.get(f, 0.1)
            calls.append(FindingCall(finding=f, status=Status.present if s >= 0.5 else Status.absent, score=s,
                                     score_kind="probability", source=self.name))
        return Evidence(tool=self.name, calls=calls)


def answerer(*tools: Tool) -> MultipleChoice:
    import numpy as np

    from tools.ingestion.study import Study

    study = Study.from_array(np.zeros((32, 32), dtype=np.float32), view="PA")
    return MultipleChoice({t.name: t for t in tools}, lambda _p: study)
