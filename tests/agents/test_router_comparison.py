"""Comparison turns: the semantic router's labelled examples send "compared with the prior", "interval
change", "is it worse/better", "new since last time" to a full read (which the comparison turn needs), and
the held-out comparison set stays well-formed."""

from __future__ import annotations

import pytest

from agents.routing.semantic import default_classifier, route_semantic
from agents.routing.turn import route_turn
from eval.route_eval import load_cases
from knowledge.vocabulary import FINDINGS
from tools.base import INTENTS, RECONCILED_INTENTS

HELDOUT = "eval/router_heldout_compare.jsonl"


@pytest.fixture(scope="module")
def semantic():
    if default_classifier() is None:  # the bundled MiniLM ships with the package
        pytest.fail("the semantic router's embedder did not load")
    return route_semantic


@pytest.mark.parametrize("text", ["compare with the prior", "compared to the old film",
                                  "interval change since the previous film", "worse or better than last time?",
                                  "has it gotten worse", "improved?", "new since the last study?"])
def test_comparison_phrasings_are_read_as_a_whole_study_without_asking_back(semantic, text: str) -> None:
    r = route_turn(semantic, text, has_image=True, has_history=True, previous_findings=[])
    assert r.asks_comparison, text
    assert r.clarify is None, text
    assert r.intent == "report", (text, r.intent, r.reason)


def test_compare_with_the_archive_stays_a_similar_cases_request(semantic) -> None:
    r = route_turn(semantic, "Compare with the archive", has_image=True, has_history=True, previous_findings=[])
    assert r.intent == "similar_cases" and not r.asks_comparison and r.clarify is None


def test_heldout_comparison_set_is_labelled_in_the_products_vocabulary() -> None:
    cases = load_cases(HELDOUT)
    assert len(cases) >= 30
    assert {c["asks_comparison"] for c in cases} == {True, False}
    for c in cases:
        assert c["intent"] in INTENTS, c
        assert c["finding"] is None or c["finding"] in FINDINGS, c
        if c["asks_comparison"]:
            assert c["intent"] in RECONCILED_INTENTS, c
