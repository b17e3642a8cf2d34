"""Reconciler simulation benchmark (no weights): does the policy beat the better single source?

Runs eval.simulate over the NIH labels of the shared data and the IU MeSH-indexed reports with each
fixed error profile (eval/simulate.py PROFILES). Rows per profile: F1 of decide() alone and after the
simulated re-ask (resolve), each with the better single source's F1 as its baseline (ratio > 1 means the
policy wins), under 'uncertain = negative' and 'uncertain = positive', and the fraction of (case, finding)
pairs flagged for review. Targets are '>= 1x' (no worse than the better source): a NO is a real finding
about the policy, not a harness failure. quick: NIH + 150 IU reports; full: NIH + all IU reports.
"""

from __future__ import annotations

import sys
from typing import Any


def run(quick: bool = False) -> list[dict[str, Any]]:
    from eval import simulate as sim

    cases = sim.default_cases(iu_limit=150 if quick else None)
    rows: list[dict[str, Any]] = []
    for res in sim.run_all(cases, sim.PROFILES, seed=0):
        name = res["profile"]["name"]
        for key, v in res["verdict"].items():
            variant, treat = key.split("/")
            rows.append({
                "benchmark": "reconciler_sim",
                "metric": f"{name}: {variant} F1 ({treat.replace('_', ' ')})",
                "value": round(v["f1"], 4), "unit": "F1",
                "baseline": round(v["best_single_f1"], 4),
                "ratio": round(v["f1"] / v["best_single_f1"], 3) if v["best_single_f1"] else None,
                "target": ">= 1x",
                "note": f"baseline = {v['best_single']} alone; {res['n_cases']} cases, prevalence {res['prevalence']:.3f}",
            })
        m = res["metrics"]["verified"]
        rows.append({
            "benchmark": "reconciler_sim", "metric": f"{name}: pairs flagged for review (after re-ask)",
            "value": round(m["review_fraction_pairs"], 4), "unit": "fraction",
            "baseline": round(res["metrics"]["reconciled"]["review_fraction_pairs"], 4),
            "ratio": None, "target": None,
            "note": f"baseline = before re-ask; cases with any flag: {m['review_fraction_cases']:.2f}",
        })
    return rows


if __name__ == "__main__":
    from rich.console import Console
    from rich.table import Table

    table = Table(title="reconciler simulation")
    cols = ("metric", "value", "unit", "baseline", "ratio", "target", "note")
    for c in cols:
        table.add_column(c)
    for row in run(quick="--quick" in sys.argv):
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cols))
    Console(width=200).print(table)
