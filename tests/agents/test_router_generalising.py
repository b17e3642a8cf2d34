"""Classes of phrasing the router reads by general rules: the first finding of a multi-part question, a finding named
only as the occasion, words and slips per finding, follow-ups that offer two readings, more ways to ask for a box,
a whole read or an explanation, and a yes/no question about this patient's named finding decided without the
classifier. Each row failed on the router before these rules (the guards apart)."""

from __future__ import annotations

import pytest
from rules_router import RULES_ONLY as _ROUTER

from agents.routing.mentions import _clean, extract_findings
from agents.routing.semantic import route_semantic
from agents.routing.turn import route_turn


@pytest.mark.parametrize(("text", "finding"), [
    ("haert enlargd?", "cardiomegaly"),
    ("hert big?", "cardiomegaly"),
    ("is the left base hazier today?", "lung_opacity"),
    ("some haze at the right base?", "lung_opacity"),
    ("pulmonary edeema?", "edema"),
    ("is the right lower lobe consoldated?", "consolidation"),
    ("is the right lung losing volume?", "atelectasis"),
    ("water pooling beneath the lung?", "pleural_effusion"),
    ("stomach through the hiatus?", "hernia"),
    ("brokn ribs?", "fracture"),
    ("any calcs?", "calcification"),
    ("calcified plaque at the aortic arch?", "calcification"),
    ("ectatic desc aorta?", "aortic_enlargement"),
    ("dilated asc aorta?", "aortic_enlargement"),
    ("emfysema?", "emphysema"),
])
def test_words_and_slips_name_their_finding(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


def test_the_new_rules_do_not_over_reach() -> None:
    """Guards, not new behaviour: plaques on the pleura stay pleural; a question whether our call is reliable stays
    an explanation; "left or right?" after a finding question stays a finding question, not a request to locate."""
    assert extract_findings("plaques on the diaphragmatic pleura?")[:1] == ["pleural_other"]
    r = route_turn(route_semantic, "Is the effusion call reliable?", has_image=True, has_history=True)
    assert (r.intent, r.finding) == ("explain", "pleural_effusion"), r.reason
    r = route_turn(route_semantic, "left or right?", has_image=True, has_history=True,
                   previous_findings=["consolidation"])
    assert (r.intent, r.finding) == ("finding_question", "consolidation"), r.reason


@pytest.mark.parametrize(("text", "first"), [
    # a finding opening the turn, joined to a question after it, is the first part of a multi-part question
    ("Consolidation at the left base, and is the NG tube in the stomach?", "consolidation"),
    ("Effusion after the drain, or any consolidation?", "pleural_effusion"),
    # the subject of "is the ..." two words before it, a device's depth, what something "still has"
    ("Is the right apical nodule larger, and is there an effusion?", "nodule"),
    ("Tell me the NG tube depth and whether there is any effusion", "support_devices"),
    ("Does the side of the old fracture still show pleural thickening?", "pleural_thickening"),
])
def test_the_first_finding_a_multi_part_question_asks_about_comes_first(text: str, first: str) -> None:
    assert extract_findings(text)[:1] == [first]


@pytest.mark.parametrize(("text", "previous"), [
    ("any change since the chest tube went in?", "pneumothorax"),
    ("worse since the ETT was placed?", "atelectasis"),
])
def test_a_device_named_only_as_the_occasion_leaves_the_previous_finding_asked(text: str, previous: str) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True, previous_findings=[previous])
    assert (r.intent, r.finding, r.clarify) == ("finding_question", previous, None), r.reason


@pytest.mark.parametrize(("text", "previous"), [
    ("well or ill defined?", "nodule"),
    ("more or less than last week?", "edema"),
    ("smooth or lobulated?", "mass"),
    ("unilateral or bilateral?", "consolidation"),
])
def test_a_follow_up_offering_two_readings_asks_about_the_previous_finding(text: str, previous: str) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True, previous_findings=[previous])
    assert (r.intent, r.finding, r.clarify) == ("finding_question", previous, None), r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("put a square around the nodule", "nodule"),
    ("Shade the consolidation", "consolidation"),
    ("colour in the effusion please", "pleural_effusion"),
    ("Is the pneumothorax on the right or the left side?", "pneumothorax"),
])
def test_more_ways_to_ask_for_a_box_locate(text: str, finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("locate", finding, None), r.reason


def test_a_frame_round_a_structure_locates_the_region() -> None:
    r = route_turn(_ROUTER, "place a frame on the left hemidiaphragm", has_image=True)
    assert (r.intent, r.finding, r.region) == ("locate", None, "left_hemidiaphragm"), r.reason


def test_highlighting_it_on_the_picture_is_the_previous_finding() -> None:
    r = route_turn(route_semantic, "mark it on the picture", has_image=True, has_history=True,
                   previous_findings=["nodule"])
    assert (r.intent, r.finding) == ("locate", "nodule"), r.reason


def test_that_side_is_no_question_of_which_side() -> None:
    r = route_turn(_ROUTER, "Is the right lung losing volume, pulling the trachea to that side?", has_image=True)
    assert (r.intent, r.finding) == ("finding_question", "atelectasis"), r.reason


@pytest.mark.parametrize("text", [
    "Go through this x-ray for me", "please go over the film", "Dictate it as a consultant would, impression last",
    "NAD?", "CXR NAD?", "is it WNL?",
])
def test_orders_to_read_the_study_and_normal_in_shorthand_are_a_whole_read(text: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("report", None, None), r.reason


def test_nad_is_the_abbreviation_only_in_capitals_or_ending_the_turn() -> None:
    assert (_clean("NAD?"), _clean("cxr nad"), _clean("ptx nad effusion?")) == ("nad?", "cxr nad", "ptx and effusion?")


@pytest.mark.parametrize("text", ["Pt NAD, any ptx?", "ptx nad effusion?", "Pls reed teh film", "cxr nad"])
def test_cleaning_twice_is_cleaning_once(text: str) -> None:
    """Every reader of a turn cleans what it is given: the capitals that keep "NAD" are gone after one pass."""
    once = _clean(text)
    assert _clean(once) == once
    assert _clean("Pt NAD, any ptx?") == "pt nad, any ptx?"


@pytest.mark.parametrize(("previous", "intent", "finding"), [
    ([], "report", None),
    (["pleural_effusion"], "finding_question", "pleural_effusion"),
])
def test_the_same_for_another_film_asks_what_the_previous_turn_asked(previous: list[str], intent: str,
                                                                     finding: str | None) -> None:
    r = route_turn(_ROUTER, "now do the same for this film", has_image=True, has_history=True,
                   previous_findings=previous)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), r.reason


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("how confidnet are you", "explain", None),
    ("src?", "explain", None),
    ("where did you get the idea of an effusion?", "explain", "pleural_effusion"),
    ("where did you take that conclusion from?", "explain", None),
    ("find simlar reprots with effusion", "similar_cases", "pleural_effusion"),
    ("pull up casses like this", "similar_cases", None),
    ("any reports mentioning kyphosis?", "similar_cases", None),
])
def test_explanations_and_similar_cases_in_more_words(text: str, intent: str, finding: str | None) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("Does the aortic knob look more prominent than on the trauma film?", "aortic_enlargement"),
    ("About the portable from this morning: has the left effusion grown?", "pleural_effusion"),
])
def test_a_yes_no_question_about_this_patients_named_finding_is_decided_by_the_rules(text: str, finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None), r.reason


@pytest.mark.parametrize(("text", "intent", "finding"), [
    # terse cues about our answer, once there is one
    ("basis?", "explain", None),
    ("conf?", "explain", None),
    ("y?", "explain", None),
    ("ptx - sure?", "explain", "pneumothorax"),
    ("expalin the effusion call", "explain", "pleural_effusion"),
    # a question, then a second one joined to it: the first asks whether
    ("Is there an effusion, and where is the drain?", "finding_question", "pleural_effusion"),
    ("demarcate the consolidation", "locate", "consolidation"),
    ("enlarged cardiac sil?", "finding_question", "cardiomegaly"),
])
def test_terse_cues_joined_questions_and_more_request_words(text: str, intent: str, finding: str | None) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), r.reason


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("indicate the nodule on the film", "locate", "nodule"),
    ("pull up pneumothorax cases for the students", "similar_cases", "pneumothorax"),
])
def test_more_words_for_locating_and_searching_the_archive_are_decided_by_the_rules(text: str, intent: str,
                                                                                    finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), r.reason


def test_indicating_whether_is_no_request_to_locate() -> None:
    """A guard: "indicate whether" asks whether, not where."""
    r = route_turn(route_semantic, "indicate whether there is a pneumothorax", has_image=True)
    assert (r.intent, r.finding) == ("finding_question", "pneumothorax"), r.reason


@pytest.mark.parametrize("text", [
    "is it all within normal limits?",
    "could I sign it off as normal?",
    "post-op film, 'no acute findings' ok to sign?",
    "The film is normal, right?",
])
def test_whether_the_whole_study_is_normal_is_a_whole_read_decided_by_the_rules(text: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("report", None, None), r.reason


def test_compared_to_the_prior_misspelt_after_a_finding_question_is_about_that_finding() -> None:
    r = route_turn(route_semantic, "comapred to the previous?", has_image=True, has_history=True,
                   previous_findings=["edema"])
    assert (r.intent, r.finding, r.clarify, r.asks_comparison) == ("finding_question", "edema", None, True), r.reason


@pytest.mark.parametrize("text", [
    "silhouette sign at the left heart border?", "is the right heart border obscured?", "loss of the left heart border?",
])
def test_a_heart_border_lost_is_an_opacity_beside_it_not_the_hearts_size(text: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", "lung_opacity", None), r.reason


def test_what_a_named_sign_is_stays_a_general_question() -> None:
    """A guard: the sign's name defined, not looked for on this film."""
    r = route_turn(route_semantic, "What's the silhouette sign?", has_image=True)
    assert (r.intent, r.clarify) == ("chat", None), r.reason


@pytest.mark.parametrize("text", ["is the patient intubated?", "has she been extubated?"])
def test_intubated_asks_about_the_tube(text: str) -> None:
    r = route_turn(route_semantic, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", "support_devices", None), r.reason


def test_the_reasons_asked_after_an_answer_are_an_explanation() -> None:
    r = route_turn(route_semantic, "give me your reasons", has_image=True, has_history=True)
    assert (r.intent, r.clarify) == ("explain", None), r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("something growing in the lung?", "lung_lesion"),
    ("any growth in the right lung?", "lung_lesion"),
    ("is his chest filled with water?", "pleural_effusion"),
])
def test_more_lay_words_name_the_finding(text: str, finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None), r.reason


def test_the_growth_of_a_named_finding_is_that_finding() -> None:
    """A guard: "growth" is a lesion only as a thing, not as the growth of what is named."""
    assert extract_findings("any growth of the effusion?")[:1] == ["pleural_effusion"]


def test_and_now_asks_the_previous_question_of_this_film() -> None:
    r = route_turn(route_semantic, "and now?", has_image=True, has_history=True, previous_findings=["pneumothorax"])
    assert (r.intent, r.finding, r.clarify) == ("finding_question", "pneumothorax", None), r.reason


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("consolidation on the rigt side?", "finding_question", "consolidation"),
    ("whay do you say so?", "explain", None),
    ("Look for a pneumothorax and tell me where the drain tip is", "finding_question", "pneumothorax"),
    ("is there a nodule and where is it?", "finding_question", "nodule"),
    ("He has a cough, the film show consolidation?", "finding_question", "consolidation"),
])
def test_slips_joined_questions_and_what_the_film_shows_are_decided_by_the_rules(text: str, intent: str,
                                                                                finding: str | None) -> None:
    r = route_turn(_ROUTER, text, has_image=True, has_history=True)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), r.reason


@pytest.mark.parametrize(("text", "finding"), [("cxr for ?pna", "pneumonia"), ("film for ?ptx post line", "pneumothorax"),
                                               ("query effusion", "pleural_effusion")])
def test_the_clinicians_query_asks_about_the_finding(text: str, finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None), r.reason
