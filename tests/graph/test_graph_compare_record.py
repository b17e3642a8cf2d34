"""The turn record lists a comparison's asks of the tools that compare priors (asked inside the respond
node) among the turn's evidence, like other tool calls: run or reused, the re-ask about one finding too."""

from __future__ import annotations

import threading

import numpy as np
from graph_scripted import classifier
from langchain_core.messages import HumanMessage

from graph import runtime
from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.ingestion.study import Study


class Comparer:
    """Says the effusion resolved, also when asked again (the classifier still scores it): a kept conflict."""

    name = "cmp"
    intents = frozenset()
    compares_priors = True
    label = "the comparer"

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails

    def run(self, request: ToolRequest) -> Evidence:
        raise AssertionError("asked only to compare")

    def compare(self, prior: Study, current: Study, *, finding: str | None = None, thread_id: str | None = None,
                cancel: threading.Event | None = None) -> Evidence:
        if self.fails:
            raise RuntimeError("the comparing model is down")
        item = {"finding": "pleural_effusion", "change": "resolved", "text": "The effusion has resolved."}
        return Evidence(tool=self.name, answer=item["text"], meta={"changes": [item]})


def _converse(make_graph, thread, comparer: Comparer, turns: int):
    scores: dict[str, dict[str, float]] = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    g = make_graph(clf, comparer, router_semantic=False)
    cfg = thread()
    for seed, s in ((31, {"pleural_effusion": 0.85}), (32, {"pleural_effusion": 0.8})):
        sid = runtime(g).studies.put(Study.from_array(np.random.default_rng(seed).random((64, 64)).astype(np.float32),
                                                      view="PA"))
        scores[sid] = s
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    return [g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg) for _ in range(turns)]


def _compared(out) -> list[tuple[str, str, tuple[str, ...], bool]]:
    return [(e.tool, e.evidence.meta["ask"]["kind"], tuple(e.evidence.meta["ask"]["findings"]), e.reused)
            for e in out["record"].evidence if e.comparison]


def test_the_comparison_s_asks_and_re_asks_are_in_the_turn_record(make_graph, thread):
    first, again = _converse(make_graph, thread, Comparer(), turns=2)
    assert _compared(first) == [("cmp", "compare", (), False), ("cmp", "compare_reask", ("pleural_effusion",), False)]
    assert _compared(again) == [("cmp", "compare", (), True), ("cmp", "compare_reask", ("pleural_effusion",), True)]
    assert "cmp" in again["record"].reused
    tools = [e.tool for e in first["record"].evidence if not e.comparison]
    assert "classifier" in tools and "cmp" not in tools  # the turn's own reads stay listed as before


def test_a_comparing_tool_that_fails_is_recorded_unavailable(make_graph, thread):
    (out,) = _converse(make_graph, thread, Comparer(fails=True), turns=1)
    failed = [e for e in out["record"].evidence if e.comparison]
    assert [(e.tool, e.evidence.ok) for e in failed] == [("cmp", False)]
    assert "comparing model is down" in (failed[0].evidence.error or "")
    assert "cmp" in out["record"].unavailable
