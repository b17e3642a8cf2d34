"""A weight-free check of the change rule: simulated pairs of films with known changes and sources with
stated error models, decided by the real ``agents.comparing.decide.compare`` beside each source alone.

Truth, per simulated pair and finding (``FINDINGS``), drawn from ``CHANGE_MIX`` (fixed up front): stable and
absent on both films, stable and present on both, new, resolved, worse or improved. Presence on each film
follows from it (worse and improved are present on both).

Error models (``ChangeProfile``; one changes one thing against the default):
- **classifier**, per film alone: an op-norm score from N(mu_pos, sd) where the finding is present, N(mu_neg,
  sd) where absent, clipped to [0, 1], its status by the real ``status_for`` and margin (as eval/simulate.py).
  It knows nothing of severity, so worse / improved look like "still there" to it.
- **report writer that cannot compare** (``vlm``), per film alone: states a present finding with probability
  ``writer_sensitivity``, an absent one as present with ``writer_false_positive``; otherwise states it absent
  with ``writer_negates`` or says nothing.
- **comparing VLM** (``vlm-compare``, ``compares_priors``), reading both films: silent with ``cmp_silent``;
  otherwise states the true change with ``cmp_accuracy``, else one of the other four uniformly. The default
  0.65 is of the order MedGemma 1.5 reports on MS-CXR-T (65.7 macro accuracy, three classes): an assumption,
  not a measurement of it.

Variants scored on every (pair, finding): each source through the rule alone (``classifier``, ``comparer``),
each source at face value (``comparer_raw``: its statement as said; ``writer_raw``: the change its two reads
imply), and the ``policy`` (all three through the rule). Metrics: accuracy (cannot_compare and silence count
as wrong), coverage (a change decided), accuracy where decided, recall of true changes, and the false-change
rate (a truly stable finding called new / worse / improved / resolved), plus the fraction flagged for review.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FINDINGS = ("cardiomegaly", "consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
# (truth, present before, present now, probability): fixed before the first run.
CHANGE_MIX = (("stable", False, False, 0.55), ("stable", True, True, 0.15), ("new", False, True, 0.08),
              ("resolved", True, False, 0.07), ("worse", True, True, 0.08), ("improved", True, True, 0.07))
CHANGED = frozenset({"new", "worse", "improved", "resolved"})
VARIANTS = ("classifier", "comparer", "comparer_raw", "writer_raw", "policy")
CLASSIFIER, WRITER, COMPARER = "classifier", "vlm", "vlm-compare"


@dataclass(frozen=True)
class ChangeProfile:
    name: str = "default"
    clf_mu_pos: float = 0.72
    clf_mu_neg: float = 0.42
    clf_sd: float = 0.12
    margin: float = 0.10
    writer_sensitivity: float = 0.55
    writer_false_positive: float = 0.03
    writer_negates: float = 0.30
    cmp_accuracy: float = 0.65
    cmp_silent: float = 0.20


PROFILES = (
    ChangeProfile(),
    ChangeProfile(name="weak_comparer", cmp_accuracy=0.45),
    ChangeProfile(name="strong_comparer", cmp_accuracy=0.85),
    ChangeProfile(name="sharp_classifier", clf_mu_pos=0.80, clf_mu_neg=0.35, clf_sd=0.08),
    ChangeProfile(name="no_comparer", cmp_silent=1.0),
)


def _film_calls(present: dict[str, bool], p: ChangeProfile, rng: np.random.Generator) -> list[Any]:
    from knowledge.evidence import FindingCall, Status
    from tools.classifier.tool import status_for

    calls = []
    for f in FINDINGS:
        u_say, u_neg, z = rng.random(), rng.random(), rng.standard_normal()
        truth = present[f]
        s = float(min(1.0, max(0.0, (p.clf_mu_pos if truth else p.clf_mu_neg) + p.clf_sd * z)))
        calls.append(FindingCall(finding=f, status=status_for(s, p.margin), score=s, score_kind="op_norm", source=CLASSIFIER))
        if u_say < (p.writer_sensitivity if truth else p.writer_false_positive):
            calls.append(FindingCall(finding=f, status=Status.present, source=WRITER, text=f"{f} is present"))
        elif u_neg < p.writer_negates:
            calls.append(FindingCall(finding=f, status=Status.absent, source=WRITER, text=f"no {f}"))
    return calls


def _implied(before: Any, now: Any) -> str | None:
    """The change a writer's two reads imply at face value (present/absent only)."""
    from knowledge.evidence import Status

    if before is None or now is None or Status.uncertain in (before, now):
        return None
    if before == now:
        return "stable"
    return "new" if now == Status.present else "resolved"


def simulate_pair(p: ChangeProfile, rng: np.random.Generator) -> dict[str, Any]:
    """One pair: its truth per finding and every variant's change per finding (plus review flags)."""
    from agents.comparing.decide import ChangeCall, StudyRead, compare
    from agents.reconciling.decide import decide
    from knowledge.evidence import Evidence

    weights = np.array([w for *_, w in CHANGE_MIX])
    picks = [CHANGE_MIX[i] for i in rng.choice(len(CHANGE_MIX), size=len(FINDINGS), p=weights / weights.sum())]
    truth = {f: c[0] for f, c in zip(FINDINGS, picks, strict=True)}
    before_calls = _film_calls({f: c[1] for f, c in zip(FINDINGS, picks, strict=True)}, p, rng)
    now_calls = _film_calls({f: c[2] for f, c in zip(FINDINGS, picks, strict=True)}, p, rng)
    stated: list[ChangeCall] = []
    for f in FINDINGS:
        u_silent, u_right, pick = rng.random(), rng.random(), int(rng.integers(4))
        if u_silent < p.cmp_silent:
            continue
        wrong = [c for c in ("new", "worse", "stable", "improved", "resolved") if c != truth[f]]
        stated.append(ChangeCall(finding=f, change=truth[f] if u_right < p.cmp_accuracy else wrong[pick], source=COMPARER))

    def study(sid: str, calls: list[Any]) -> StudyRead:
        ev = [Evidence(tool=CLASSIFIER, calls=[c for c in calls if c.source == CLASSIFIER]),
              Evidence(tool=WRITER, calls=[c for c in calls if c.source == WRITER], report="simulated")]
        return StudyRead(study_id=sid, view="PA", decisions=decide(calls, report_sources=[WRITER]), evidence=ev)

    prior, current = study("prior", before_calls), study("current", now_calls)
    runs = {
        "classifier": compare(prior, current, score_sources=[CLASSIFIER], findings=FINDINGS),
        "comparer": compare(prior, current, change_calls=stated, findings=FINDINGS),
        "policy": compare(prior, current, score_sources=[CLASSIFIER], statement_sources=[WRITER],
                          change_calls=stated, findings=FINDINGS),
    }
    out: dict[str, dict[str, str | None]] = {v: {d.finding: d.change for d in ds} for v, ds in runs.items()}
    out["comparer_raw"] = {f: next((c.change for c in stated if c.finding == f), None) for f in FINDINGS}
    out["writer_raw"] = {}
    for f in FINDINGS:
        said = [{c.status for c in calls if c.source == WRITER and c.finding == f} for calls in (before_calls, now_calls)]
        out["writer_raw"][f] = _implied(*(next(iter(s)) if len(s) == 1 else None for s in said))
    review = {d.finding: d.needs_review for d in runs["policy"]}
    return {"truth": truth, "predicted": out, "review": review}


def _metrics(rows: list[tuple[str, str | None]]) -> dict[str, Any]:
    n = len(rows)
    decided = [(t, g) for t, g in rows if g not in (None, "cannot_compare")]
    changed = [(t, g) for t, g in rows if t in CHANGED]
    stable = [(t, g) for t, g in rows if t == "stable"]
    return {
        "accuracy": sum(t == g for t, g in rows) / n if n else None,
        "coverage": len(decided) / n if n else None,
        "accuracy_decided": sum(t == g for t, g in decided) / len(decided) if decided else None,
        "change_recall": sum(t == g for t, g in changed) / len(changed) if changed else None,
        "false_change_rate": sum(g in CHANGED for _, g in stable) / len(stable) if stable else None,
        "n": n,
    }


def run_profile(profile: ChangeProfile, n_pairs: int = 300, seed: int = 0) -> dict[str, Any]:
    """Every variant's metrics on ``n_pairs`` simulated pairs (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[str, str | None]]] = {v: [] for v in VARIANTS}
    flagged = 0
    truths: dict[str, int] = {}
    for _ in range(n_pairs):
        res = simulate_pair(profile, rng)
        for f, t in res["truth"].items():
            truths[t] = truths.get(t, 0) + 1
            flagged += int(res["review"][f])
            for v in VARIANTS:
                rows[v].append((t, res["predicted"][v][f]))
    metrics = {v: _metrics(r) for v, r in rows.items()}
    singles = {v: metrics[v]["accuracy"] for v in ("classifier", "comparer", "comparer_raw", "writer_raw")}
    best = max(singles, key=lambda k: singles[k] or 0.0)
    return {"profile": asdict(profile), "n_pairs": n_pairs, "n_labels": sum(truths.values()), "truths": truths,
            "metrics": metrics, "review_fraction": flagged / max(1, sum(truths.values())),
            "verdict": {"policy_accuracy": metrics["policy"]["accuracy"], "best_single": best,
                        "best_single_accuracy": singles[best],
                        "beats_best_single": (metrics["policy"]["accuracy"] or 0.0) > (singles[best] or 0.0)}}


def run_all(profiles: Iterable[ChangeProfile] = PROFILES, n_pairs: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    return [run_profile(p, n_pairs=n_pairs, seed=seed) for p in profiles]
