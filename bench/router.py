"""Router accuracy on the held-out sentences (per intent, confusion matrix) and routing latency.

Held-out: eval/router_heldout.jsonl (97 sentences written before any tuning of the semantic router; never
tuned on). Scored for the semantic router (agents/routing/semantic.py: rules + classifier over MiniLM embeddings) and,
in the same run, the rules alone (agents.routing.rules.route) as the baseline. The tuning sets are
eval/router_cases.jsonl (the rules' labelled set) and eval/router_tuning.jsonl (paraphrases and clinician
phrasing written for the semantic router); their accuracies are rows too, but not held-out numbers.

Latency: wall time per route() call over the held-out sentences, p50 split by what decided the turn
(rule-decided: no embedding; embedding consulted). The embedder is loaded before timing.
`python -m bench.router` prints the per-intent table and the confusion matrix.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from agents.routing import rules
from agents.routing.semantic import default_classifier, route_semantic, rule_decided
from eval.route_eval import evaluate_cases, load_cases

HELDOUT = Path(__file__).resolve().parent.parent / "eval" / "router_heldout.jsonl"
TUNING = Path(__file__).resolve().parent.parent / "eval" / "router_tuning.jsonl"
TARGET = 0.95


def scores() -> dict[str, Any]:
    default_classifier()
    return {"semantic": evaluate_cases(HELDOUT, router=route_semantic),
            "rules": evaluate_cases(HELDOUT, router=rules.route),
            "tuning": evaluate_cases(None, router=route_semantic),
            "tuning_h": evaluate_cases(TUNING, router=route_semantic)}


def latency(repeat: int = 3) -> dict[str, list[float]]:
    """ms per route_semantic call on the held-out texts, by who decided the turn."""
    default_classifier()
    out: dict[str, list[float]] = {"rules": [], "embedding": []}
    for case in load_cases(HELDOUT) * repeat:
        kw = {"has_image": bool(case.get("has_image", True)), "has_history": bool(case.get("has_history", False))}
        t0 = time.perf_counter()
        route_semantic(case["text"], **kw)
        ms = (time.perf_counter() - t0) * 1000
        decided = rule_decided(rules._clean(case["text"]), rules.route(case["text"], **kw))
        out["rules" if decided else "embedding"].append(ms)
    return out


def run(quick: bool = False) -> list[dict]:
    res = scores()
    sem, base, tune = res["semantic"], res["rules"], res["tuning"]
    lat = latency(1 if quick else 3)
    rows = [{"benchmark": "router", "metric": "heldout_accuracy", "value": round(sem["accuracy"], 4), "unit": "acc",
             "baseline": round(base["accuracy"], 4), "ratio": round(sem["accuracy"] / base["accuracy"], 4)
             if base["accuracy"] else None, "target": f">= {TARGET}",
             "note": f"eval/router_heldout.jsonl, {sem['n']} sentences, intent and finding both right; "
                     f"baseline = rules only; intent-only accuracy {sem['intent_accuracy']:.3f}"}]
    for intent, row in sem["per_intent"].items():
        b = base["per_intent"].get(intent, {})
        rows.append({"benchmark": "router", "metric": f"heldout_acc[{intent}]",
                     "value": round(row["correct"] / row["n"], 4), "unit": "acc",
                     "baseline": round(b.get("correct", 0) / b["n"], 4) if b.get("n") else None, "ratio": None,
                     "target": None, "note": f"n={row['n']}; predicted: {sem['confusion'].get(intent, {})}"})
    rows.append({"benchmark": "router", "metric": "tuning_accuracy", "value": round(tune["accuracy"], 4),
                 "unit": "acc", "baseline": None, "ratio": None, "target": None,
                 "note": f"eval/router_cases.jsonl ({tune['n']}), tuned on: not a held-out number"})
    th = res["tuning_h"]
    rows.append({"benchmark": "router", "metric": "tuning_accuracy[paraphrases]", "value": round(th["accuracy"], 4),
                 "unit": "acc", "baseline": None, "ratio": None, "target": None,
                 "note": f"eval/router_tuning.jsonl ({th['n']}: paraphrases, clinician phrasing), tuned on"})
    for who, target in (("rules", "< 5"), ("embedding", "< 40")):
        ms = lat[who]
        rows.append({"benchmark": "router", "metric": f"p50_ms[{who}-decided]",
                     "value": round(statistics.median(ms), 3) if ms else None, "unit": "ms", "baseline": None,
                     "ratio": None, "target": target,
                     "note": f"{len(ms)} calls; p95 {sorted(ms)[int(0.95 * (len(ms) - 1))]:.2f} ms" if ms else "none"})
    return rows


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    res = scores()
    sem = res["semantic"]
    console = Console(width=160)
    console.print(f"HELD-OUT (eval/router_heldout.jsonl, n={sem['n']}): semantic {sem['accuracy']:.3f} "
                  f"(intent {sem['intent_accuracy']:.3f}); rules only {res['rules']['accuracy']:.3f}; "
                  f"tuning sets {res['tuning']['accuracy']:.3f} (router_cases), {res['tuning_h']['accuracy']:.3f} "
                  "(router_tuning)")
    t = Table(title="per intent (held-out)")
    for col in ("intent", "n", "semantic", "rules"):
        t.add_column(col)
    for intent, row in sem["per_intent"].items():
        b = res["rules"]["per_intent"].get(intent, {"n": 1, "correct": 0})
        t.add_row(intent, str(row["n"]), f"{row['correct'] / row['n']:.3f}", f"{b['correct'] / b['n']:.3f}")
    console.print(t)
    m = Table(title="confusion (held-out, semantic): gold rows x predicted columns")
    m.add_column("gold \\ pred")
    for label in sem["labels"]:
        m.add_column(label[:10])
    for label, row in zip(sem["labels"], sem["matrix"], strict=True):
        m.add_row(label, *(str(v) for v in row))
    console.print(m)


if __name__ == "__main__":
    main()
