"""A scripted prior-comparison tool whose effusion call the classifier contradicts, so a review of the comparison
holds one flagged change row and one plain one."""

from __future__ import annotations

import threading

from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.ingestion.study import Study


class Comparer:
    """Reads two films together; says the effusion resolved (a flagged change while the classifier still scores
    it, also when re-asked about the effusion alone) and the heart improved."""

    name = "cmp"
    intents = frozenset()
    compares_priors = True
    label = "the comparer"

    def run(self, request: ToolRequest) -> Evidence:
        raise AssertionError("asked only to compare")

    def compare(self, prior: Study, current: Study, *, finding: str | None = None, thread_id: str | None = None,
                cancel: threading.Event | None = None) -> Evidence:
        items = [{"finding": "pleural_effusion", "change": "resolved", "text": "The effusion has resolved."}]
        if finding is None:
            items.append({"finding": "cardiomegaly", "change": "improved", "text": "The heart is smaller."})
        return Evidence(tool=self.name, answer=" ".join(i["text"] for i in items), meta={"changes": items})
