"""Multiple-choice answering outside the router: options become the tools' asks, the reconciler
decides, a written rule picks the letter, the VLM answers directly what no tool decides (and says so),
and nothing decided is an abstention, never a silent guess."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcq_tools import Tool, answerer  # tests/mcq_tools.py

from agents.turn.multiple_choice import ChoiceRule, MultipleChoiceQuestion, pick, read_option, score_option
from knowledge.evidence import Box, Decision, Evidence, FindingCall, Status
from tools.base import ToolRequest


def test_options_are_read_for_finding_negation_and_side() -> None:
    assert read_option("A", "Right-sided pleural effusion").model_dump(include={"findings", "negated", "side"}) == {
        "findings": ["pleural_effusion"], "negated": False, "side": "right"}
    assert read_option("B", "No pneumothorax").negated is True
    assert read_option("C", "Normal chest radiograph").findings == ["no_finding"]
    assert read_option("D", "Bilateral pleural effusions").side == "bilateral"


def test_the_pick_rule_follows_the_decisions_and_abstains_when_they_do_not_decide() -> None:
    rule = ChoiceRule()
    eff = Decision(finding="pleural_effusion", status=Status.present, confidence=0.9)
    opts = [read_option("A", "Pleural effusion"), read_option("B", "No pleural effusion"),
            read_option("C", "Situs inversus")]
    scored = [score_option(o, {"pleural_effusion": eff}, {}, rule) for o in opts]
    assert [o.score for o in scored] == [0.9, pytest.approx(0.1), None]
    assert pick(scored, rule)[0] == "A"
    unsure = Decision(finding="pleural_effusion", status=Status.uncertain, confidence=0.4)
    assert pick([score_option(o, {"pleural_effusion": unsure}, {}, rule) for o in opts], rule)[0] is None
    # a located box on the image's left is the patient's right: 'left-sided' scores 0
    left, right = read_option("A", "Left pleural effusion"), read_option("B", "Right pleural effusion")
    boxes = {"pleural_effusion": [Box(x1=0.05, y1=0.5, x2=0.35, y2=0.9)]}
    got = [score_option(o, {"pleural_effusion": eff}, boxes, rule) for o in (left, right)]
    assert [o.score for o in got] == [0.0, 0.9] and pick(got, rule)[0] == "B"


def test_what_no_tool_decides_goes_to_the_vlm_directly_and_says_so() -> None:
    q = MultipleChoiceQuestion(question="Most likely diagnosis?", options={"A": "Sarcoidosis", "B": "Silicosis"},
                               images=[Path("x.png")])
    vlm = Tool("vlm", {}, intents=("finding_question", "chat"), chat="Answer: B")
    ans = answerer(vlm).answer(q, thread_id="t1")
    assert (ans.letter, ans.decided_by) == ("B", "vlm_direct") and "answered directly" in ans.reason
    prompt = vlm.requests[-1].text
    assert vlm.requests[-1].intent == "chat" and "A) Sarcoidosis" in prompt and "B) Silicosis" in prompt
    mute = Tool("vlm", {}, intents=("finding_question", "chat"), chat="It could be either.")
    ans = answerer(mute).answer(q, thread_id="t2")
    assert ans.letter is None and ans.decided_by == "fallback" and ans.abstained and "abstained" in ans.reason
    ans = answerer(Tool("classifier", {})).answer(q, thread_id="t3")  # no tool that answers directly
    assert ans.letter is None and ans.decided_by == "fallback"


def test_tools_decide_a_presence_question_and_a_side_question() -> None:
    vlm = Tool("vlm", {"pleural_effusion": 0.9}, intents=("finding_question", "locate", "chat"),
               box=Box(x1=0.05, y1=0.5, x2=0.35, y2=0.9), writes_report=True)
    cls = Tool("classifier", {"pleural_effusion": 0.85}, intents=("finding_question", "locate"))
    mc = answerer(vlm, cls)
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Pleural effusion", "B": "Pneumothorax"},
                               images=[Path("x.png")])
    ans = mc.answer(q, thread_id="t")
    assert (ans.letter, ans.decided_by) == ("A", "tools") and ans.confidence and ans.confidence > 0.6
    assert {d.finding: d.status for d in ans.decisions}["pneumothorax"] is Status.absent
    assert ans.tools_called == {"vlm": 1, "classifier": 1}  # no chat ask: the tools decided
    side = MultipleChoiceQuestion(question="Side?", options={"A": "Left pleural effusion", "B": "Right pleural effusion"},
                                  images=[Path("x.png")])
    ans = mc.answer(side, thread_id="t")
    assert ans.letter == "B" and [r.intent for r in vlm.requests[-2:]] == ["finding_question", "locate"]
    assert [r.intent for r in cls.requests] == ["finding_question"] * 2  # its box comes with its answer


def test_retrieval_is_a_prior_that_never_decides_on_its_own() -> None:
    class Prior:
        name, intents, image_source = "retrieval", frozenset({"similar_cases"}), False

        def __init__(self) -> None:
            self.requests: list[ToolRequest] = []

        def run(self, r: ToolRequest) -> Evidence:
            self.requests.append(r)
            return Evidence(tool="retrieval", calls=[FindingCall(finding="pneumothorax", status=Status.present, score=0.9,
                                                                 score_kind="neighbor_fraction", source="retrieval")])

    prior = Prior()
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Pneumothorax", "B": "Pleural effusion"},
                               images=[Path("x.png")])
    ans = answerer(prior, Tool("classifier", {})).answer(q, thread_id="t")
    assert prior.requests and prior.requests[0].study is None and prior.requests[0].text == "Which?"
    # the classifier calls both absent; the neighbours' 90% only shifts the pneumothorax decision's confidence
    d = {x.finding: x for x in ans.decisions}
    assert d["pneumothorax"].status is Status.absent and d["pleural_effusion"].status is Status.absent
    alone = answerer(prior).answer(q, thread_id="t2")
    assert alone.letter is None and alone.decided_by == "fallback"  # a prior alone decides nothing


def test_a_normal_option_is_judged_by_the_absence_of_every_finding_asked() -> None:
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Pleural effusion", "B": "Pneumothorax",
                                                           "C": "Normal chest radiograph"}, images=[Path("x.png")])
    clear = Tool("classifier", {"pleural_effusion": 0.05, "pneumothorax": 0.05})
    ans = answerer(clear).answer(q, thread_id="t")
    assert ans.letter == "C" and ans.decided_by == "tools"
    assert all("no_finding" not in r.findings for r in clear.requests)  # never asked as a finding
    sick = answerer(Tool("classifier", {"pleural_effusion": 0.95, "pneumothorax": 0.05})).answer(q, thread_id="t")
    scores = {o.letter: o.score for o in sick.options}
    assert sick.letter == "A" and scores["C"] < 0.2
