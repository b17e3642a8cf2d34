"""Comparison wordings that name no earlier film explicitly ("compare the two studies", "is it any better?")
are comparisons, read as a whole study by the rules and by the semantic router when nothing is named or referred
back to; "is it any better?" after a question about a finding asks about that finding's change, as "is the effusion
any better?" does; nearby wordings that are not about change stay what they were."""

from __future__ import annotations

import pytest

from agents.routing.rules import asks_comparison, route
from agents.routing.semantic import default_classifier, route_semantic
from agents.routing.turn import route_turn

WORDINGS = ["compare the two studies", "did anything change between the two films", "now vs the earlier study",
            "is it any better?", "Any interval change?", "looking better than the baseline film?"]


@pytest.fixture(scope="module")
def semantic():
    if default_classifier() is None:  # the bundled MiniLM ships with the package
        pytest.fail("the semantic router's embedder did not load")
    return route_semantic


@pytest.mark.parametrize("previous", [[], ["pleural_effusion"]])
@pytest.mark.parametrize("text", WORDINGS)
def test_comparison_wordings_are_a_whole_study_read_by_both_routers(semantic, text: str, previous: list[str]) -> None:
    assert asks_comparison(text), text
    refers_back = previous and text == "is it any better?"
    for router in (route, semantic):
        r = route_turn(router, text, has_image=True, has_history=True, previous_findings=previous)
        assert r.asks_comparison and r.clarify is None, (text, router)
        expected = ("finding_question", "pleural_effusion", None) if refers_back else ("report", None, None)
        assert (r.intent, r.finding, r.phrase) == expected, (text, r.intent, r.phrase, r.reason)


@pytest.mark.parametrize("text", ["is it any better?", "is it worse than before?", "better or worse than yesterday?",
                                  "is it new compared to the old films?"])
def test_a_change_referring_back_asks_about_the_previous_finding(semantic, text: str) -> None:
    for router in (route, semantic):
        r = route_turn(router, text, has_image=True, has_history=True, previous_findings=["edema"])
        assert r.asks_comparison and r.clarify is None, (text, router)
        assert (r.intent, r.finding) == ("finding_question", "edema"), (text, r.intent, r.reason)


@pytest.mark.parametrize("text", ["What are the differences between both images?", "any change versus the prior?",
                                  "has it got better", "changes between these two x-rays"])
def test_more_change_wordings_ask_for_a_comparison(text: str) -> None:
    assert asks_comparison(text), text
    assert route(text, has_image=True).intent == "report", text


def test_a_named_finding_keeps_its_finding_question() -> None:
    r = route_turn(route, "Is the effusion any better?", has_image=True, has_history=True, previous_findings=[])
    assert r.asks_comparison and r.intent == "finding_question" and r.finding == "pleural_effusion"


@pytest.mark.parametrize("text", ["can you explain it better?", "what is the difference between effusion and "
                                  "consolidation?", "compare with the archive", "is there a better view?",
                                  "show me both images"])
def test_wordings_not_about_change_are_no_comparison(text: str) -> None:
    assert not asks_comparison(text), text
