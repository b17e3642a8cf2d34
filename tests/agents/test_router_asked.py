"""A finding is named only when the words ask about it: not by a structure listed in a request for the whole
read, not by a general question about a disease, not by a device that only dates the question; and turns that
continue the previous question take its finding without asking back."""

from __future__ import annotations

import pytest

from agents.routing.mentions import extract_findings, is_survey
from agents.routing.rules import route
from agents.routing.semantic import default_classifier, route_semantic
from agents.routing.turn import route_turn
from knowledge.lexicon import LexiconError, load_lexicon


@pytest.fixture(scope="module")
def semantic():
    if default_classifier() is None:  # the bundled MiniLM ships with the package
        pytest.fail("the semantic router's embedder did not load")
    return route_semantic


def _turn(router, text: str, previous: list[str] | None = None):
    return route_turn(router, text, has_image=True, has_history=previous is not None,
                      previous_findings=previous or [])


# A systematic read lists structures; none of them is the thing asked about.
SURVEYS = [
    "Go through the film systematically: lines, lungs, pleura, heart, bones",
    "comment on tubes, lungs, heart and diaphragm",
    "Check lines and tubes, lungs, pleura, heart, bones - full read",
    "review airway, lungs, mediastinum, bones",
    "describe the heart, the lungs and the pleural spaces",
    "heart and lungs ok?",
    "everything fine with the heart and lungs?",
]


@pytest.mark.parametrize("text", SURVEYS)
def test_a_survey_of_structures_is_a_whole_read_naming_no_finding(semantic, text: str) -> None:
    assert is_survey(text)
    for router in (route, semantic):
        r = _turn(router, text)
        assert (r.intent, r.finding, r.findings, r.clarify) == ("report", None, [], None), (router, r.reason)


@pytest.mark.parametrize(("text", "finding"), [
    ("Please report, including the mediastinum and the costophrenic angles", None),
    ("full report, comment on heart size", None),
    ("write the report, look at the cardiac silhouette too", None),
    ("ICU AM film, full read w/ lines", None),  # a generic device word in a request for the whole read
    # a thing named by its own words still counts in a report request
    ("Write a report, pay attention to the ETT position", "support_devices"),
    ("report please, is there an effusion?", "pleural_effusion"),
    ("any prior reports with a similar heart?", None),
    ("similar reports with a big heart", "cardiomegaly"),
])
def test_a_report_request_names_no_finding_by_a_structure_alone(text: str, finding: str | None) -> None:
    r = route(text, has_image=True)
    assert r.intent in ("report", "similar_cases") and r.finding == finding, r.reason


@pytest.mark.parametrize(("text", "finding"), [
    ("is the heart ok?", "cardiomegaly"),  # asked about alone, a structure still names its finding
    ("any fluid?", "pleural_effusion"),
    ("check the lines", "support_devices"),
    ("is the heart big? lungs clear?", "cardiomegaly"),
    ("Tube in trachea is in good position?", "support_devices"),  # a place, not a list
    ("check the lines and tubes", "support_devices"),
])
def test_a_structure_asked_about_alone_names_its_finding(text: str, finding: str) -> None:
    assert not is_survey(text)
    assert extract_findings(text)[0] == finding


@pytest.mark.parametrize(("text", "named"), [
    ("What causes pneumothorax in general?", "pneumothorax"),
    ("Define emphysema", "emphysema"),
    ("Please tell me what is atelectasis", "atelectasis"),
    ("what's the difference between consolidation and atelectasis?", "consolidation"),
])
def test_a_general_question_is_chat_about_no_finding_of_the_image(text: str, named: str) -> None:
    r = route(text, has_image=True)
    assert (r.intent, r.finding) == ("chat", None), r.reason
    assert named in r.findings  # the words named it: kept for the reply, asked about on no image


@pytest.mark.parametrize(("text", "finding"), [
    ("s/p CVC - ptx?", "pneumothorax"),  # the line only dates the question
    ("post line placement - any pneumothorax?", "pneumothorax"),
    ("Effusion? Also check for consolidation", "pleural_effusion"),  # a clause of its own, asked first
    ("post intubation: ETT position and any ptx?", "support_devices"),
    ("chf vs pna?", "edema"),  # both named in one question: the first
    ("Is it having water in the pleura?", "pleural_effusion"),
    ("There is liquid in the pleura?", "pleural_effusion"),
    ("nodule in RUL? any mass elsewhere?", "nodule"),
    ("CVC - ptx?", "pneumothorax"),
    ("fluid overloaded?", "edema"),
    ("Are any ribs broken?", "fracture"),
    ("fibrotic changes?", "fibrosis"),
    ("Is there any air in the pleural space?", "pneumothorax"),
    ("overload?", "edema"),
    ("Could the round density in the left lung be a nodule?", "nodule"),
    ("CAP?", "pneumonia"),
    ("RUL nod?", "nodule"),
    ("opac R base?", "lung_opacity"),
    ("wide med?", "enlarged_cardiomediastinum"),
    ("There are water in lungs base?", "pleural_effusion"),
    ("Does this look infected?", "pneumonia"),
    ("Any broken bones?", "fracture"),
    ("Are the lungs wet?", "edema"),
    ("Is the lung partially collapsed at the base?", "atelectasis"),
    ("Any bone is broke?", "fracture"),
    ("nodul in right lung?", "nodule"),  # a five-letter misspelling
    ("HH?", "hernia"),
    ("Is there a loculated pleural collection?", "pleural_effusion"),
    ("We just put in a chest drain, has the pneumothorax resolved?", "pneumothorax"),  # context, then the question
    ("Is there a pneumothorax, and where is the chest tube?", "pneumothorax"),  # two questions: the first
    ("Could this be fluid in the lungs from heart failure?", "edema"),
    ("Could the left lower lobe be collapsed?", "atelectasis"),
])
def test_the_finding_asked_about_comes_first(text: str, finding: str) -> None:
    assert extract_findings(text)[0] == finding


@pytest.mark.parametrize(("text", "intent"), [
    ("What's your overall impression of this chest film?", "report"),
    ("portable AP, read pls", "report"),
    ("What is this based on?", "explain"),
    ("how do you measure the cardiothoracic ratio?", "chat"),
    ("how did you measure the cardiothoracic ratio?", "explain"),
    ("Please explain me what means atelectasis", "chat"),
    ("What is the treatment for a tension pneumothorax?", "chat"),
    ("simlar cases?", "similar_cases"),
    ("wher is the consolidation", "locate"),
    ("full reprot pls", "report"),
    ("Why does pneumonia cause consolidation?", "chat"),
    ("Pneumonia? If so, which lobe?", "finding_question"),  # the first question asks whether
    ("Where is the nodule and how big is it?", "locate"),
    ("Show your work", "explain"),
    ("What did the retrieval find?", "explain"),
    ("Show me reference images like this", "similar_cases"),
    ("Other patients with this appearance?", "similar_cases"),
    ("more like this", "similar_cases"),
    ("AP port read", "report"),
    ("Which parts of the report are you unsure of?", "explain"),
    ("Which part of the lung is consolidated?", "locate"),
    ("were is the pneumonia", "locate"),
    ("Is that certain?", "explain"),
    ("I'll discuss with my attending, thanks", "chat"),
    ("any acute findings? thanks", "report"),
    ("Why do effusions blunt the costophrenic angle?", "chat"),
    ("why do you think there is an effusion?", "explain"),
    ("What are your thoughts on this film?", "report"),
    ("Please explain me this x-ray", "report"),
    ("From where you know this?", "explain"),
    ("Which rib is fractured?", "locate"),
    ("ptx - side?", "locate"),
])
def test_intent_cues(text: str, intent: str) -> None:
    assert route(text, has_image=True, has_history=True).intent == intent


@pytest.mark.parametrize(("text", "previous", "intent"), [
    ("show me", ["pneumothorax"], "locate"),
    ("what about the other side?", ["pleural_effusion"], "finding_question"),
    ("how extensive?", ["atelectasis"], "finding_question"),
    ("how big is it?", ["pneumothorax"], "finding_question"),
    ("where exactly?", ["nodule"], "locate"),
    ("what size?", ["nodule"], "finding_question"),
    ("mild or severe?", ["edema"], "finding_question"),
    ("and now on the left?", ["pneumothorax"], "finding_question"),
    ("still there?", ["pneumothorax"], "finding_question"),
    ("how enlarged?", ["cardiomegaly"], "finding_question"),
    ("too deep?", ["support_devices"], "finding_question"),
    ("can you show me?", ["pleural_effusion"], "locate"),
    ("and the apex?", ["pneumothorax"], "finding_question"),
    ("is it calcified or not?", ["nodule"], "finding_question"),
    ("can you show it on the image?", ["pneumothorax"], "locate"),
])
def test_a_follow_up_takes_the_previous_finding_without_asking_back(semantic, text: str, previous: list[str],
                                                                      intent: str) -> None:
    r = _turn(semantic, text, previous)
    assert (r.intent, r.finding, r.clarify) == (intent, previous[0], None), r.reason


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("65M smoker, weight loss, any mass?", "finding_question", "mass"),
    ("ex-smoker with hemoptysis, tumour?", "finding_question", "mass"),
    ("MVA with chest trauma, widened mediastinum?", "finding_question", "enlarged_cardiomediastinum"),
    ("60F with cough and fever, please read the film", "report", None),
    ("What's the usual cause of a pneumothorax in tall young men?", "chat", None),
    ("What is the probability of a pneumothorax?", "finding_question", "pneumothorax"),
    ("Is the tip of the PICC in a good place?", "finding_question", "support_devices"),
    ("Is the NG tube where it should be?", "finding_question", "support_devices"),
    ("Is the chest normal?", "report", None),  # a question about the whole study: the whole read answers it
    ("Any abnormalities?", "report", None),
    ("Is there anything acute?", "report", None),
    ("What's the impression?", "report", None),
    ("Is this a normal x-ray?", "report", None),
    ("pna vs atx LLL?", "finding_question", "pneumonia"),
    ("fluid overload vs PNA", "finding_question", "edema"),
    ("Assess for pulmonary edema", "finding_question", "edema"),
    ("Evaluate for free air", "finding_question", None),
    ("assess L CPA", "finding_question", "pleural_effusion"),
    ("Comment on this film", "report", None),
    # sentences of context, then the question
    ("I am a GP and not very experienced with x-rays. Is the heart too big?", "finding_question", "cardiomegaly"),
    ("Good morning. This is a 70 year old with CHF. I'm mainly interested in whether the effusions have increased.",
     "finding_question", "pleural_effusion"),
    ("Hello, I'm a medical student. Could you walk me through the findings on this film?", "report", None),
    ("ptx? and check the chest tube", "finding_question", "pneumothorax"),
    ("apical ptx?", "finding_question", "pneumothorax"),  # a finding and where: no classifier needed
    ("PNA f/u?", "finding_question", "pneumonia"),
    ("How is pneumonia treated?", "chat", None),  # a few words too, but a general question
    ("edema - evidence?", "explain", "edema"),
])
def test_clinical_context_before_the_question_is_decided_by_the_question(semantic, text: str, intent: str,
                                                                         finding: str | None) -> None:
    r = _turn(semantic, text)
    assert (r.intent, r.finding, r.clarify) == (intent, finding, None), (r.reason, r.scores)


def test_asking_back_about_a_general_question_offers_the_named_finding_only_as_a_reading_of_the_image() -> None:
    from agents.routing.rules import Route
    from agents.routing.turn import ask_back

    r = Route(intent="chat", findings=["pneumothorax"],
              scores={"chat": 0.36, "finding_question": 0.34, "report": 0.2, "locate": 0.1})
    clarify = ask_back(r, "what about pneumothorax in general?")
    assert clarify is not None
    assert [(x.intent, x.finding) for x in clarify.readings] == [("chat", None), ("finding_question", "pneumothorax")]


@pytest.mark.parametrize(("text", "finding"), [
    ("any similar cases with that?", "pleural_effusion"),
    ("find reports showing the same", "pleural_effusion"),
    ("find similar cases", None),
    ("similar cases like this one", None),
])
def test_similar_cases_with_a_back_reference_take_the_previous_finding(text: str, finding: str | None) -> None:
    r = _turn(route, text, ["pleural_effusion"])
    assert (r.intent, r.finding) == ("similar_cases", finding), r.reason


@pytest.mark.parametrize("text", ["subQ emphysema?", "any sub-q emphysema?"])
def test_air_under_the_skin_is_no_emphysema_of_the_lungs(text: str) -> None:
    assert extract_findings(text) == []


@pytest.mark.parametrize("word", ["notes", "nodes", "model", "media", "lungs", "doing", "sides", "noble"])
def test_a_real_five_letter_word_is_no_misspelt_finding(word: str) -> None:
    assert extract_findings(f"any {word} here?") == []


def test_the_router_table_reads_structures_and_survey_and_checks_their_patterns(tmp_path) -> None:
    from knowledge.lexicon import DEFAULT_PATH

    words = load_lexicon().router
    assert "heart" in words.structures and "bones?" in words.survey
    text = DEFAULT_PATH.read_text(encoding="utf-8").replace("survey = [", "survey = [\n    'ribs(',", 1)
    bad = tmp_path / "lexicon.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(LexiconError, match=r"ribs\("):
        load_lexicon(bad)
