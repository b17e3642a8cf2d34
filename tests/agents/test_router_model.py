"""The fine-tuned router model: `cxr-agent router train` fine-tunes a sentence-transformer on a handful of
labelled turns and saves body + head; the semantic router loads and uses it, refuses it once its examples
changed, and otherwise routes with the logistic regression over the bundled MiniLM, saying why."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from kb_index_helpers import tiny_embedder_dir
from typer.testing import CliRunner

from agents.routing import router_model
from agents.routing import semantic as S
from agents.routing.finetune import encoder
from agents.routing.semantic import FINE_TUNED, IntentClassifier, load_fine_tuned, route_semantic
from cli.main import app

EXAMPLES = [("search the archive for similar cases", "similar_cases"), ("find cases like this one", "similar_cases"),
            ("show me matching prior studies", "similar_cases"), ("look up comparable patients", "similar_cases"),
            ("write the report", "report"), ("dictate a full read of this film", "report"),
            ("give me the impression", "report"), ("read this study", "report"),
            ("hello there", "chat"), ("thanks a lot", "chat"), ("who made you", "chat"), ("good morning", "chat")]
UNDECIDED = "could you pull up a few old studies that resemble this one"  # no cue family: the classifier is asked


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("router-model")
    examples = root / "examples.jsonl"
    examples.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in EXAMPLES), encoding="utf-8")
    out = root / "model"
    threads = torch.get_num_threads()
    res = CliRunner().invoke(app, ["router", "train", "--out", str(out), "--examples", str(examples),
                                   "--base", str(tiny_embedder_dir()), "--iterations", "1", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert "router model written to" in res.output
    assert torch.get_num_threads() == threads  # the fine-tune's own thread count does not outlive it
    return out, examples, json.loads((out / "meta.json").read_text())


def test_training_writes_a_model_the_router_loads_and_uses(built) -> None:
    out, examples, meta = built
    assert meta["examples_sha256"] == router_model.examples_digest(examples)
    assert (meta["n_examples"], meta["iterations"], meta["seed"]) == (len(EXAMPLES), 1, 0)
    assert sorted(meta["intents"]) == ["chat", "report", "similar_cases"]
    clf = load_fine_tuned(out, examples)
    assert clf.name == FINE_TUNED
    # the body was fine-tuned: it no longer embeds as the model it started from
    from sentence_transformers import SentenceTransformer

    base = encoder(SentenceTransformer(str(tiny_embedder_dir()), device="cpu"))([UNDECIDED])
    assert not np.allclose(clf.encode([UNDECIDED]), base, atol=1e-4)
    # the saved head is the regression fitted on the saved body: refitting there gives the same probabilities
    refit = IntentClassifier(clf.encode, EXAMPLES)
    got, want = clf.scores(UNDECIDED), refit.scores(UNDECIDED)
    assert got.keys() == want.keys() and np.allclose(list(got.values()), [want[k] for k in got], atol=1e-6)
    r = route_semantic(UNDECIDED, has_image=True, classifier=lambda: clf)
    assert set(r.scores) == set(meta["intents"])  # the fine-tuned classifier was consulted


def test_a_model_built_from_other_examples_is_refused(built, tmp_path: Path) -> None:
    out, examples, _ = built
    changed = tmp_path / "examples.jsonl"
    changed.write_text(examples.read_text() + json.dumps({"text": "see you", "intent": "chat"}) + "\n")
    with pytest.raises(router_model.RouterModelError, match=r"stale: built from examples [0-9a-f]{12}.*"
                                                            r"cxr-agent router train"):
        load_fine_tuned(out, changed)
    with pytest.raises(router_model.RouterModelError, match="no fine-tuned router model at"):
        load_fine_tuned(tmp_path / "nothing", examples)


def _fresh_router(monkeypatch: pytest.MonkeyPatch, data_dir: Path, examples: Path) -> list[str]:
    """default_classifier() over ``data_dir`` and ``examples``, the bundled embedder replaced by the tiny one."""
    import cxr_agent.settings as settings_mod
    import tools.retrieval.embedder as E
    from cxr_agent.settings import Settings

    monkeypatch.setattr(settings_mod, "get_settings", lambda: Settings(data_dir=data_dir, offline=True))
    monkeypatch.setattr(S, "EXAMPLES_PATH", examples)
    monkeypatch.setattr(S, "_STATE", {"classifier": None, "error": None, "fallback": None})
    from sentence_transformers import SentenceTransformer

    tiny = SentenceTransformer(str(tiny_embedder_dir()), device="cpu")
    used: list[str] = []

    class Tiny:
        def encode(self, texts: list[str]) -> np.ndarray:
            used.append("bundled")
            return encoder(tiny)(texts)

    monkeypatch.setattr(E, "get_embedder", lambda *a, **k: Tiny())
    return used


def test_default_classifier_uses_a_current_model(built, monkeypatch, tmp_path: Path) -> None:
    out, examples, _ = built
    shutil.copytree(out, router_model.model_dir(tmp_path))
    used = _fresh_router(monkeypatch, tmp_path, examples)
    clf = S.default_classifier()
    assert clf is not None and clf.name == FINE_TUNED
    assert S.classifier_info() == {"classifier": FINE_TUNED, "fallback_reason": None, "error": None}
    route_semantic(UNDECIDED, has_image=True)
    assert used == []  # one embedding per turn, the fine-tuned body's: the bundled MiniLM is not asked too


@pytest.mark.parametrize("case", ["absent", "stale"])
def test_default_classifier_falls_back_to_the_regression_and_says_why(built, monkeypatch, caplog, tmp_path: Path,
                                                                      case: str) -> None:
    out, examples, _ = built
    if case == "stale":
        shutil.copytree(out, router_model.model_dir(tmp_path))
        examples = tmp_path / "examples.jsonl"
        examples.write_text(built[1].read_text() + json.dumps({"text": "bye now", "intent": "chat"}) + "\n")
    used = _fresh_router(monkeypatch, tmp_path, examples)
    with caplog.at_level(logging.INFO, logger=S.__name__):
        clf = S.default_classifier()
    assert clf is not None and clf.name == IntentClassifier.name
    why = {"absent": "no fine-tuned router model at", "stale": "is stale"}[case]
    assert any(why in rec.getMessage() and "logistic regression" in rec.getMessage() for rec in caplog.records)
    assert why in S.classifier_info()["fallback_reason"]
    route_semantic(UNDECIDED, has_image=True)
    assert used  # the regression routes over the bundled embedder


def test_router_info_names_the_classifier(built, monkeypatch, tmp_path: Path) -> None:
    out, examples, _ = built
    shutil.copytree(out, router_model.model_dir(tmp_path))
    _fresh_router(monkeypatch, tmp_path, examples)
    res = CliRunner().invoke(app, ["router", "info", "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["classifier"] == FINE_TUNED and row["model_dir"] == str(router_model.model_dir(tmp_path))


def test_train_refuses_a_missing_examples_file(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["router", "train", "--out", str(tmp_path / "m"), "--examples",
                                   str(tmp_path / "none.jsonl")])
    assert res.exit_code == 2 and f"--examples: no examples file at {tmp_path / 'none.jsonl'}" in res.output
    assert not (tmp_path / "m").exists()
