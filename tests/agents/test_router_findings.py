"""Findings from the user's words: clinicians' shorthand maps onto the lexicon; what is named outside the
vocabulary (a generic word qualified by an organ or bone outside the chest, a named thing holding a finding's
words, a real word a letter from a finding's) stays the user's words, never the nearest disease; the reply
says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graph_scripted import ScriptedVLM, classifier
from rules_router import RULES_ONLY as _ROUTER

from agents.routing.mentions import extract_findings, fuzzy_readings, outside_spans
from agents.routing.turn import route_turn
from knowledge.lexicon import DEFAULT_PATH, LexiconError, load_lexicon


@pytest.mark.parametrize(("text", "finding"), [
    ("eff?", "pleural_effusion"),
    ("b/l effs?", "pleural_effusion"),
    ("any empyemas?", "pleural_effusion"),
    ("Are there septal lines suggesting interstitial edema?", "edema"),
    ("interlobular septal lines?", "edema"),
    ("bat wing pattern?", "edema"),
    ("pulmonary odema?", "edema"),
    ("Is the thoracic aorta dilated?", "aortic_enlargement"),
    ("aorta looks tortuous?", "aortic_enlargement"),
    ("any thoracic aortic aneurysm?", "aortic_enlargement"),
    ("is there a hydropneumothorax?", "pneumothorax"),
    ("r/o ptx", "pneumothorax"),
    ("CHF?", "edema"),
    ("ETT ok?", "support_devices"),
    ("costophrenic angles blunted?", "pleural_effusion"),
    ("Kerley B lines?", "edema"),
    ("hyperinflation?", "emphysema"),
    ("honeycombing at the bases?", "interstitial_lung_disease"),
    ("Are the diaphragms flat?", "emphysema"),
    ("Is the aortic knob calcified?", "calcification"),
    ("cephalisation?", "edema"),
    ("apical pleural cap?", "pleural_thickening"),
    ("asbestos plaques?", "pleural_other"),
    ("increased interstitial markings?", "interstitial_lung_disease"),
    ("reticulonodular pattern?", "interstitial_lung_disease"),
])
def test_shorthand_and_synonyms_map_onto_the_lexicon(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize(("text", "phrase"), [
    ("Any liver mass?", "liver mass"),
    ("Is there a liver lesion?", "liver lesion"),
    ("Is there a thyroid nodule?", "thyroid nodule"),
    ("Any breast mass?", "breast mass"),
    ("Any adrenal mass?", "adrenal mass"),
    ("Is there a nodule in the left breast?", "nodule in the left breast"),
    ("Is there an opacity in the stomach?", "opacity in the stomach"),
    ("Is there a soft tissue mass in the neck?", "soft tissue mass in the neck"),
    ("Is there a nipple shadow?", "nipple shadow"),
    ("Is there a pericardial effusion?", "pericardial effusion"),
    ("Is there subcutaneous emphysema?", "subcutaneous emphysema"),
    ("Is there an air-fluid level?", "air-fluid level"),
    ("Is there mediastinal shift?", "mediastinal shift"),
    ("Is there pneumomediastinum?", "pneumomediastinum"),
    ("Is there pneumonitis?", "pneumonitis"),
])
def test_words_outside_the_vocabulary_are_carried_as_written(text: str, phrase: str) -> None:
    """The route names no finding, carries the user's words, and does not ask back about a disease they are not."""
    assert extract_findings(text) == []
    r = route_turn(_ROUTER, text, has_image=True)
    assert (r.intent, r.finding, r.findings, r.phrase, r.clarify) == ("finding_question", None, [], phrase, None)


@pytest.mark.parametrize(("text", "finding"), [
    ("Is there a lung lesion?", "lung_lesion"),
    ("Is there a mass in the left lung?", "mass"),
    ("Any nodule in the right upper lobe?", "nodule"),
    ("Is there a hilar mass?", "mass"),
    ("Is there an opacity in the left lung?", "lung_opacity"),
    ("liver and lung masses?", "mass"),
    ("Is there a rib fracture?", "fracture"),
    ("Is there aortic calcification?", "calcification"),
    ("Is there a pericardial effusion or a pleural effusion?", "pleural_effusion"),
    ("Any retrocardiac opacity projecting over the spine?", "lung_opacity"),
])
def test_thoracic_findings_keep_their_name_beside_the_qualifier_guard(text: str, finding: str) -> None:
    assert extract_findings(text)[:1] == [finding]


@pytest.mark.parametrize(("text", "findings"), [
    ("what leads you to think that?", []),
    ("pacer leads ok?", ["support_devices"]),
    ("should we drain the effusion?", ["pleural_effusion"]),
    ("chest drain in place?", ["support_devices"]),
    ("Is the cardiac shadow enlarged?", ["cardiomegaly"]),
    ("Is there a visible pleural line?", ["pneumothorax"]),
    ("Is there mass effect on the trachea?", []),
    ("vertebral body collapse?", []),
    ("sternotomy scar?", []),
    ("rib fractures with atelectasis?", ["fracture", "atelectasis"]),
    ("Is there a double density behind the heart?", ["lung_opacity"]),
])
def test_words_that_only_look_like_a_finding(text: str, findings: list[str]) -> None:
    """A verb ("leads you", "drain the"), a thing named outside the vocabulary, or a finding's word used for
    another organ is no finding mention; a bone word beside a finding in another clause does not hide it."""
    assert extract_findings(text) == findings


@pytest.mark.parametrize(("text", "first"), [
    ("Is the heart enlarged, and are there Kerley B lines?", "cardiomegaly"),
    ("chest tube in place, residual ptx?", "pneumothorax"),
    ("post line placement - any pneumothorax?", "pneumothorax"),
])
def test_the_finding_asked_about_comes_first(text: str, first: str) -> None:
    assert extract_findings(text)[0] == first


def test_the_guard_spans_the_qualifier_and_the_generic_word() -> None:
    t = "are there hepatic masses in the liver?"
    (start, end), *_ = outside_spans(t)
    assert t[start:end] == "hepatic masses in the liver"


@pytest.mark.parametrize(("text", "finding"), [
    ("is there a pnuemothorax", "pneumothorax"),
    ("atelactasis at the bases?", "atelectasis"),
    ("any consolidaton", "consolidation"),
])
def test_misspellings_still_count(text: str, finding: str) -> None:
    assert extract_findings(text) == [finding]


@pytest.mark.parametrize("word", ["pneumonitis", "fibroids", "diffusion", "mediastinal", "inflation"])
def test_a_real_word_near_a_finding_is_no_misspelling_of_it(word: str) -> None:
    assert extract_findings(f"is there {word} here") == []
    assert fuzzy_readings(f"is there {word} here") == []


def test_the_reply_says_the_phrase_was_carried_as_the_users_words(make_graph, thread, cxr_image) -> None:
    g = make_graph(ScriptedVLM(), classifier({"pleural_effusion": 0.2}))
    out = g.invoke({"messages": [("user", "Is there a thyroid nodule?")], "image": str(cxr_image)}, thread())
    route, text = out["route"], out["messages"][-1].content
    assert (route.finding, route.phrase) == (None, "thyroid nodule")
    assert ("**Your words, no known finding:** 'thyroid nodule' names no finding in the tools' vocabulary, so it "
            "was asked as you wrote it; the VLM answered it in its own words below") in text
    assert "- VLM answer: Yes." in text
    assert "thyroid nodule" not in text.replace("'thyroid nodule'", "") and "Nodule" not in text
    assert "Uncertain" not in text


@pytest.mark.parametrize(("old", "new", "message"), [
    ("[router]\n", "[router]\nsynonyms = ['x']\n", "[router] unknown key(s) ['synonyms']"),
    ("generic = ['lung_lesion',", "generic = ['lung_thing',", "[router] generic names unknown finding id 'lung_thing'"),
    ("    'joint effusions?',\n", "    'joint (effusions?',\n", "[router] bad regex 'joint (effusions?'"),
])
def test_a_malformed_router_table_fails_naming_the_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "lexicon.toml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(LexiconError, match=r"lexicon\.toml:\d+: " + re.escape(message)):
        load_lexicon(bad)
