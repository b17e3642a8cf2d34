"""Clinicians' phrasings the rules decide alone (no embedding): a definition asked with "explain", what is
normal in general, what an image shows (not where), where a call came from (a reason, not a place), the
report archive, and a generic "any acute findings?" that names nothing to ask about."""

from __future__ import annotations

import pytest
from rules_router import never_consulted as _never

from agents.routing import rules
from agents.routing.semantic import _with_phrase, route_semantic


@pytest.mark.parametrize(("text", "intent", "finding"), [
    ("Can you explain what a PA view is?", "chat", None),
    ("Explain what a pneumothorax is in simple terms", "chat", "pneumothorax"),
    ("What's the normal cardiothoracic ratio in adults?", "chat", None),
    ("Where did the consolidation call come from?", "explain", "consolidation"),
    ("look up past reports describing bilateral effusions", "similar_cases", "pleural_effusion"),
    ("Look through the report archive for large hearts with effusions", "similar_cases", None),
])
def test_rules_decide_without_the_classifier(text: str, intent: str, finding: str | None) -> None:
    r = route_semantic(text, has_image=True, classifier=_never)
    assert r.intent == intent, r.reason
    if finding:
        assert finding in r.findings


@pytest.mark.parametrize("text", ["What does this chest X-ray show?", "Do the lungs show hyperinflation?"])
def test_what_an_image_shows_is_not_a_location_question(text: str) -> None:
    assert rules.route(text, has_image=True).intent != "locate"
    assert rules.route("where does it show the effusion?", has_image=True).intent == "locate"


def test_explaining_our_reasoning_stays_explain() -> None:
    assert rules.route("explain what you found", has_image=True).intent == "explain"
    assert rules.route("what is normal and what is not on this film?", has_image=True).intent != "chat"


def test_a_generic_existence_question_names_no_phrase() -> None:
    for text in ("Any acute cardiopulmonary findings?", "Any abnormalities at all?"):
        r = route_semantic(text, has_image=True, classifier=lambda: None)
        assert r.phrase is None and r.intent == "report", (text, r)
    for text, phrase in (("is there an abnormality in the left apex?", "abnormality in the left apex"),
                         ("any acute findings?", None)):
        asked = rules._make_route("finding_question", [], text, "asks", has_image=True, method="rules")
        assert _with_phrase(asked, text).phrase == phrase
