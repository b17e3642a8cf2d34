"""What a results file says: accuracy with bootstrap 95% CIs, coverage, letter bias, calibration.

The denominators are fixed on purpose: **accuracy** counts every question of the run (abstentions,
skipped non-radiograph figures and errors are wrong); **coverage** is the share answered; **selective
accuracy** is accuracy over the answered ones. The **bias floor** is the accuracy of always answering
the gold answers' most common letter, computed from the same questions: a number below it says
nothing about the images.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

BOOTSTRAP = 2000


def bootstrap_ci(correct: list[bool], *, n_boot: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``correct`` over resampled questions."""
    if not correct:
        return (0.0, 0.0)
    x = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (round(float(lo), 4), round(float(hi), 4))


def _acc(rows: list[dict[str, Any]]) -> dict[str, Any]:
    correct = [r.get("letter") is not None and r.get("letter") == r.get("gold") for r in rows]
    answered = [r for r in rows if r.get("letter") is not None]
    lo, hi = bootstrap_ci(correct)
    return {"n": len(rows), "correct": int(sum(correct)), "accuracy": round(sum(correct) / len(rows), 4) if rows else 0.0,
            "ci95": [lo, hi], "answered": len(answered),
            "coverage": round(len(answered) / len(rows), 4) if rows else 0.0,
            "selective_accuracy": round(sum(r["letter"] == r["gold"] for r in answered) / len(answered), 4)
            if answered else None}


def calibration(rows: list[dict[str, Any]], bins: int = 5) -> dict[str, Any]:
    """Reliability of the reconciled confidence on questions the tools decided: per bin, mean
    confidence vs accuracy, and the expected calibration error."""
    pts = [(float(r["confidence"]), r["letter"] == r["gold"]) for r in rows
           if r.get("decided_by") == "tools" and r.get("confidence") is not None]
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = [(c, ok) for c, ok in pts if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if sel:
            out.append({"lo": lo, "hi": hi, "n": len(sel), "confidence": round(float(np.mean([c for c, _ in sel])), 4),
                        "accuracy": round(float(np.mean([ok for _, ok in sel])), 4)})
    ece = sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in out) / len(pts) if pts else None
    return {"n": len(pts), "bins": out, "ece": None if ece is None else round(ece, 4)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report shows, computed from the rows alone."""
    if not rows:
        raise ValueError("no results: the file holds no rows")
    status = Counter(r.get("status") for r in rows)
    gold = Counter(r["gold"] for r in rows)
    pred = Counter(r["letter"] for r in rows if r.get("letter") is not None)
    common, common_n = gold.most_common(1)[0]
    cats: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        for c in r.get("categories") or ["(none)"]:
            cats.setdefault(c, []).append(r)
    confusion: dict[str, dict[str, int]] = {}
    for r in rows:
        confusion.setdefault(r["gold"], Counter())[r.get("letter") or "-"] += 1  # type: ignore[index]
    tools = Counter()
    for r in rows:
        tools.update(r.get("tools_called") or {})
    cfg = rows[0].get("config") or {}
    return {
        "config": cfg,
        "overall": _acc(rows),
        "status": {k: status.get(k, 0) for k in ("answered", "abstained", "skipped", "error")},
        "decided_by": dict(Counter(r.get("decided_by") for r in rows if r.get("decided_by"))),
        "categories": {c: _acc(rs) for c, rs in sorted(cats.items())},
        "gold_letters": dict(sorted(gold.items())),
        "predicted_letters": dict(sorted(pred.items())),
        "bias_floor": {"letter": common, "accuracy": round(common_n / len(rows), 4)},
        "confusion": {g: dict(sorted(v.items())) for g, v in sorted(confusion.items())},
        "calibration": calibration(rows),
        "tool_calls": dict(tools),
        "threads": {"distinct": len({r["thread_id"] for r in rows if r.get("thread_id")}),
                    "answered_questions": sum(1 for r in rows if r.get("thread_id"))},
    }


def arm_name(summary: dict[str, Any]) -> str:
    """How a report names one run: its tools and, when shared, its threads."""
    cfg = summary.get("config") or {}
    name = "+".join(cfg.get("tools") or []) or "(no tools)"
    return name + (" [thread per case]" if cfg.get("thread_per") == "case" else "")
