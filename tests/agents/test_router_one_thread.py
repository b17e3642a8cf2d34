"""The embedding-consulted turn's own costs: the sentence is embedded on the routing thread with one OpenMP
thread (other threads keep the process's count), and the intent probabilities come from the fitted weights
directly, equal to the regression's own."""

from __future__ import annotations

import threading

import numpy as np
import torch

from agents.routing import rules
from agents.routing.semantic import IntentClassifier, delexicalise, one_thread

EXAMPLES = [("write a report", "report"), ("full read please", "report"), ("where is the finding", "locate"),
            ("show me where", "locate"), ("why did you say that", "explain"), ("explain your reasoning", "explain"),
            ("similar cases please", "similar_cases"), ("find cases like this", "similar_cases")]


def _encoder(texts: list[str]) -> np.ndarray:
    """Deterministic 16-d vectors per text (a stand-in embedding with no model to load)."""
    return np.stack([np.random.default_rng(sum(map(ord, t))).normal(size=16) for t in texts]).astype(np.float32)


def test_one_thread_embeds_with_one_openmp_thread_and_leaves_others_alone() -> None:
    before = torch.get_num_threads()
    seen: dict[str, object] = {}

    def encode(texts: list[str]) -> np.ndarray:
        seen["threads"], seen["name"] = torch.get_num_threads(), threading.current_thread().name
        return _encoder(texts)

    out = one_thread(encode, ["where is it?"])
    assert out.shape == (1, 16)
    assert seen["threads"] == 1 and str(seen["name"]).startswith("cxr-router")
    assert torch.get_num_threads() == before
    fresh: list[int] = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh == [before]


def test_probabilities_equal_the_regressions_own() -> None:
    clf = IntentClassifier(_encoder, EXAMPLES, c=1.0)
    for text in ("where is the effusion on this film", "explain", "reports like this one", "r/o ptx"):
        v = _encoder([text])
        got = clf.probabilities(v[0])
        assert np.allclose(got, clf.model.predict_proba(v)[0], atol=1e-9)
        seen = clf.model.predict_proba(_encoder([delexicalise(rules._clean(text))]))[0]
        assert np.allclose(list(clf.scores(text).values()), seen, atol=1e-9)
