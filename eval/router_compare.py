"""`python -m eval.router_compare`: which intent classifier the semantic router should use, by 5-fold
cross-validation of the whole routing policy (rules + classifier + ask-back), then the held-out sets.

Candidates: logistic regression over the bundled MiniLM's embeddings (today's), and a SetFit fine-tune of
the same MiniLM (contrastive pairs from the labelled turns, then the same logistic regression head). SetFit
is optional: without it installed the comparison says so and scores the logistic regression alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EVAL = Path(__file__).resolve().parent
TUNING_FILES = (EVAL / "router_cases.jsonl", EVAL / "router_tuning.jsonl")
ITERATIONS = 4  # as agents.routing.finetune.ITERATIONS (kept here so the script starts without SetFit)
HELDOUT_FILES = (EVAL / "router_heldout.jsonl", EVAL / "router_heldout_v2.jsonl")


def labelled_turns() -> list[dict[str, Any]]:
    """Every turn the router may be tuned on, each sentence once: the eval tuning sets (with their finding,
    history and previous turn), then the classifier's examples they do not already hold.

    Why once: the examples file contains the tuning sentences; a sentence counted twice could sit in a test
    fold and in its training folds at the same time, and cross-validation would score memory."""
    from agents.routing.semantic import load_examples
    from eval.route_eval import load_cases

    turns: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in TUNING_FILES:
        turns += load_cases(path)
    seen = {" ".join(t["text"].lower().split()) for t in turns}
    for text, intent in load_examples():
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            turns.append({"text": text, "intent": intent})
    return turns


def setfit_encoder(texts: list[str], intents: list[str], *, seed: int = 0, iterations: int = ITERATIONS,
                   epochs: int = 1, batch_size: int = 32) -> Callable[[list[str]], np.ndarray]:
    """The bundled MiniLM fine-tuned as `cxr-agent router train` does; returns its encode function."""
    from agents.routing.finetune import encoder, fine_tune_body

    return encoder(fine_tune_body(texts, intents, seed=seed, iterations=iterations, epochs=epochs,
                                  batch_size=batch_size))


def _prepared(turns: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    from agents.routing import rules
    from agents.routing.semantic import delexicalise

    return [delexicalise(rules._clean(t["text"])) for t in turns], [t["intent"] for t in turns]


def build(kind: str, turns: list[dict[str, Any]], *, seed: int = 0, iterations: int = ITERATIONS, epochs: int = 1,
          batch_size: int = 32):
    """An IntentClassifier of ``kind`` ('lr' or 'setfit') trained on ``turns``."""
    from agents.routing.semantic import IntentClassifier
    from tools.retrieval.embedder import get_embedder

    examples = [(t["text"], t["intent"]) for t in turns]
    if kind == "lr":
        return IntentClassifier(get_embedder().encode, examples)
    texts, intents = _prepared(turns)
    return IntentClassifier(setfit_encoder(texts, intents, seed=seed, iterations=iterations, epochs=epochs,
                                           batch_size=batch_size), examples)


def score(clf: Any, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole policy (route_turn over route_semantic with this classifier) on labelled cases."""
    from agents.routing.semantic import route_semantic
    from eval.route_eval import evaluate_router

    def router(text: str, *, has_image: bool, has_history: bool = False):
        return route_semantic(text, has_image=has_image, has_history=has_history, classifier=lambda: clf)

    return evaluate_router(cases, router)


def cross_validate(kind: str, turns: list[dict[str, Any]], *, folds: int = 5, seed: int = 0,
                   **train: Any) -> dict[str, Any]:
    """k-fold cross-validation of the whole policy with a classifier of ``kind`` trained on the other folds.

    Same folds for every kind (``seed``). Accuracy (intent and finding both right) and intent accuracy are of
    the answered turns; a turn the router asks back about is counted apart (``clarify_rate``)."""
    order = list(range(len(turns)))
    random.Random(seed).shuffle(order)
    parts = [order[i::folds] for i in range(folds)]
    ok = ok_intent = answered = n = asked = 0
    seconds, loads = [], []
    for k, test_idx in enumerate(parts):
        held = set(test_idx)
        t0 = time.perf_counter()
        clf = build(kind, [t for i, t in enumerate(turns) if i not in held], seed=seed + k, **train)
        seconds.append(round(time.perf_counter() - t0, 1))
        loads.append(round(os.getloadavg()[0], 2))
        res = score(clf, [turns[i] for i in test_idx])
        n += res["n"]
        asked += res["clarified"]
        answered += res["n"] - res["clarified"]
        ok += round(res["accuracy"] * (res["n"] - res["clarified"]))
        ok_intent += round(res["intent_accuracy"] * (res["n"] - res["clarified"]))
        print(f"  {kind} fold {k + 1}/{folds}: train {seconds[-1]} s (load {loads[-1]}), "
              f"{res['n'] - res['clarified']} answered, {res['clarified']} asked", flush=True)
    return {"n": n, "answered": answered, "right": ok, "accuracy": ok / answered if answered else 0.0,
            "intent_accuracy": ok_intent / answered if answered else 0.0,
            "clarify_rate": asked / n if n else 0.0, "fold_train_seconds": seconds, "fold_load_1min": loads}


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
    ap.add_argument("--iterations", type=int, default=ITERATIONS, help="SetFit: contrastive pairs per labelled turn")
    ap.add_argument("--epochs", type=int, default=1, help="SetFit: passes over the pairs")
    ap.add_argument("--batch-size", type=int, default=32, help="SetFit: pairs per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: the same numbers run to run, and fastest on a shared CPU)")
    ap.add_argument("--cv-only", action="store_true", help="cross-validation only, no held-out sets")
    ap.add_argument("--calibrate", action="store_true", help="sweep the ask-back threshold by cross-validation")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    a = ap.parse_args(argv)
    import torch

    from eval.route_eval import load_cases

    torch.set_num_threads(a.threads)

    turns = labelled_turns()
    out: dict[str, Any] = {"n_labelled": len(turns), "folds": a.folds, "seed": a.seed,
                           "setfit_budget": {"iterations": a.iterations, "epochs": a.epochs,
                                             "batch_size": a.batch_size},
                           "cpus": os.cpu_count(), "torch_threads": a.threads,
                           "load_at_start": [round(x, 2) for x in os.getloadavg()]}
    if a.calibrate:
        for th, row in calibrate(turns).items():
            print(f"INTENT_ASK_BELOW={th}: accuracy {row['accuracy']:.3f}, asks {row['clarify_rate']:.3f}", flush=True)
        return
    train = {"iterations": a.iterations, "epochs": a.epochs, "batch_size": a.batch_size}
    kinds = a.kinds.split(",")
    for kind in kinds:  # cross-validation first, for every candidate
        try:
            t0 = time.perf_counter()
            cv = cross_validate(kind, turns, folds=a.folds, seed=a.seed, **train) if a.folds > 1 else {}
            cv["cv_seconds"] = round(time.perf_counter() - t0, 1)
            out[kind] = {"cv": cv}
        except ImportError as exc:
            out[kind] = {"error": f"not installed: {exc}"}
        print(kind, "cv", json.dumps(out[kind]), flush=True)
    for kind in kinds:  # then the held-out sets, once per candidate, aggregate numbers only
        if "error" in out[kind] or a.cv_only:
            continue
        t0 = time.perf_counter()
        clf = build(kind, turns, seed=a.seed, **train)
        out[kind]["train_seconds"] = round(time.perf_counter() - t0, 1)
        out[kind]["train_load_1min"] = round(os.getloadavg()[0], 2)
        for path in HELDOUT_FILES:
            res = score(clf, load_cases(path))
            out[kind][path.stem] = {k: res[k] for k in ("n", "answered", "accuracy", "intent_accuracy",
                                                        "finding_accuracy", "clarified", "clarify_rate")}
        print(kind, "held-out", json.dumps({k: v for k, v in out[kind].items() if k != "cv"}), flush=True)
    if a.out:
        a.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
