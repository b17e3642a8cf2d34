"""A whole turn's route (route_turn): clinicians' abbreviations onto the lexicon, words outside the vocabulary
carried as the user's words, follow-ups, side/aspect/comparison, and asking back when unsure, down to the
reply through graph.invoke."""

from __future__ import annotations

import pytest
from graph_scripted import ScriptedVLM

from agents.replying import clarify as words
from agents.routing import route_turn
from agents.routing.rules import Route, route
from agents.routing.semantic import route_semantic


class _Unsure:
    """An intent classifier that is never sure: 0.3 for report and for chat, 0.1 for the rest."""

    def scores(self, text: str) -> dict[str, float]:
        return {"report": 0.3, "chat": 0.3, "finding_question": 0.1, "locate": 0.1, "similar_cases": 0.1,
                "explain": 0.1}


def _semantic(clf=None):
    def router(text: str, *, has_image: bool, has_history: bool = False) -> Route:
        return route_semantic(text, has_image=has_image, has_history=has_history, classifier=lambda: clf)
    return router


def _turn(text: str, previous: tuple[str, ...] = (), router=route) -> Route:
    return route_turn(router, text, has_image=True, has_history=bool(previous), previous_findings=previous)


@pytest.mark.parametrize(("text", "finding"), [
    ("ptx?", "pneumothorax"), ("r/o PTX", "pneumothorax"), ("CHF?", "edema"), ("signs of chf", "edema"),
    ("ETT position ok?", "support_devices"), ("is the NGT in the stomach", "support_devices"),
    ("PICC tip?", "support_devices"), ("r/o pna", "pneumonia"), ("costophrenic angles sharp?", "pleural_effusion"),
    ("blunted CP angles?", "pleural_effusion"), ("hyperinflation?", "emphysema"), ("hyperinflated lungs", "emphysema"),
    ("flattened diaphragms?", "emphysema"), ("RLL consol?", "consolidation"),
])
def test_clinical_abbreviations_map_onto_the_lexicon(text, finding):
    r = _turn(text)
    assert (r.intent, r.finding, r.clarify) == ("finding_question", finding, None)


def test_rule_out_and_position_are_typed_aspects():
    assert _turn("r/o ptx").aspect == "rule_out"
    assert _turn("ETT position ok?").aspect == "position"
    r = _turn("is the right effusion bigger than before?")
    assert (r.side, r.aspect, r.asks_comparison) == ("right", "size", True)


@pytest.mark.parametrize(("text", "phrase"), [
    ("r/o free air", "free air"), ("is there free air under the diaphragm?", "free air under the diaphragm"),
    ("any pneumomediastinum?", "pneumomediastinum"), ("is there dextrocardia?", "dextrocardia"),
])
def test_words_outside_the_vocabulary_are_carried_as_written_never_mapped_to_a_disease(text, phrase):
    r = _turn(text, router=_semantic(_Unsure()))
    assert (r.intent, r.finding, r.findings, r.phrase) == ("finding_question", None, [], phrase)
    assert "out-of-vocabulary" in r.reason and r.clarify is None


def test_follow_ups_take_the_previous_turns_finding():
    assert (_turn("where?", ("pneumothorax",)).intent, _turn("where?", ("pneumothorax",)).finding) == \
        ("locate", "pneumothorax")
    r = _turn("and on the left?", ("pleural_effusion",))
    assert (r.intent, r.finding, r.side) == ("finding_question", "pleural_effusion", "left")
    r = _turn("how big is it", ("cardiomegaly",))
    assert (r.intent, r.finding, r.aspect) == ("finding_question", "cardiomegaly", "size")
    assert _turn("and on the left?").finding is None  # nothing before it: no finding invented
    assert _turn("any edema?", ("cardiomegaly",)).finding == "edema"  # a named finding wins


def test_route_dump_keeps_the_keys_the_graph_reads():
    d = _turn("where is the left effusion?").model_dump()
    assert {"intent", "finding", "findings", "phrase", "region", "needs_image", "reason", "side", "aspect",
            "asks_comparison", "clarify"} <= set(d)
    assert (d["intent"], d["finding"], d["side"]) == ("locate", "pleural_effusion", "left")
    assert Route.model_validate(d) == _turn("where is the left effusion?")


def test_an_unsure_intent_asks_back_with_the_two_likeliest_readings():
    r = route_turn(_semantic(_Unsure()), "hmm, the lungs", has_image=True)
    assert r.clarify is not None and r.clarify.about == "intent"
    assert [x.intent for x in r.clarify.readings] == [r.intent, "chat" if r.intent == "report" else "report"]
    # the rules' certain decisions never ask, whatever the classifier thinks
    for text in ("Write a report", "where is the nodule?", "find similar cases", "thanks"):
        assert route_turn(_semantic(_Unsure()), text, has_image=True).clarify is None, text


def test_a_misspelling_too_far_from_any_finding_asks_which_was_meant():
    r = _turn("is there an edemaa?", router=_semantic(None))
    assert r.clarify is not None and r.clarify.about == "finding"
    assert [(x.finding, x.phrase) for x in r.clarify.readings] == [("edema", None), (None, "edemaa")]
    assert _turn("is there a pnuemothorax?").finding == "pneumothorax"  # close enough: no question


@pytest.mark.parametrize("readings", [
    [{"intent": "report"}, {"intent": "finding_question", "finding": "pneumothorax"}],
    [{"intent": "locate", "finding": "nodule"}, {"intent": "similar_cases", "finding": "nodule"}],
    [{"intent": "explain"}, {"intent": "chat"}],
    [{"intent": "finding_question", "finding": "edema"}, {"intent": "finding_question", "phrase": "edemaa"}],
    [{"intent": "similar_cases"}, {"intent": "locate", "finding": "pleural_effusion"}],
])
def test_every_choice_routes_to_its_reading_without_asking_again(readings):
    clarify = {"readings": readings}
    for reading, choice in zip(readings, words.choices(clarify, "hmm, the lungs"), strict=True):
        r = route_turn(_semantic(_Unsure()), choice["message"], has_image=True, has_history=True)
        assert r.clarify is None, choice
        assert (r.intent, r.finding) == (reading["intent"], reading.get("finding")), choice
        if reading.get("phrase"):
            assert r.phrase == reading["phrase"]


def test_clarifying_question_through_graph_invoke(make_graph, thread, cxr_image):
    vlm = ScriptedVLM()
    g = make_graph(vlm)
    cfg = thread()
    events = [e for mode, e in g.stream({"messages": [("user", "is there an edemaa?")], "image": str(cxr_image)},
                                        cfg, stream_mode=["custom", "values"]) if mode == "custom"]
    out = g.get_state(cfg).values
    reply = out["messages"][-1]
    assert vlm.calls == 0  # no tool runs on a guess
    route = next(e for e in events if e.get("event") == "route")
    assert route["tools"] == []  # the progress line names no tool for a question asked back
    assert "edema" in reply.content and "'edemaa'" in reply.content and "Is there edema?" in reply.content
    choices = reply.additional_kwargs["cxr"]["clarify"]["choices"]
    assert [c["message"] for c in choices] == ["Is there edema?", "Is there 'edemaa'?"]
    out = g.invoke({"messages": [("user", choices[0]["message"])]}, cfg)  # the user picks the first reading
    assert vlm.calls == 1 and vlm.requests[0].finding == "edema"
    assert "clarify" not in out["messages"][-1].additional_kwargs["cxr"]
