"""Bones, the aorta, the mediastinum and devices as clinicians type them, and orders to look at a named finding:
each is a finding question about the finding it names, decided by the rules without the embedding classifier."""

from __future__ import annotations

import pytest

from agents.routing.mentions import extract_findings
from agents.routing.rules import route
from agents.routing.semantic import route_semantic


class _NoClassifier:
    def scores(self, text: str) -> dict[str, float]:
        raise AssertionError(f"the classifier was consulted for {text!r}: the rules should decide this turn")


def _rules_only(text: str):
    return route_semantic(text, has_image=True, classifier=_NoClassifier)


@pytest.mark.parametrize(("text", "finding"), [
    ("# ribs?", "fracture"),  # the British shorthand for a fracture
    ("?# L clavicle", "fracture"),
    ("cracked rib after the fall?", "fracture"),
    ("broken collarbone?", "fracture"),
    ("is the sternum fractured?", "fracture"),
    ("any fxs?", "fracture"),
])
def test_fracture_shorthand_names_a_fracture(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize(("text", "finding"), [
    ("Does the aorta look aneurysmal?", "aortic_enlargement"),
    ("Is the aortic arch enlarged?", "aortic_enlargement"),
    ("prominent aortic knob?", "aortic_enlargement"),
    ("the descending aorta appears slightly tortuous", "aortic_enlargement"),
    ("assess the aorta for dilatation", "aortic_enlargement"),
    ("TAA?", "aortic_enlargement"),
    ("aortic root dilatation?", "aortic_enlargement"),
    ("calcified aortic knob?", "calcification"),  # calcified, not enlarged
])
def test_the_aorta_as_clinicians_describe_it(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize(("text", "findings"), [
    ("widening of the mediastinum?", ["enlarged_cardiomediastinum"]),
    ("the mediastinum appears widened", ["enlarged_cardiomediastinum"]),
    ("mediastinum seems broad", ["enlarged_cardiomediastinum"]),
    # a shifted mediastinum is outside the vocabulary: never read as a wide one
    ("Is the mediastinum shifted to the right?", []),
    ("shift of the mediastinum to the left?", []),
])
def test_the_mediastinum_wide_or_shifted(text: str, findings: list[str]) -> None:
    assert extract_findings(text) == findings


@pytest.mark.parametrize(("text", "first"), [
    ("trauma: rib fx, PTX, wide mediastinum?", "fracture"),  # a list of questions: the first named first
    ("ptx, effusion, consolidation?", "pneumothorax"),
    ("CHF, effusion?", "pleural_effusion"),  # two items: history, then the question
    ("hx of CHF, effusion?", "pleural_effusion"),
    ("COPD, smoker, nodule?", "nodule"),
])
def test_a_list_of_questions_asks_first_about_its_first_item(text: str, first: str) -> None:
    assert extract_findings(text)[0] == first


@pytest.mark.parametrize(("text", "finding"), [
    ("check the ETT", "support_devices"),
    ("check the NGT", "support_devices"),
    ("confirm the ETT position", "support_devices"),
    ("review the right IJ line", "support_devices"),
    ("eval for PTX", "pneumothorax"),
    ("assess heart size", "cardiomegaly"),
    ("look at the CP angles for fluid", "pleural_effusion"),
    ("please check for pneumothorax", "pneumothorax"),
    ("r/o rib fx", "fracture"),
    ("assess the aorta for dilatation", "aortic_enlargement"),
    # a finding asked with the occasion after it
    ("mediastinum widened after MVC?", "enlarged_cardiomediastinum"),
    ("ptx post chest tube removal?", "pneumothorax"),
    ("effusion following CABG?", "pleural_effusion"),
])
def test_an_order_to_look_at_a_named_finding_is_a_finding_question(text: str, finding: str) -> None:
    r = _rules_only(text)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None), r.reason


@pytest.mark.parametrize(("text", "intent"), [
    ("check lines, lungs, heart", "report"),  # a survey of structures: the whole read
    ("where's the line tip?", "locate"),
    ("show me the rib fracture", "locate"),
])
def test_an_order_that_is_a_read_or_a_place_stays_one(text: str, intent: str) -> None:
    r = route_semantic(text, has_image=True)
    assert r.intent == intent, r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("aorta looks big?", "aortic_enlargement"),
    ("large aortic knob?", "aortic_enlargement"),
    ("aortic knuckle calcified?", "calcification"),
    ("new R IJ - position + ptx?", "support_devices"),  # the device's position is asked first
    ("L IJ line ok?", "support_devices"),
])
def test_more_ways_to_name_the_aorta_and_a_jugular_line(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize(("text", "finding"), [
    ("superior mediastinal mass?", "mass"),  # where, as a terse question
    ("posterior rib fx?", "fracture"),
    ("bilat pl eff", "pleural_effusion"),  # the question mark left out
    ("check PICC tip location", "support_devices"),  # an order to check a position, not to show a place
    ("post line placement - any pneumothorax?", "pneumothorax"),  # the line only dates the question
])
def test_terse_and_ordered_questions_need_no_classifier(text: str, finding: str) -> None:
    r = _rules_only(text)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None), r.reason


@pytest.mark.parametrize("text", [
    "what are the signs of aortic dissection on CXR?",
    "What are the radiographic features of sarcoidosis?",
])
def test_how_a_disease_looks_in_general_is_chat(text: str) -> None:
    r = _rules_only(text)
    assert (r.intent, r.finding) == ("chat", None), r.reason


def test_signs_on_this_film_are_not_chat() -> None:
    r = route("what are the signs of the effusion on this film?", has_image=True)
    assert (r.intent, r.finding) == ("finding_question", "pleural_effusion"), r.reason


@pytest.mark.parametrize(("text", "intent"), [
    ("ok what do you make of this chest film", "report"),  # a greeting word before a request
    ("hello, can you read this film?", "report"),
    ("ok thanks", "chat"),
    ("great, bye", "chat"),
])
def test_a_greeting_before_a_request_is_the_request(text: str, intent: str) -> None:
    assert route(text, has_image=True).intent == intent


@pytest.mark.parametrize(("text", "finding"), [
    ("mass in the left hilum?", "mass"),  # a place said in words, not a request to show it
    ("effusion at the base?", "pleural_effusion"),
])
def test_a_finding_at_a_named_place_is_a_finding_question(text: str, finding: str) -> None:
    r = _rules_only(text)
    assert (r.intent, r.finding) == ("finding_question", finding), r.reason


def test_water_in_the_lungs_is_edema() -> None:
    assert extract_findings("I think there is water in lungs, true?") == ["edema"]


@pytest.mark.parametrize(("text", "intent"), [
    ("roughly what size?", "finding_question"),
    ("where abouts?", "locate"),
])
def test_a_follow_up_with_a_filler_word_continues_the_previous_question(text: str, intent: str) -> None:
    from agents.routing.turn import route_turn

    r = route_turn(route, text, has_image=True, has_history=True, previous_findings=["pneumothorax"])
    assert (r.intent, r.finding) == (intent, "pneumothorax"), r.reason


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("pnemothorax on the R side?", "finding_question", "pneumothorax"),  # a side said, not asked for
    ("ptx - side?", "locate", "pneumothorax"),
])
def test_a_side_named_in_shorthand_is_not_a_request_to_locate(text: str, intent: str, finding: str) -> None:
    r = route(text, has_image=True)
    assert (r.intent, r.finding) == (intent, finding), r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("how has the effusion changed since the last film?", "pleural_effusion"),
    ("new consolidation compared to prior?", "consolidation"),
])
def test_a_change_in_a_named_finding_is_a_finding_question(text: str, finding: str) -> None:
    r = _rules_only(text)
    assert (r.intent, r.finding) == ("finding_question", finding), r.reason


@pytest.mark.parametrize("text", ["PA and lat, pls read", "does this CXR look normal to you?"])
def test_a_plain_request_to_read_is_the_whole_read(text: str) -> None:
    r = _rules_only(text)
    assert (r.intent, r.finding) == ("report", None), r.reason


def test_highlight_it_please_continues_the_previous_finding() -> None:
    from agents.routing.turn import route_turn

    r = route_turn(route, "highlight it pls", has_image=True, has_history=True, previous_findings=["consolidation"])
    assert (r.intent, r.finding) == ("locate", "consolidation"), r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("right mainstem intubation?", "support_devices"),
    ("unfolding of the aorta?", "aortic_enlargement"),
    ("deep sulcus sign?", "pneumothorax"),
])
def test_signs_that_name_a_finding(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize("text", ["loculated or free-flowing?", "acute or old?"])
def test_a_quality_asked_alone_continues_the_previous_finding(text: str) -> None:
    from agents.routing.turn import route_turn

    r = route_turn(route, text, has_image=True, has_history=True, previous_findings=["pleural_effusion"])
    assert (r.intent, r.finding) == ("finding_question", "pleural_effusion"), r.reason
