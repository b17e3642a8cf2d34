"""`cxr-agent eval route`: accuracy and confusion matrix of agents.router.route on labelled turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def evaluate_cases(path: str | Path | None = None, *, router: Any = None) -> dict[str, Any]:
    """Score the router on a JSONL of {text, intent, (finding), (has_image)} (default eval/router_cases.jsonl).

    Uses the router's own evaluate_router (intent and finding accuracy, per split) and adds the
    confusion matrix as a dense table over the intents, gold rows x predicted columns."""
    from agents.router import evaluate_router, load_cases, route
    from tools.base import INTENTS

    cases = load_cases(path)
    res = evaluate_router(cases, router or route)
    labels = list(INTENTS)
    for gold, row in res.get("confusion", {}).items():
        for pred in (gold, *row):
            if pred not in labels:
                labels.append(pred)
    matrix = [[int(res.get("confusion", {}).get(g, {}).get(p, 0)) for p in labels] for g in labels]
    res["labels"] = labels
    res["matrix"] = matrix
    res["confusion"] = {g: dict(r) for g, r in res.get("confusion", {}).items()}
    res["per_intent"] = {g: dict(r) for g, r in res.get("per_intent", {}).items()}
    return res
