"""Whole conversations on one study: report -> a finding question -> "where is it?" -> "why?" -> another
finding. Every decision not asked about stays as it was, review flags stay until a re-ask settles
them, a VLM that contradicts itself is flagged, and the classifier reads the study once."""

from __future__ import annotations

import pytest
from graph_scripted import ScriptedVLM, classifier, retrieval

from agents.memory.ledger import StudyLedger, study_decisions
from agents.turn.record import TurnRecord
from knowledge.evidence import Artifact, Box, Evidence, FindingCall, Status
from tools.base import ToolRequest

HEART = Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)
REPORT = "There is cardiomegaly. No pleural effusion."
ANSWERS = {"cardiomegaly": (Status.absent, "No, the heart size is normal."),
           "pleural_effusion": (Status.present, "Yes, there is a small left pleural effusion.")}
REASKS = {"nodule": Status.uncertain, "cardiomegaly": Status.uncertain, "pleural_effusion": Status.absent}


class ConversationVLM(ScriptedVLM):
    """A report writer whose direct answers are scripted per finding; grounding gives locations only."""

    def __init__(self) -> None:
        super().__init__(report=REPORT, verify=self._reask)
        self.cacheable = True

    def _answer(self, request: ToolRequest) -> Evidence:
        if request.intent == "finding_question":
            status, words = ANSWERS[request.finding or ""]
            return Evidence(tool="vlm", answer=words,
                            calls=[FindingCall(finding=request.finding, status=status, source="vlm")])
        if request.intent == "locate":
            return Evidence(tool="vlm", answer="The heart.", artifacts=[Artifact(
                kind="boxes", finding=request.finding, box=HEART, meta={"location_only": True})])
        return super()._answer(request)

    @staticmethod
    def _reask(finding: str) -> Evidence:
        return Evidence(tool="vlm", calls=[FindingCall(finding=finding, status=REASKS[finding], source="vlm",
                                                       task="verification")])


def _tools():
    vlm = ConversationVLM()
    clf = classifier({"cardiomegaly": 0.85, "pleural_effusion": 0.3, "nodule": 0.75, "atelectasis": 0.55,
                      "edema": 0.2}, {"cardiomegaly": HEART})
    ret = retrieval([["cardiomegaly"], ["cardiomegaly", "edema"], []])
    clf.cacheable = ret.cacheable = True
    return vlm, clf, ret


def _by_finding(decisions):
    return {d.finding: d for d in decisions}


def _unchanged_except(before, after, asked: set[str]) -> None:
    b, a = _by_finding(before), _by_finding(after)
    assert set(a) >= set(b)
    for f, d in b.items():
        if f not in asked and f != "no_finding":
            assert a[f] == d, f"{f} changed although not asked about"


@pytest.mark.parametrize("saver", ["memory", "sqlite"])
def test_a_conversation_keeps_what_was_known(make_graph, thread, cxr_image, tmp_path, saver):
    from agents.memory.checkpointers import make_checkpointer

    vlm, clf, ret = _tools()
    url = "memory" if saver == "memory" else f"sqlite:///{tmp_path / 'c.sqlite'}"
    g = make_graph(vlm, clf, ret, checkpointer=make_checkpointer(url=url))
    cfg = thread()

    # 1. report: the report is silent on the nodule the classifier calls -> re-asked, still unsure -> flagged
    one = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    d1 = _by_finding(one["decisions"])
    assert d1["cardiomegaly"].status is Status.present and not d1["cardiomegaly"].needs_review
    assert d1["pleural_effusion"].status is Status.absent
    assert d1["nodule"].needs_review
    assert vlm.verify_batches == [["nodule"]]
    assert isinstance(one["record"], TurnRecord) and one["record"].study_id == one["study_id"]
    assert {c.finding for c in one["record"].changed} == set(d1)  # all new
    assert (vlm.calls, clf.calls, ret.calls) == (1, 1, 1)

    # 2. "Is there cardiomegaly?" - the VLM now says no: it contradicts its report -> flagged, both quoted
    two = g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    assert (clf.calls, ret.calls) == (1, 1)  # the classifier's scores answer again: no second read
    assert vlm.calls == 2
    rec = two["record"]
    assert [e.tool for e in rec.evidence if e.reused] == ["classifier"]
    cardio = _by_finding(two["decisions"])["cardiomegaly"]
    assert cardio.needs_review and cardio.conflict
    vote = next(r for r in cardio.reasons if r.rule == "conflict")  # both of the VLM's answers, quoted
    said = [(c.source, c.task, c.text) for c in (*vote.present, *vote.absent) if c.source == "vlm"]
    assert said == [("vlm", "report", said[0][2]), ("vlm", None, "No, the heart size is normal.")]
    assert f"'{said[0][2]}'" in cardio.rationale and "'No, the heart size is normal.'" in cardio.rationale
    _unchanged_except(one["decisions"], two["decisions"], {"cardiomegaly"})
    assert _by_finding(two["decisions"])["nodule"].needs_review  # kept: nothing settled it
    assert vlm.verify_batches == [["nodule"], ["cardiomegaly"]]  # the nodule's re-ask is on record, not repeated
    assert [c.finding for c in rec.changed] == ["cardiomegaly"]
    assert rec.changed[0].because == ["vlm (finding question)", "vlm re-ask"] and rec.changed[0].review_after
    payload = two["messages"][-1].additional_kwargs["cxr"]
    assert payload["reused"] == ["classifier"] and [c["finding"] for c in payload["changed"]] == ["cardiomegaly"]
    assert len(two["decisions"]) == len(one["decisions"])  # the study's decisions, not this turn's slice

    # 3. "Where is it?" - locates the cardiomegaly; the classifier's stored heatmap answers
    three = g.invoke({"messages": [("user", "Where is it?")]}, cfg)
    assert three["route"].intent == "locate" and three["route"].finding == "cardiomegaly"
    assert clf.calls == 1 and vlm.calls == 3
    assert three["decisions"] == two["decisions"] and three["record"].changed == []

    # 4. "Why?" - answered from the ledger's decisions; nothing runs
    four = g.invoke({"messages": [("user", "Why?")]}, cfg)
    assert (vlm.calls, clf.calls, ret.calls) == (3, 1, 1)
    assert cardio.rationale in four["messages"][-1].content
    assert four["decisions"] == two["decisions"]

    # 5. another finding: the VLM contradicts its report again; the re-ask settles it with the classifier
    five = g.invoke({"messages": [("user", "Is there a pleural effusion?")]}, cfg)
    assert (clf.calls, ret.calls) == (1, 1)
    effusion = _by_finding(five["decisions"])["pleural_effusion"]
    assert effusion.status is Status.absent and not effusion.needs_review  # settled by the re-ask
    assert any(r.rule == "reask_agrees" for r in effusion.reasons)
    _unchanged_except(four["decisions"], five["decisions"], {"pleural_effusion"})
    assert _by_finding(five["decisions"])["cardiomegaly"].needs_review  # still flagged: never settled
    assert vlm.verify_batches == [["nodule"], ["cardiomegaly"], ["pleural_effusion"]]

    values = g.get_state(cfg).values
    assert isinstance(values["ledger"], StudyLedger) and study_decisions(values) == five["decisions"]
    assert "record" not in values and "last_result" not in values  # the record is not checkpointed


def test_another_conversation_on_the_study_shares_only_fixed_prompt_outputs(make_graph, thread, cxr_image):
    """A second thread's report on the same study reads nothing again (the classifier's scores and the
    VLM's fixed-prompt report are shared by pixel-hash study id); its finding question, built from its
    own words, runs in its own thread; each thread keeps its own ledger."""
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    first_cfg, second_cfg = thread(), thread()
    first = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, first_cfg)
    g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, first_cfg)
    counts = (vlm.calls, clf.calls)
    second = g.invoke({"messages": [("user", "Write a report")], "study_id": first["study_id"]}, second_cfg)
    assert (vlm.calls, clf.calls) == counts  # report and scores shared; retrieval runs on the draft
    assert sorted(e.tool for e in second["record"].evidence if e.reused) == ["classifier", "vlm"]
    assert second["decisions"] == first["decisions"]  # not the first thread's later question
    g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, second_cfg)
    assert vlm.calls == counts[0] + 1 and clf.calls == counts[1]  # its own words: its own ask
    ledger = g.get_state(second_cfg).values["ledger"]
    assert sorted(e.key.tool for e in ledger.entries if e.key.ask.kind != "verify") == \
        ["classifier", "retrieval", "vlm", "vlm"]


def test_a_tool_that_does_not_declare_cacheable_runs_every_turn(make_graph, thread, cxr_image):
    vlm, clf, ret = _tools()
    clf.cacheable = False
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    assert clf.calls == 2


def test_a_failed_or_cut_off_output_is_not_reused(make_graph, thread, cxr_image):
    vlm, clf, ret = _tools()
    cut = {"n": 0}

    def report(request: ToolRequest) -> Evidence:
        cut["n"] += 1
        return Evidence(tool="vlm", report="There is cardiomeg", truncated=True)

    vlm.result = report  # every report is cut at the token limit
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    out = g.invoke({"messages": [("user", "Write a report")]}, cfg)
    assert cut["n"] == 2 and clf.calls == 1
    nodule = _by_finding(out["decisions"])["nodule"]
    assert nodule.status is Status.present and not nodule.conflict  # a cut-off report's silence is no absence


def test_a_conversation_on_the_fake_radvlm_backend(make_graph, thread, cxr_image, settings):
    """The same conversation through the real VLM tool speaking RadVLM's trained shapes (the test-only
    backend of tests/tools/vlm): its direct "no" contradicts its report's cardiomegaly and is flagged,
    every decision not asked about stays, and the classifier reads the study once."""
    import importlib.util
    from pathlib import Path

    from tools.vlm.tool import VLMTool

    path = Path(__file__).resolve().parents[1] / "tools" / "vlm" / "fake_radvlm.py"
    spec = importlib.util.spec_from_file_location("fake_radvlm_for_graph", path)
    fake_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_module)
    fake = fake_module.FakeRadVLM(yes=lambda target: target != "cardiomegaly")
    clf = classifier({"cardiomegaly": 0.85, "pleural_effusion": 0.7, "pneumothorax": 0.2, "nodule": 0.55},
                     {"cardiomegaly": HEART})
    clf.cacheable = True
    g = make_graph(VLMTool(settings, backend=fake), clf)
    cfg = thread()
    outs = []
    for i, text in enumerate(("Write a report", "Is there cardiomegaly?", "Where is it?", "Why?",
                              "Is there a pleural effusion?")):
        outs.append(g.invoke({"messages": [("user", text)], **({"image": str(cxr_image)} if i == 0 else {})}, cfg))
    assert fake.untrained == [] and clf.calls == 1
    report, cardio_q, where, why, effusion_q = (_by_finding(o["decisions"]) for o in outs)
    assert not report["cardiomegaly"].needs_review  # report, list and classifier agree
    assert cardio_q["cardiomegaly"].needs_review and cardio_q["cardiomegaly"].conflict  # "No" after its report
    assert "No, there is no cardiomegaly." in cardio_q["cardiomegaly"].rationale
    _unchanged_except(outs[0]["decisions"], outs[1]["decisions"], {"cardiomegaly"})
    assert where == cardio_q and why == cardio_q  # locating and explaining change nothing
    assert outs[2]["route"].finding == "cardiomegaly"
    _unchanged_except(outs[3]["decisions"], outs[4]["decisions"], {"pleural_effusion"})
    assert effusion_q["cardiomegaly"].needs_review  # still flagged: nothing settled it


def test_a_second_study_keeps_the_first_on_the_shelf(make_graph, thread, cxr_images):
    """A conversation that loads a second image keeps the first study's ledger and decisions: they are
    exported by its id, and going back to it reads nothing again."""
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    first = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_images[0])}, cfg)
    first_id, first_decisions = first["study_id"], _by_finding(first["decisions"])
    reads = clf.calls

    second = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_images[1])}, cfg)
    assert second["study_id"] != first_id
    values = g.get_state(cfg).values
    assert _by_finding(study_decisions(values, first_id)) == first_decisions  # not lost with the new image
    assert study_decisions(values, second["study_id"]) == second["decisions"]
    assert study_decisions(values, "0" * 64) == []  # a study this conversation never read
    assert clf.calls == reads + 1

    back = g.invoke({"messages": [("user", "Is there cardiomegaly?")], "study_id": first_id}, cfg)
    assert clf.calls == reads + 1  # the first study's classifier read comes off the shelf
    _unchanged_except(list(first_decisions.values()), back["decisions"], {"cardiomegaly"})
    values = g.get_state(cfg).values
    assert _by_finding(study_decisions(values, second["study_id"])) == _by_finding(second["decisions"])
