"""A comparison turn through graph.invoke: the change table, which study is the prior, the wrong-patient
guard, each change outcome with scripted tools (the same-patient NIH pairs: test_graph_compare_nih.py)."""

from __future__ import annotations

import numpy as np
import pytest
from graph_scripted import ScriptedVLM, classifier
from langchain_core.messages import HumanMessage

from agents.replying.compose import NO_COMPARISON
from graph import runtime
from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.ingestion.study import Study

ASK = "Is it worse than before?"


def _study(seed: int, *, view: str = "PA", **meta: str) -> Study:
    pixels = np.random.default_rng(seed).random((64, 64)).astype(np.float32)
    return Study.from_array(pixels, view=view, metadata=meta)  # type: ignore[arg-type]


class PerStudy:
    """Tools whose outputs are scripted per study id (classifier scores, the VLM's report)."""

    def __init__(self) -> None:
        self.scores: dict[str, dict[str, float]] = {}
        self.reports: dict[str, str] = {}
        self.clf = classifier({})
        self.clf.result = self._scores
        self.vlm = ScriptedVLM()
        self.vlm.result = self._report
        self.clf.cacheable = self.vlm.cacheable = True  # like the built-ins: a study is read once

    def _scores(self, request: ToolRequest) -> Evidence:
        scripted = classifier(self.scores[request.study.id])
        return scripted.run(request)

    def _report(self, request: ToolRequest) -> Evidence:
        if request.intent == "report":
            return Evidence(tool="vlm", report=self.reports.get(request.study.id, "The lungs are clear."))
        return ScriptedVLM._answer(self.vlm, request)


def _converse(make_graph, thread, studies: list[tuple[Study, dict[str, float], str]], last: str = ASK, **inp):
    tools = PerStudy()
    g = make_graph(tools.vlm, tools.clf, router_semantic=False)
    cfg = thread()
    for study, scores, report in studies:
        sid = runtime(g).studies.put(study)
        tools.scores[sid], tools.reports[sid] = scores, report
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    out = g.invoke({"messages": [HumanMessage(last)], **inp}, cfg)
    return out, out["messages"][-1], tools


def _rows(message) -> dict[str, dict]:
    return {d["finding"]: d for d in message.additional_kwargs["cxr"]["comparison"]["changes"]}


CLEAR = "The lungs are clear. No pleural effusion."
EFFUSION = "There is a left pleural effusion."


def test_new_finding_gets_a_change_table_naming_the_prior(make_graph, thread):
    prior, current = _study(1), _study(2)
    out, msg, tools = _converse(make_graph, thread, [(prior, {"pleural_effusion": 0.2}, CLEAR),
                                                     (current, {"pleural_effusion": 0.85}, EFFUSION)])
    text = msg.content
    assert NO_COMPARISON not in text
    assert "| finding | before | now | change | sources |" in text
    assert f"Prior: `{prior.id[:12]}` (the study read before this one in this conversation)" in text
    assert "The order is yours" in text and "Not confirmed to be the same patient" in text
    row = _rows(msg)["pleural_effusion"]
    assert (row["change"], row["before"], row["now"]) == ("new", "absent", "present")
    assert "classifier" in row["agreeing"] and "vlm" in row["agreeing"]
    assert text.index("Compared with the prior study") < text.index("### Report")
    assert tools.clf.calls == 2  # the comparison reused both reads from the ledgers


def test_the_question_may_come_with_the_new_upload(make_graph, thread):
    tools = PerStudy()
    g = make_graph(tools.vlm, tools.clf, router_semantic=False)
    cfg = thread()
    ids = [runtime(g).studies.put(s) for s in (_study(20), _study(21))]
    tools.scores.update({ids[0]: {"pleural_effusion": 0.1}, ids[1]: {"pleural_effusion": 0.9}})
    g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": ids[0]}, cfg)
    out = g.invoke({"messages": [HumanMessage(ASK)], "study_id": ids[1]}, cfg)
    msg = out["messages"][-1]
    assert msg.additional_kwargs["cxr"]["comparison"]["prior_study_id"] == ids[0]
    assert _rows(msg)["pleural_effusion"]["change"] == "new"


def test_a_named_finding_is_compared_as_a_finding_question(make_graph, thread):
    out, msg, _ = _converse(make_graph, thread, [(_study(22), {"pleural_effusion": 0.9}, EFFUSION),
                                                 (_study(23), {"pleural_effusion": 0.15}, CLEAR)],
                            last="Is the pleural effusion worse than before?")
    assert out["route"].intent == "finding_question"
    assert _rows(msg)["pleural_effusion"]["change"] == "resolved"
    assert "| finding | before | now | change | sources |" in msg.content


def test_resolved(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [(_study(3), {"pleural_effusion": 0.9}, EFFUSION),
                                               (_study(4), {"pleural_effusion": 0.1}, CLEAR)])
    assert _rows(msg)["pleural_effusion"]["change"] == "resolved"


def test_a_higher_classifier_score_is_stable_not_worse(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [(_study(5), {"cardiomegaly": 0.65}, "There is cardiomegaly."),
                                               (_study(6), {"cardiomegaly": 0.98}, "There is cardiomegaly.")])
    row = _rows(msg)["cardiomegaly"]
    assert row["change"] == "stable" and "worse" not in {r.get("change") for r in row["reasons"]}
    assert "never worse or improved" in msg.content


def test_report_difference_alone_is_a_possible_change_only(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [(_study(7), {"pleural_effusion": 0.5}, EFFUSION),
                                               (_study(8), {"pleural_effusion": 0.5}, CLEAR)])
    row = _rows(msg)["pleural_effusion"]
    assert (row["change"], row["possible_change"], row["needs_review"]) == ("cannot_compare", True, True)
    assert "possible change, check" in msg.content


def test_ap_versus_pa_is_said_and_lowers_confidence(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [(_study(9, view="PA"), {"pleural_effusion": 0.2}, CLEAR),
                                               (_study(10, view="AP"), {"pleural_effusion": 0.9}, EFFUSION)])
    row = _rows(msg)["pleural_effusion"]
    assert row["change"] == "new" and row["confidence"] == pytest.approx(0.4) and row["needs_review"]
    assert "Different projection (PA before, AP now)" in msg.content


def test_different_sex_is_refused(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [
        (_study(11, patient_sex="F", patient_age="60-69"), {"pleural_effusion": 0.2}, CLEAR),
        (_study(12, patient_sex="M", patient_age="60-69"), {"pleural_effusion": 0.9}, EFFUSION)])
    assert "Not compared: the two studies' headers give a different patient sex" in msg.content
    assert "| finding | before | now | change |" not in msg.content
    cmp = msg.additional_kwargs["cxr"]["comparison"]
    assert (cmp["patient"], cmp["compared"]) == ("mismatch", False)


def test_matching_headers_are_not_called_unconfirmed(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [
        (_study(13, patient_sex="F", patient_age="60-69"), {"pleural_effusion": 0.2}, CLEAR),
        (_study(14, patient_sex="F", patient_age="60-69"), {"pleural_effusion": 0.9}, EFFUSION)])
    assert msg.additional_kwargs["cxr"]["comparison"]["patient"] == "consistent"
    assert "Not confirmed" not in msg.content


def test_the_reader_names_the_prior(make_graph, thread):
    first, second, third = _study(15), _study(16), _study(17)
    _, msg, _ = _converse(make_graph, thread, [(first, {"pleural_effusion": 0.9}, EFFUSION),
                                               (second, {"pleural_effusion": 0.1}, CLEAR),
                                               (third, {"pleural_effusion": 0.9}, EFFUSION)],
                          prior_study_id=first.id)
    assert f"Prior: `{first.id[:12]}` (the study you named as the prior)" in msg.content
    assert _rows(msg)["pleural_effusion"]["change"] == "stable"  # against the second study it would be new


def test_a_named_prior_the_conversation_never_read_is_said(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [(_study(18), {"pleural_effusion": 0.1}, CLEAR)],
                          prior_study_id="f" * 64)
    assert "the study named as the prior (`ffffffffffff`) was not read in this conversation" in msg.content


def test_no_earlier_study_says_so(make_graph, thread):
    _, msg, _ = _converse(make_graph, thread, [(_study(19), {"pleural_effusion": 0.1}, CLEAR)])
    assert NO_COMPARISON in msg.content and "comparison" not in msg.additional_kwargs["cxr"]


def test_a_bad_prior_study_id_names_the_key(make_graph, thread):
    from agents.state import GraphInputError

    g = make_graph(ScriptedVLM())
    with pytest.raises(GraphInputError, match="prior_study_id"):
        g.invoke({"messages": [HumanMessage(ASK)], "prior_study_id": 7}, thread())
