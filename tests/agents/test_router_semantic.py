"""Semantic router: rule-decided turns skip the embedding, OOV findings routed as a phrase,
rules-only fallback when the embedder cannot load, the embedding classifier itself."""

from __future__ import annotations

import re

import numpy as np
import pytest

from agents.routing import semantic as S
from agents.routing.semantic import IntentClassifier, delexicalise, oov_phrase, route_semantic


def _bow_encoder(vocab: list[str]):
    """A deterministic bag-of-words 'embedding' (test double for MiniLM): unit vectors over `vocab`."""

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                if w in vocab:
                    out[i, vocab.index(w)] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)

    return encode


EXAMPLES = [("search the database for similar cases", "similar_cases"), ("search the report database for cases", "similar_cases"),
            ("write the report", "report"), ("write a full report", "report"),
            ("is there the finding", "finding_question"), ("any the finding", "finding_question"),
            ("hello", "chat"), ("thanks", "chat")]
VOCAB = ["similar", "archive", "search", "reports", "report", "write", "full", "finding", "there", "hello", "thanks",
         "database", "cases"]


def _clf() -> IntentClassifier:
    return IntentClassifier(_bow_encoder(VOCAB), EXAMPLES, c=1000.0)  # tiny toy set: a confident fit


def _boom():
    raise AssertionError("the classifier must not be consulted for a rule-decided turn")


def test_classifier_picks_the_nearest_examples_intent() -> None:
    scores = _clf().scores("search the archive for similar cases")
    assert max(scores, key=scores.get) == "similar_cases"
    with pytest.raises(ValueError):
        IntentClassifier(_bow_encoder(VOCAB), [])


def test_rule_decided_turn_never_embeds() -> None:
    r = route_semantic("where is the pneumothorax?", has_image=True, classifier=_boom)
    assert r.intent == "locate" and r.finding == "pneumothorax"
    r = route_semantic("find similar cases", has_image=True, classifier=_boom)
    assert r.intent == "similar_cases"
    # a turn that is nothing but an imperative report request is decided too
    for text in ("Write a report", "pls generate radiology report", "Could you write a full radiology report "
                 "for this chest film?", "Dictate a structured report for this portable AP study."):
        assert route_semantic(text, has_image=True, classifier=_boom).intent == "report", text


def test_report_cue_in_a_longer_request_still_asks_the_classifier() -> None:
    consulted = []

    def spy():
        consulted.append(1)
        return None  # rules only: the route stands, but the classifier was asked

    for text in ("search the report database for cardiomegaly", "write a report comparing with the prior",
                 "draft a report I can sign off", "show me the report"):
        route_semantic(text, has_image=True, classifier=spy)
    assert len(consulted) == 4


def test_classifier_overrides_an_unsure_rule_route() -> None:
    # a lone report cue with a finding is not decisive: the examples say similar cases
    text = "search the report database for cardiomegaly"
    assert S.rules.route(text, has_image=True).intent == "report"
    r = route_semantic(text, has_image=True, classifier=_clf)
    assert r.intent == "similar_cases" and r.finding == "cardiomegaly" and r.reason.startswith("semantic:")


def test_oov_finding_question_carries_the_phrase() -> None:
    r = route_semantic("Is there free air under the diaphragm?", has_image=True, classifier=_clf)
    assert r.intent == "finding_question" and r.finding is None
    assert r.phrase == "free air under the diaphragm" and "out-of-vocabulary" in r.reason
    r = route_semantic("Any signs of TB?", has_image=True, classifier=_clf)
    assert r.intent == "finding_question" and r.phrase == "tb"
    # a vocabulary finding keeps its id and no phrase
    r = route_semantic("is there a pneumothorax?", has_image=True, classifier=_clf)
    assert r.finding == "pneumothorax" and r.phrase is None
    assert oov_phrase("is there anything abnormal?") == "anything abnormal"
    # the existence rule leaves generic questions alone (no classifier here: the rules' report stands)
    assert route_semantic("is there anything abnormal?", has_image=True, classifier=lambda: None).intent == "report"


def test_embedder_unavailable_routes_by_rules_and_says_so(monkeypatch) -> None:
    monkeypatch.setitem(S._STATE, "error", "EmbedderUnavailable: offline")
    text = "search the report database for cardiomegaly"
    r = route_semantic(text, has_image=True, classifier=lambda: None)
    assert r.intent == S.rules.route(text, has_image=True).intent
    assert "rules only: embedder unavailable: EmbedderUnavailable: offline" in r.reason


def test_default_classifier_failure_is_remembered_not_raised(monkeypatch) -> None:
    import tools.retrieval.embedder as E

    def fail(*a, **k):
        raise E.EmbedderUnavailable("no model here")

    monkeypatch.setattr(E, "get_embedder", fail)
    monkeypatch.setattr(S, "_STATE", {"classifier": None, "error": None})
    assert S.default_classifier() is None
    assert "no model here" in S._STATE["error"]
    r = route_semantic("search the report database for cardiomegaly", has_image=True)
    assert "rules only" in r.reason


def test_delexicalise_masks_vocabulary_findings_only() -> None:
    assert delexicalise("similar reports with pneumothorax") == "similar reports with the finding"
    assert delexicalise("is there free air") == "is there free air"


def test_examples_file_covers_every_intent() -> None:
    from tools.base import INTENTS

    intents = {i for _, i in S.load_examples()}
    assert intents == set(INTENTS)


@pytest.mark.parametrize("text, intent", [
    # a report-database search is similar cases (the rules alone say report)
    ("Look through our report database for bilateral effusions with a big heart", "similar_cases"),
    # not among the examples: a general-knowledge question runs no image tool (it went to locate once)
    ("What is the capital of Germany?", "chat"), ("Who is the president of the United States?", "chat"),
    ("How far is the moon?", "chat"),
    # the classifier leans to a finding question with nothing named to ask about: the rules' report stands
    ("Is this normal?", "report"), ("Does this look normal?", "report"),
])
def test_real_minilm_routes(text, intent) -> None:
    """With the bundled MiniLM."""
    clf = S.default_classifier()
    if clf is None:
        pytest.skip(f"bundled MiniLM unavailable: {S._STATE['error']}")
    r = route_semantic(text, has_image=True, has_history=True)
    assert r.intent == intent, r.reason
