"""A comparison turn asks the tools that read two films together (``compares_priors``): their statements
become change calls reconciled with the classifier's reads, a conflict is asked again as a fresh one-finding
prompt and settled by the re-ask rule, and both answers are recorded in the study's ledger."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from graph_scripted import classifier
from langchain_core.messages import HumanMessage

from agents.memory.ledger import as_ledger
from graph import runtime
from knowledge.evidence import Evidence
from tools.base import ToolRequest, capabilities
from tools.ingestion.study import Study

ASK = "Is it worse than before?"


def _study(seed: int) -> Study:
    return Study.from_array(np.random.default_rng(seed).random((64, 64)).astype(np.float32), view="PA")


class Comparer:
    """A tool that reads the prior and the current film together, its statements scripted per finding."""

    name = "cmp"
    intents = frozenset()  # asked only to compare
    compares_priors = True
    label = "the comparer"

    def __init__(self, said: dict[str, tuple[str, str]], again: dict[str, tuple[str, str] | None] | None = None):
        self.said, self.again = said, again or {}
        self.asked: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    def run(self, request: ToolRequest) -> Evidence:
        raise AssertionError("a comparing tool is not run for a turn's own intent")

    def compare(self, prior: Study, current: Study, *, finding: str | None = None, thread_id: str | None = None,
                cancel: threading.Event | None = None) -> Evidence:
        with self.lock:
            self.asked.append((prior.id, current.id, finding))
        if finding is None:
            items = [{"finding": f, "change": c, "text": t} for f, (c, t) in self.said.items()]
        else:
            answer = self.again.get(finding)
            items = [] if answer is None else [{"finding": finding, "change": answer[0], "text": answer[1]}]
        items.append({"finding": "not_a_finding", "change": "worse", "text": "Something odd is worse."})
        return Evidence(tool=self.name, answer=" ".join(i["text"] for i in items), meta={"changes": items})


def _converse(make_graph, thread, comparer: Comparer, scores: list[dict[str, float]], turns: int = 1):
    clf = classifier({})
    per_study: dict[str, dict[str, float]] = {}
    clf.result = lambda request: classifier(per_study[request.study.id]).run(request)
    clf.cacheable = True
    g = make_graph(clf, comparer, router_semantic=False)
    cfg = thread()
    studies = [_study(10 + i) for i in range(len(scores))]
    for study, s in zip(studies, scores, strict=True):
        sid = runtime(g).studies.put(study)
        per_study[sid] = s
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    outs = [g.invoke({"messages": [HumanMessage(ASK)]}, cfg) for _ in range(turns)]
    return outs, studies


def _rows(out) -> dict[str, dict]:
    return {d["finding"]: d for d in out["messages"][-1].additional_kwargs["cxr"]["comparison"]["changes"]}


def _ledger_asks(out) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(e.key.tool, e.key.ask.kind, e.key.ask.findings) for e in as_ledger(out["ledger"]).entries]


WORSE = "The left pleural effusion has increased."


def test_the_comparing_tool_is_asked_once_and_its_statement_becomes_the_change(make_graph, thread):
    comparer = Comparer({"pleural_effusion": ("worse", WORSE)})
    assert capabilities(comparer).compares_priors
    (out, again), (prior, current) = _converse(make_graph, thread, comparer,
                                               [{"pleural_effusion": 0.8}, {"pleural_effusion": 0.9}], turns=2)
    assert comparer.asked == [(prior.id, current.id, None)]  # prior first; the second turn reads the ledger
    row = _rows(out)["pleural_effusion"]
    assert (row["change"], row["conflict"]) == ("worse", False)
    assert set(row["agreeing"]) == {"cmp", "classifier"}  # the classifier's two reads fit worse (still there)
    stated = next(r for r in row["reasons"] if r["rule"] == "stated")
    assert (stated["source"], stated["detail"]) == ("cmp", WORSE)  # the quoted sentence
    assert "not_a_finding" not in _rows(out)  # a statement naming no known finding is skipped
    assert ("cmp", "compare", ()) in _ledger_asks(out)
    assert [e.tool for e in out["evidence"] if e.meta.get("changes")] == ["cmp"]
    assert _rows(again)["pleural_effusion"]["change"] == "worse"
    assert "the comparer says worse" in out["messages"][-1].content
    assert "nothing below is graded worse or improved" not in out["messages"][-1].content


def test_a_conflict_is_asked_again_and_settled_when_the_answer_fits(make_graph, thread):
    comparer = Comparer({"pleural_effusion": ("resolved", "The effusion has resolved.")},
                        again={"pleural_effusion": ("improved", "The pleural effusion is smaller.")})
    (out,), (prior, current) = _converse(make_graph, thread, comparer,
                                         [{"pleural_effusion": 0.85}, {"pleural_effusion": 0.8}])
    assert comparer.asked == [(prior.id, current.id, None), (prior.id, current.id, "pleural_effusion")]
    row = _rows(out)["pleural_effusion"]
    assert (row["change"], row["conflict"], row["needs_review"]) == ("improved", False, False)
    assert [r["rule"] for r in row["reasons"] if r["rule"].startswith("reask")] == ["reask_agrees"]
    assert ("cmp", "compare_reask", ("pleural_effusion",)) in _ledger_asks(out)
    assert "the comparer asked again, says improved (settled)" in out["messages"][-1].content


def test_a_maintained_conflict_stays_cannot_compare_and_is_not_asked_twice(make_graph, thread):
    comparer = Comparer({"pleural_effusion": ("resolved", "The effusion has resolved.")},
                        again={"pleural_effusion": ("resolved", "The pleural effusion has resolved.")})
    (out, later), _ = _converse(make_graph, thread, comparer,
                                [{"pleural_effusion": 0.85}, {"pleural_effusion": 0.8}], turns=2)
    row = _rows(out)["pleural_effusion"]
    assert (row["change"], row["conflict"], row["needs_review"]) == ("cannot_compare", True, True)
    assert [r["rule"] for r in row["reasons"] if r["rule"].startswith("reask")] == ["reask_maintained"]
    assert "the comparer asked again, says resolved again" in out["messages"][-1].content
    assert len(comparer.asked) == 2  # the later turn reads both answers from the ledger
    assert _rows(later)["pleural_effusion"]["change"] == "cannot_compare"


def test_an_unanswered_reask_leaves_the_conflict_for_review(make_graph, thread):
    comparer = Comparer({"pleural_effusion": ("new", "There is a new pleural effusion.")}, again={})
    (out,), _ = _converse(make_graph, thread, comparer, [{"pleural_effusion": 0.8}, {"pleural_effusion": 0.85}])
    row = _rows(out)["pleural_effusion"]
    assert (row["change"], row["needs_review"]) == ("cannot_compare", True)
    assert [r["rule"] for r in row["reasons"] if r["rule"].startswith("reask")] == ["reask_unresolved"]
    assert "the comparer asked again, said nothing about it" in out["messages"][-1].content


def test_a_stated_change_with_no_other_reader_still_names_its_source_only(make_graph, thread):
    comparer = Comparer({"cardiomegaly": ("improved", "The cardiomegaly has improved.")})
    (out,), _ = _converse(make_graph, thread, comparer, [{"pleural_effusion": 0.1}, {"pleural_effusion": 0.1}])
    row = _rows(out)["cardiomegaly"]  # a row because it was stated, though neither study called it
    assert row["change"] == "improved" and row["agreeing"] == ["cmp"]
    assert len(comparer.asked) == 1


def test_a_comparing_tool_that_states_nothing_leaves_the_score_reading(make_graph, thread):
    silent = Comparer({})
    (out,), _ = _converse(make_graph, thread, silent, [{"pleural_effusion": 0.7}, {"pleural_effusion": 0.99}])
    assert _rows(out)["pleural_effusion"]["change"] == "stable"  # still there; a score is not a size
    assert len(silent.asked) == 1


@pytest.fixture(scope="module")
def mg15(test_data_dir):
    from cxr_agent.settings import Settings
    from tools.vlm.backends.transformers_backend import TransformersBackend

    settings = Settings(model_profile="tiny", data_dir=test_data_dir, vlm_device="cpu", vlm_max_new_tokens=8,
                        vlm_family="medgemma15")
    backend = TransformersBackend(settings)
    backend.load()
    return settings, backend


def test_the_tiny_medgemma15_is_asked_with_both_films_prior_first(make_graph, thread, mg15, monkeypatch):
    from tools.vlm.adapters.medgemma import COMPARE, COMPARE_FINDING
    from tools.vlm.tool import VLMTool

    settings, backend = mg15
    vlm = VLMTool(settings, backend=backend)
    assert capabilities(vlm).compares_priors and not capabilities(
        VLMTool(settings.model_copy(update={"vlm_family": "medgemma"}))).compares_priors
    _, processor = backend.load()
    render = processor.apply_chat_template
    seen: list[tuple[str, list]] = []

    def spy(msgs, **kw):
        images = [c["image"] for m in msgs for c in m["content"] if c.get("type") == "image"]
        if len(images) == 2:
            seen.append((render(msgs, add_generation_prompt=True, tokenize=False), images))
        return render(msgs, **kw)

    monkeypatch.setattr(processor, "apply_chat_template", spy)
    clf = classifier({"pleural_effusion": 0.2})
    g = make_graph(vlm, clf, router_semantic=False, vlm_max_new_tokens=8)
    cfg = thread()
    prior, current = _study(31), _study(32)
    for s in (prior, current):
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": runtime(g).studies.put(s)}, cfg)
    out = g.invoke({"messages": [HumanMessage(ASK)]}, cfg)
    assert len(seen) == 1  # one fresh single-turn prompt for the pair (its random answer states no conflict)
    text, images = seen[0]
    assert text == ("<bos><start_of_turn>user\n<start_of_image><start_of_image>" + COMPARE.strip()
                    + "<end_of_turn>\n<start_of_turn>model\n")
    assert np.array_equal(np.asarray(images[0]), np.asarray(vlm.model_image(prior).image))
    assert np.array_equal(np.asarray(images[1]), np.asarray(vlm.model_image(current).image))
    read = next(e for e in out["evidence"] if e.meta.get("task") == "comparison")
    assert read.tool == "vlm" and read.meta["prior_study_id"] == prior.id and "changes" in read.meta
    assert ("vlm", "compare", ()) in _ledger_asks(out)
    # a re-ask about one finding: the same form, the question about that finding
    again = vlm.compare(prior, current, finding="pleural_effusion")
    assert again.ok and again.meta["prompt"] == COMPARE_FINDING.format("pleural effusion")
    assert seen[-1][0].count("<start_of_image>") == 2 and "Compare the pleural effusion" in seen[-1][0]


def test_a_comparing_tool_that_fails_is_named_and_nothing_is_recorded(make_graph, thread):
    class Broken(Comparer):
        def compare(self, prior, current, **kw):
            super().compare(prior, current, **kw)
            raise RuntimeError("the two films could not be loaded together")

    broken = Broken({})
    (out,), _ = _converse(make_graph, thread, broken, [{"pleural_effusion": 0.2}, {"pleural_effusion": 0.9}])
    text = out["messages"][-1].content
    assert "the comparer could not read the two films together" in text
    assert "RuntimeError: the two films could not be loaded together" in text
    assert _rows(out)["pleural_effusion"]["change"] == "new"  # the classifier's two reads still count
    assert not any(kind.startswith("compare") for _, kind, _ in _ledger_asks(out))  # a failure is not recorded
