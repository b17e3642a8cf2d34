"""Which finding the words name, id by id: the synonyms, signs, abbreviations and slips that reports and clinicians
use map onto the vocabulary; a lesion at a bone or the chest wall is the other lesion; what no id names stays the
user's words, asked as a finding question; the rules decide these turns without the classifier."""

from __future__ import annotations

import pytest
from rules_router import RULES_ONLY as _ROUTER

from agents.routing.mentions import extract_findings, find_regions
from agents.routing.semantic import route_semantic
from agents.routing.turn import route_turn


@pytest.mark.parametrize(("text", "finding"), [
    ("mediastinal width ok?", "enlarged_cardiomediastinum"),
    ("groundglass?", "lung_opacity"),
    ("metastases?", "lung_lesion"),
    ("cannonball mets?", "lung_lesion"),
    ("Is there a leison in the left lung?", "lung_lesion"),
    ("micronodules?", "nodule"),
    ("miliary pattern?", "nodule"),
    ("upper lobe diversion?", "edema"),
    ("pulmonary venous hypertension?", "edema"),
    ("APO?", "edema"),
    ("LVF?", "edema"),
    ("congestive cardiac failure?", "edema"),
    ("peribronchial cuffing?", "edema"),
    ("kerly lines?", "edema"),
    ("engorged vessels?", "edema"),
    ("Are the lung fields edematous today?", "edema"),
    ("edma in both lungs?", "edema"),
    ("bats wing?", "edema"),
    ("loss of volume in the left lower lobe?", "atelectasis"),
    ("collapsed lobe?", "atelectasis"),
    ("sail sign?", "atelectasis"),
    ("LRTI?", "pneumonia"),
    ("any infective change?", "pneumonia"),
    ("covid pattern?", "pneumonia"),
    ("pnx?", "pneumothorax"),
    ("Is the lung fully expanded?", "pneumothorax"),
    ("absent lung markings at the apex?", "pneumothorax"),
    ("haemothorax?", "pleural_effusion"),
    ("chylothorax?", "pleural_effusion"),
    ("Is there water around the lung, in the pleura?", "pleural_effusion"),
    ("pleural thickenning?", "pleural_thickening"),
    ("thickening of the pleura?", "pleural_thickening"),
    ("pleural rind?", "pleural_thickening"),
    ("and the pleura, is it thickened?", "pleural_thickening"),
    ("pleural scarring?", "pleural_other"),
    ("plueral plauqes, bilateral?", "pleural_other"),
    ("plaques on the diaphragmatic pleura?", "pleural_other"),
    ("barrel chest?", "emphysema"),
    ("overinflation?", "emphysema"),
    ("hyperlucent lungs?", "emphysema"),
    ("air trapping?", "emphysema"),
    ("herniation?", "hernia"),
    ("stomach in the chest?", "hernia"),
    ("rib frac?", "fracture"),
    ("flail chest?", "fracture"),
    ("ICC position?", "support_devices"),
    ("vascath?", "support_devices"),
    ("IVC filter?", "support_devices"),
    ("temporary pacing wire?", "support_devices"),
    ("intra-aortic balloon pump?", "support_devices"),
    ("any lead fracture", "support_devices"),
    ("aortic aneurism?", "aortic_enlargement"),
    ("aortic enlargment?", "aortic_enlargement"),
    ("dilated descending thoracic aorta on this PA?", "aortic_enlargement"),
    ("The aorta look bigger than normal?", "aortic_enlargement"),
    ("calcified hilar nodes?", "calcification"),
    ("any calcified foci in the right lung?", "calcification"),
    ("atherosclerotic aorta?", "calcification"),
    ("honeycombing?", "interstitial_lung_disease"),
    ("UIP pattern?", "interstitial_lung_disease"),
    ("reticulation?", "interstitial_lung_disease"),
    ("intersitial lung disease?", "interstitial_lung_disease"),
])
def test_the_words_for_each_finding_name_it(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize("text", [
    "any bone lesion?", "lytic lesion in the right 5th rib?", "sclerotic lesion in the humeral head?",
    "bone lesoin in the scapula?", "osteolytic lesion?", "bone mets?", "chest wall mass?",
])
def test_a_lesion_at_a_bone_or_the_chest_wall_is_the_other_lesion(text: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", "other_lesion", None)


def test_a_lesion_in_the_bone_of_a_named_place_is_the_other_lesion() -> None:
    assert extract_findings("There is some lesion in the bone of the shoulder?") == ["other_lesion"]


@pytest.mark.parametrize("text", ["Any liver mass?", "Is there a thyroid nodule?", "Any breast mass?"])
def test_a_lesion_of_an_organ_outside_the_chest_is_still_no_finding(text: str) -> None:
    assert extract_findings(text) == []


@pytest.mark.parametrize(("text", "phrase"), [
    ("kyphosis?", "kyphosis"),
    ("pneumoperitoneum post lap?", "pneumoperitoneum"),
    ("tracheal deviation to the right?", "tracheal deviation"),
    ("hilar lymphadenopathy?", "hilar lymphadenopathy"),
    ("cholecystectomy clips?", "cholecystectomy clips"),
    ("dextrocardia?", "dextrocardia"),
    ("traction bronchiectasis?", "traction bronchiectasis"),
    ("pericardial effusion?", "pericardial effusion"),
    ("pericardial calcification?", "pericardial calcification"),
])
def test_what_no_id_names_is_a_finding_question_in_the_users_words(text: str, phrase: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.findings, r.phrase, r.clarify) == ("finding_question", None, [], phrase, None)


@pytest.mark.parametrize(("text", "finding"), [
    ("hernai?", "hernia"),
    ("noduel?", "nodule"),
    ("nodlue?", "nodule"),
    ("Is there a leison?", "lung_lesion"),
])
def test_two_swapped_letters_are_one_slip(text: str, finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None)


@pytest.mark.parametrize(("text", "finding"), [
    ("linear atelectasis?", "atelectasis"),
    ("compressive atelectasis?", "atelectasis"),
    ("changes of COPD on this film?", "emphysema"),
    ("bullous changes at the apices?", "emphysema"),
    ("fibrotic changes in the upper lobes?", "fibrosis"),
    ("atelectsis in the left lower zone?", "atelectasis"),
    ("subpleural honeycombing in the lower zones?", "interstitial_lung_disease"),
    ("widend mediastinum on the trauma film?", "enlarged_cardiomediastinum"),
    ("enlarged cardiomediastinal silhouette on this supine film?", "enlarged_cardiomediastinum"),
    ("widened mediastinum? MVC, high speed", "enlarged_cardiomediastinum"),
    ("pleural plaques? ex-shipyard worker", "pleural_other"),
    ("Fluid overload on the lungs? dialysis pt, missed a session", "edema"),
    ("fluid in the fissure?", "pleural_effusion"),
    ("coarse reticular markings in both lower zones?", "interstitial_lung_disease"),
])
def test_a_terse_question_with_what_the_finding_is_like_where_or_its_context_is_decided_by_the_rules(
        text: str, finding: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None)


@pytest.mark.parametrize(("text", "previous", "intent"), [
    ("put a box around it", "nodule", "locate"),
    ("draw an outline around it", "atelectasis", "locate"),
    ("highlight that area for me", "lung_opacity", "locate"),
    ("show me where", "pneumonia", "locate"),
    ("Please mark all", "nodule", "locate"),
    ("which ribs? show me", "fracture", "locate"),
    ("upper or lower zones mostly? show me", "interstitial_lung_disease", "locate"),
    ("In which part of lung?", "atelectasis", "locate"),
    ("whre on the flim is it", "pneumonia", "locate"),
    ("any others?", "mass", "finding_question"),
    ("how big is it, small moderate large", "pleural_effusion", "finding_question"),
])
def test_a_follow_up_naming_nothing_is_about_the_previous_finding(text: str, previous: str, intent: str) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True, previous_findings=[previous])
    assert (r.intent, r.finding, r.clarify) == (intent, previous, None), r.reason


@pytest.mark.parametrize(("text", "region"), [
    ("zoom on the R CP angle", "right_costophrenic_angle"),
    ("zoom on the R costophrenic angle", "right_costophrenic_angle"),
    ("show me the lt hemidiaphragm", "left_hemidiaphragm"),
])
def test_a_region_may_shorten_its_side(text: str, region: str) -> None:
    assert [m.finding for m in find_regions(text)] == [region]
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.region) == ("locate", None, region)


@pytest.mark.parametrize("text", [
    "How common is pneumonia in elderly patients?",
    "How do I read a chest x-ray systematically?",
    "what are the typical CXR signs of heart failure?",
])
def test_general_questions_stay_chat(text: str) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True)
    assert (r.intent, r.finding, r.clarify) == ("chat", None, None), r.reason


@pytest.mark.parametrize("text", ["ok uploaded one, go through it systematically", "put a marker on the ET tube tip"])
def test_a_systematic_read_and_a_marker_are_what_they_ask(text: str) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True)
    expected = ("report", None) if "systematically" in text else ("locate", "support_devices")
    assert (r.intent, r.finding) == expected and r.clarify is None, r.reason


@pytest.mark.parametrize(("text", "first"), [
    ("Is that opacity consolidation or atelectasis?", "consolidation"),
    ("Is the opacity in the RLL consolidation?", "consolidation"),
    ("Is the consolidation due to pneumonia?", "pneumonia"),
])
def test_a_generic_finding_asked_to_be_a_specific_one_asks_about_the_specific(text: str, first: str) -> None:
    assert extract_findings(text)[0] == first


@pytest.mark.parametrize(("text", "first"), [
    ("any opacity or consolidation?", "lung_opacity"),
    ("is there an opacity with consolidation at the left base?", "lung_opacity"),
])
def test_a_generic_finding_listed_with_a_specific_one_stays_first(text: str, first: str) -> None:
    assert extract_findings(text)[0] == first


@pytest.mark.parametrize(("text", "finding"), [
    ("Are the pulmonary vessels congested?", "edema"),
    ("apical lucency without lung markings?", "pneumothorax"),
    ("aneursym?", "aortic_enlargement"),
])
def test_signs_and_slips_name_their_finding(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("pls reed teh film", "report", None),
    ("ani pneumonia", "finding_question", "pneumonia"),
    ("is the hart enlarged?", "finding_question", "cardiomegaly"),
    ("nodule loc?", "locate", "nodule"),
    ("ETT tip loc", "locate", "support_devices"),
    ("loc of effusion?", "locate", "pleural_effusion"),
    ("sim cases pls", "similar_cases", None),
    ("knn reports pls", "similar_cases", None),
])
def test_slips_and_shorthand_of_the_request_itself(text: str, intent: str, finding: str | None) -> None:
    r = route_turn(route_semantic, text, has_image=True, has_history=True)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), r.reason


def test_loss_of_consciousness_in_a_history_is_no_request_to_locate() -> None:
    r = route_turn(_ROUTER, "fell down stairs, +LOC, rib fx?", has_image=True)
    assert (r.intent, r.finding) == ("finding_question", "fracture")


@pytest.mark.parametrize(("text", "finding"), [
    ("The lungs have water?", "edema"),
    ("Is there a white patch on the right lung?", "lung_opacity"),
    ("what is this white area on left side?", "lung_opacity"),
    ("Is there a spot on the lung?", "lung_lesion"),
    ("Is the aorta too wide?", "aortic_enlargement"),
    ("Is the stomach pushing up into the chest?", "hernia"),
    ("Is there calcium in the aorta?", "calcification"),
    ("Is the lining of the lung thick?", "pleural_thickening"),
])
def test_lay_words_name_the_finding(text: str, finding: str) -> None:
    r = route_turn(route_semantic, text, has_image=True)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None), r.reason


@pytest.mark.parametrize(("text", "intent"), [
    ("ok then, is this a normal chest x-ray?", "report"),
    ("ok so, any pneumothorax?", "finding_question"),
    ("ok then, thanks", "chat"),
])
def test_a_greeting_with_a_filler_before_a_question_is_the_question(text: str, intent: str) -> None:
    r = route_turn(_ROUTER, text, has_image=True, has_history=True)
    assert (r.intent, r.clarify) == (intent, None), r.reason


@pytest.mark.parametrize("text", ["Is there air between the lung and the chest wall?", "lung not reaching the chest wall?"])
def test_air_beside_the_lung_is_a_pneumothorax(text: str) -> None:
    assert extract_findings(text) == ["pneumothorax"]


class _SaysChat:
    """A classifier sure that every turn is chat."""

    def scores(self, text: str) -> dict[str, float]:
        return {"chat": 0.9, "finding_question": 0.05, "report": 0.05}


@pytest.mark.parametrize(("text", "intent"), [
    ("Is the heart actually big or is that just AP magnification?", "finding_question"),
    ("Is the heart size normal for an AP film?", "finding_question"),
    ("Could a chest x-ray miss pneumonia early on?", "chat"),
])
def test_a_yes_no_question_about_this_patients_named_finding_is_never_made_general(text: str, intent: str) -> None:
    r = route_semantic(text, has_image=True, classifier=_SaysChat)
    assert r.intent == intent, r.reason


@pytest.mark.parametrize("text", ["pleural thikening?", "pleural thckening on the left?", "pleural tickening?"])
def test_a_misspelt_pleural_thickening_is_still_one(text: str) -> None:
    assert extract_findings(text) == ["pleural_thickening"]
