"""`python -m eval.router_compare`: which intent classifier the semantic router should use, by 5-fold
cross-validation of the whole routing policy (rules + classifier + ask-back), then the held-out sets.

Candidates: logistic regression over the bundled MiniLM's embeddings (today's), and a SetFit fine-tune of
the same MiniLM (contrastive pairs from the labelled turns, then the same logistic regression head). SetFit
is optional: without it installed the comparison says so and scores the logistic regression alone.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EVAL = Path(__file__).resolve().parent
TUNING_FILES = (EVAL / "router_cases.jsonl", EVAL / "router_tuning.jsonl")
HELDOUT_FILES = (EVAL / "router_heldout.jsonl", EVAL / "router_heldout_v2.jsonl")


def labelled_turns() -> list[dict[str, Any]]:
    """Every turn the router may be tuned on: the classifier's examples and the eval tuning sets."""
    from agents.routing.semantic import load_examples
    from eval.route_eval import load_cases

    turns = [{"text": t, "intent": i} for t, i in load_examples()]
    for path in TUNING_FILES:
        turns += load_cases(path)
    return turns


def setfit_encoder(texts: list[str], intents: list[str], *, seed: int = 0, iterations: int = 10,
                   epochs: int = 1) -> Callable[[list[str]], np.ndarray]:
    """The bundled MiniLM fine-tuned SetFit-style on (text, intent) pairs; returns its encode function."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments  # optional: pip install setfit

    from tools.retrieval.embedder import bundled_model_path

    model = SetFitModel.from_pretrained(str(bundled_model_path()), local_files_only=True)
    with tempfile.TemporaryDirectory(prefix="cxr-setfit-") as scratch:  # its trainer checkpoints, never the cwd
        args = TrainingArguments(output_dir=scratch, batch_size=32, num_iterations=iterations, num_epochs=epochs,
                                 seed=seed, show_progress_bar=False, report_to="none")
        trainer = Trainer(model=model, args=args,
                          train_dataset=Dataset.from_dict({"text": texts, "label": intents}))
        trainer.train()
    body = model.model_body

    def encode(batch: list[str]) -> np.ndarray:
        return np.asarray(body.encode(batch, batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    return encode


def _prepared(turns: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    from agents.routing import rules
    from agents.routing.semantic import delexicalise

    return [delexicalise(rules._clean(t["text"])) for t in turns], [t["intent"] for t in turns]


def build(kind: str, turns: list[dict[str, Any]], *, seed: int = 0, iterations: int = 10):
    """An IntentClassifier of ``kind`` ('lr' or 'setfit') trained on ``turns``."""
    from agents.routing.semantic import IntentClassifier
    from tools.retrieval.embedder import get_embedder

    examples = [(t["text"], t["intent"]) for t in turns]
    if kind == "lr":
        return IntentClassifier(get_embedder().encode, examples)
    texts, intents = _prepared(turns)
    return IntentClassifier(setfit_encoder(texts, intents, seed=seed, iterations=iterations), examples)


def score(clf: Any, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole policy (route_turn over route_semantic with this classifier) on labelled cases."""
    from agents.routing.semantic import route_semantic
    from eval.route_eval import evaluate_router

    def router(text: str, *, has_image: bool, has_history: bool = False):
        return route_semantic(text, has_image=has_image, has_history=has_history, classifier=lambda: clf)

    return evaluate_router(cases, router)


def cross_validate(kind: str, turns: list[dict[str, Any]], *, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    order = list(range(len(turns)))
    random.Random(seed).shuffle(order)
    parts = [order[i::folds] for i in range(folds)]
    ok = answered = n = asked = 0
    for k, test_idx in enumerate(parts):
        held = set(test_idx)
        clf = build(kind, [t for i, t in enumerate(turns) if i not in held], seed=seed + k)
        res = score(clf, [turns[i] for i in test_idx])
        n += res["n"]
        asked += res["clarified"]
        answered += res["n"] - res["clarified"]
        ok += round(res["accuracy"] * (res["n"] - res["clarified"]))
    return {"n": n, "accuracy": ok / answered if answered else 0.0, "clarify_rate": asked / n if n else 0.0}


def calibrate(turns: list[dict[str, Any]], *, kind: str = "lr", folds: int = 5, seed: int = 0,
              thresholds: tuple[float, ...] = (0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)) -> dict[float, dict]:
    """Cross-validated accuracy (of the answered turns) and asking-back rate for each intent threshold
    (agents.routing.turn.INTENT_ASK_BELOW), on the labelled tuning turns only. Each turn is routed once per
    fold; the threshold is then applied to its recorded scores."""
    from agents.routing import turn
    from agents.routing.semantic import route_semantic

    order = list(range(len(turns)))
    random.Random(seed).shuffle(order)
    parts = [order[i::folds] for i in range(folds)]
    tally = {th: [0, 0, 0] for th in thresholds}  # right, answered, asked
    saved = turn.INTENT_ASK_BELOW
    try:
        for k, test_idx in enumerate(parts):
            held = set(test_idx)
            clf = build(kind, [t for i, t in enumerate(turns) if i not in held], seed=seed + k)

            def router(text: str, *, has_image: bool, has_history: bool = False, _clf: Any = clf):
                return route_semantic(text, has_image=has_image, has_history=has_history, classifier=lambda: _clf)

            turn.INTENT_ASK_BELOW = -1.0  # route once, never asking about the intent
            for i in test_idx:
                case = turns[i]
                r = turn.route_turn(router, case["text"], has_image=bool(case.get("has_image", True)),
                                    has_history=bool(case.get("has_history", False)),
                                    previous_findings=(case.get("previous") or {}).get("findings") or [])
                right = r.intent == case["intent"] and ("finding" not in case or r.finding == case["finding"])
                for th in thresholds:
                    turn.INTENT_ASK_BELOW = th
                    asked = r.clarify is not None or turn.ask_back(r, case["text"]) is not None
                    turn.INTENT_ASK_BELOW = -1.0
                    tally[th][2] += asked
                    tally[th][1] += not asked
                    tally[th][0] += right and not asked
    finally:
        turn.INTENT_ASK_BELOW = saved
    return {th: {"accuracy": r / a if a else 0.0, "clarify_rate": q / (a + q)} for th, (r, a, q) in tally.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="lr,setfit")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds (1: held-out sets only)")
    ap.add_argument("--iterations", type=int, default=10, help="SetFit: contrastive pairs per labelled turn")
    ap.add_argument("--calibrate", action="store_true", help="sweep the ask-back threshold by cross-validation")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    a = ap.parse_args(argv)
    from eval.route_eval import load_cases

    turns = labelled_turns()
    out: dict[str, Any] = {"n_labelled": len(turns)}
    if a.calibrate:
        for th, row in calibrate(turns).items():
            print(f"INTENT_ASK_BELOW={th}: accuracy {row['accuracy']:.3f}, asks {row['clarify_rate']:.3f}", flush=True)
        return
    for kind in a.kinds.split(","):
        try:
            t0 = time.perf_counter()
            cv = cross_validate(kind, turns, folds=a.folds) if a.folds > 1 else {}
            cv["cv_seconds"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            clf = build(kind, turns, iterations=a.iterations)
            cv["train_seconds"] = round(time.perf_counter() - t0, 1)
            for path in HELDOUT_FILES:
                res = score(clf, load_cases(path))
                cv[path.stem] = {k: res[k] for k in ("n", "accuracy", "intent_accuracy", "finding_accuracy",
                                                     "clarified", "clarify_rate")}
            out[kind] = cv
        except ImportError as exc:
            out[kind] = {"error": f"not installed: {exc}"}
        print(kind, json.dumps(out[kind]), flush=True)
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
