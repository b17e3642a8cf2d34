"""A weight-free check of the reconciliation policy: simulated sources with known error profiles.

Ground truth: the NIH labels of the shared data (nih_cxr14/labels.csv; 14 findings) and the IU X-ray
reports' MeSH major terms mapped onto the vocabulary (knowledge.mesh.mesh_findings). Per case and finding:

- **Simulated VLM** (writes a report): a true finding is stated present with probability
  ``vlm_sensitivity`` (a fraction ``vlm_uncertain`` of those hedged as uncertain), otherwise stated absent
  with probability ``vlm_negates`` or not mentioned; a false finding is stated present with probability
  ``vlm_false_positive`` (hedged likewise), else stated absent with probability ``vlm_negates`` or not
  mentioned. A report with no positive statement says "no finding" (as real reports do).
- **Simulated classifier**: an op-norm score drawn from N(mu_pos, sd_pos) for true findings and
  N(mu_neg, sd_neg) for false ones, clipped to [0, 1], turned into a status by the real
  ``tools.classifier.tool.status_for`` with the real margin. Its heatmap box always exists.
- **Simulated VLM abnormality classification** (off by default; ``vlm_classification``, the CLI's
  ``--with-classification``): as the graph asks RadVLM beside every report, one call per CheXpert label in the
  case's universe, ``task="classification"``: a label the report states (present or hedged) is listed with
  probability ``cls_listed_if_said`` (same model, same image), otherwise with ``cls_listed_if_true`` if true
  (RadVLM lists uncertain findings) or ``cls_listed_if_false``; an unlisted label is absent. "No finding" is
  then the classification's (present when nothing is listed or stated). Its draws come from their own
  generator, so turning it on shifts no other source's draws.
- **Re-ask** (``resolve``): for each conflict the VLM answers the targeted question correctly with probability
  ``reask_accuracy`` (else the wrong answer), or 'uncertain' with probability ``reask_uncertain``; a 'yes'
  comes with a box that overlaps the classifier's heatmap box with probability ``box_overlap_if_true`` /
  ``box_overlap_if_false``.

All calls go through the real ``agents.reconciling.decide.decide`` / ``conflicts`` / ``resolve``. Metrics are
micro precision / recall / F1 over every (case, finding) pair, with 'uncertain' counted as negative and,
separately, as positive, plus the fraction of pairs (and of cases) flagged for review, and per decided
status the fraction of pairs ending in it and flagged with it (``status_fraction_pairs``,
``review_fraction_pairs_by_status``). Two naive fusions
(either source says present / both do) are reported beside the policy for context. The profiles are fixed
up front (see PROFILES) and not tuned to make the policy win; `verdict` says plainly where it loses.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import prf

NIH_FINDINGS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "emphysema", "fibrosis", "hernia",
                "infiltration", "mass", "nodule", "pleural_effusion", "pleural_thickening", "pneumonia", "pneumothorax")
# IU MeSH findings that both simulated sources cover (support devices/fracture/lesion excluded: the
# NIH-trained classifier family does not output them all; the universe is stated in the output).
IU_FINDINGS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "emphysema", "fibrosis", "hernia",
               "infiltration", "lung_opacity", "mass", "nodule", "pleural_effusion", "pleural_thickening",
               "pneumonia", "pneumothorax", "enlarged_cardiomediastinum")


@dataclass(frozen=True)
class SimProfile:
    name: str = "default"
    vlm_sensitivity: float = 0.55
    vlm_false_positive: float = 0.03
    vlm_uncertain: float = 0.10
    vlm_negates: float = 0.30
    clf_mu_pos: float = 0.72
    clf_sd_pos: float = 0.12
    clf_mu_neg: float = 0.42
    clf_sd_neg: float = 0.12
    reask_accuracy: float = 0.80
    reask_uncertain: float = 0.10
    box_overlap_if_true: float = 0.70
    box_overlap_if_false: float = 0.20
    margin: float = 0.10
    # the VLM's abnormality classification beside its report (see the module docstring); assumptions fixed
    # before the first run, not tuned
    vlm_classification: bool = False
    cls_listed_if_said: float = 0.90
    cls_listed_if_true: float = 0.30
    cls_listed_if_false: float = 0.04


# Fixed before the first run; each changes one thing against the default.
PROFILES: tuple[SimProfile, ...] = (
    SimProfile("default"),
    SimProfile("vlm_strong", vlm_sensitivity=0.75, vlm_false_positive=0.02),
    SimProfile("classifier_strong", clf_mu_pos=0.78, clf_mu_neg=0.35),
    SimProfile("classifier_noisy_fp", clf_mu_neg=0.48),
    SimProfile("vlm_overcalls", vlm_sensitivity=0.70, vlm_false_positive=0.10),
    SimProfile("reask_weak", reask_accuracy=0.60, reask_uncertain=0.20),
)


@dataclass
class Case:
    id: str
    positives: frozenset[str]
    universe: tuple[str, ...]


def nih_cases(labels_csv: str | Path) -> list[Case]:
    from knowledge.vocabulary import normalize

    out = []
    with Path(labels_csv).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            pos = {normalize(n) for n in (row.get("labels") or "").split("|") if n.strip()}
            out.append(Case(f"nih:{row['filename']}", frozenset(p for p in pos if p in NIH_FINDINGS), NIH_FINDINGS))
    return out


def iu_cases(limit: int | None = None) -> list[Case]:
    """IU reports with MeSH indexing ('No Indexing' skipped), positives = mapped MeSH major terms."""
    from knowledge.mesh import mesh_findings
    from tools.retrieval.corpus import iu_xray_reports

    out = []
    for r in iu_xray_reports():
        terms = r.metadata.get("mesh_major") or []
        if not terms or "No Indexing" in terms:
            continue
        out.append(Case(f"iu:{r.id}", frozenset(mesh_findings(terms)) & frozenset(IU_FINDINGS), IU_FINDINGS))
        if limit is not None and len(out) >= limit:
            break
    return out


def default_cases(*, shared_data: Path | None = None, iu_limit: int | None = None) -> list[Case]:
    cases: list[Case] = []
    labels = (shared_data or Path("/work/shared/data")) / "nih_cxr14" / "labels.csv"
    if labels.exists():
        cases += nih_cases(labels)
    if iu_limit != 0:
        cases += iu_cases(iu_limit)
    return cases


# ------------------------------------------------------------------------------------------ sources
_BOX_A = (0.20, 0.30, 0.45, 0.60)
_BOX_FAR = (0.60, 0.05, 0.90, 0.25)


def _box(coords: tuple[float, float, float, float], label: str):
    from knowledge.evidence import Box

    return Box(x1=coords[0], y1=coords[1], x2=coords[2], y2=coords[3], label=label)


def simulate_case(case: Case, p: SimProfile, rng: np.random.Generator, cls_rng: np.random.Generator | None = None
                  ) -> tuple[list[Any], list[Any], dict[str, float]]:
    """(vlm calls, classifier calls, classifier scores) for one case. Random draws are made for every
    finding in a fixed order so one profile's change never shifts another source's draws; the
    classification (``p.vlm_classification``) draws from ``cls_rng``."""
    from knowledge.evidence import FindingCall, Status
    from knowledge.vocabulary import display_name
    from tools.classifier.tool import status_for

    vlm, clf, scores = [], [], {}
    for f in case.universe:
        truth = f in case.positives
        u_say, u_hedge, u_neg, z = rng.random(), rng.random(), rng.random(), rng.standard_normal()
        says = u_say < (p.vlm_sensitivity if truth else p.vlm_false_positive)
        name = display_name(f).lower()
        if says:
            st = Status.uncertain if u_hedge < p.vlm_uncertain else Status.present
            text = f"possible {name}" if st is Status.uncertain else f"{name} is present"
            vlm.append(FindingCall(finding=f, status=st, source="vlm", text=text))
        elif u_neg < p.vlm_negates:
            vlm.append(FindingCall(finding=f, status=Status.absent, source="vlm", text=f"no {name}"))
        mu, sd = (p.clf_mu_pos, p.clf_sd_pos) if truth else (p.clf_mu_neg, p.clf_sd_neg)
        s = float(min(1.0, max(0.0, mu + sd * z)))
        scores[f] = s
        clf.append(FindingCall(finding=f, status=status_for(s, p.margin), score=s, score_kind="op_norm",
                               source="classifier", box=_box(_BOX_A, f)))
    if p.vlm_classification:
        return _with_classification(case, p, vlm, cls_rng or np.random.default_rng(0)), clf, scores
    if not any(c.status is Status.present for c in vlm):
        vlm.append(FindingCall(finding="no_finding", status=Status.present, source="vlm",
                               text="no acute cardiopulmonary abnormality"))
    return vlm, clf, scores


def _with_classification(case: Case, p: SimProfile, report: list[Any], rng: np.random.Generator) -> list[Any]:
    """The report's calls plus the simulated classification (one call per CheXpert label in the universe)."""
    from knowledge.evidence import FindingCall, Status
    from knowledge.vocabulary import CHEXPERT_LABELS

    labels = set(CHEXPERT_LABELS.values()) - {"no_finding"}
    said = {c.finding for c in report if c.status in (Status.present, Status.uncertain)}
    listed = []
    for f in case.universe:
        if f not in labels:
            continue
        u = rng.random()
        chance = p.cls_listed_if_said if f in said else p.cls_listed_if_true if f in case.positives else p.cls_listed_if_false
        status = Status.present if u < chance else Status.absent
        listed.append(FindingCall(finding=f, status=status, source="vlm", task="classification"))
    if not any(c.status is Status.present for c in listed):  # RadVLM answers "No Finding" to an empty list
        listed.append(FindingCall(finding="no_finding", status=Status.present, source="vlm", task="classification"))
    return report + listed


def simulated_reask(finding: str, truth: bool, p: SimProfile, rng: np.random.Generator):
    from knowledge.evidence import Evidence, FindingCall, Status

    u_unc, u_ok, u_box = rng.random(), rng.random(), rng.random()
    if u_unc < p.reask_uncertain:
        st = Status.uncertain
    else:
        says_yes = truth if u_ok < p.reask_accuracy else not truth
        st = Status.present if says_yes else Status.absent
    box = None
    if st is Status.present:
        overlap = u_box < (p.box_overlap_if_true if truth else p.box_overlap_if_false)
        box = _box(_BOX_A if overlap else _BOX_FAR, finding)
    call = FindingCall(finding=finding, status=st, source="vlm", box=box, text=f"simulated re-ask: {st.value}")
    return Evidence(tool="vlm", calls=[call], answer=call.text)


# ------------------------------------------------------------------------------------------ run
def _vlm_votes(vcalls: list[Any], policy: Any) -> dict[str, Any]:
    """The simulated VLM as a single source: per finding, its one vote (report and classification collapsed
    by the policy's own rule; with the report alone, simply the report's call)."""
    from agents.reconciling.policy import one_per_source

    by_finding: dict[str, list[Any]] = {}
    for c in vcalls:
        by_finding.setdefault(c.finding, []).append(c)
    return {f: one_per_source(cs, policy)["vlm"] for f, cs in by_finding.items()}


VARIANTS = ("vlm", "classifier", "either", "both", "reconciled", "verified")


def run_profile(cases: Iterable[Case], profile: SimProfile, seed: int = 0) -> dict[str, Any]:
    """Simulate every case under `profile` and score each source and the policy (see module docstring)."""
    from agents.reconciling.decide import Policy, conflicts, decide, resolve
    from knowledge.evidence import Status

    policy = Policy(classifier_margin=profile.margin)
    rng = np.random.default_rng(seed)
    reask_rng = np.random.default_rng([seed, 1])
    cls_rng = np.random.default_rng([seed, 2])
    y: list[int] = []
    pred: dict[str, list[int]] = {v: [] for v in VARIANTS}
    pred_u: dict[str, list[int]] = {v: [] for v in VARIANTS}
    flagged = {"reconciled": 0, "verified": 0}
    # reporting only: how many pairs end in each status, and how many of those are flagged
    by_status: dict[str, dict[str, list[int]]] = {k: {st.value: [0, 0] for st in Status} for k in flagged}
    cases_flagged = {"reconciled": 0, "verified": 0}
    n_cases = n_conflicts = n_resolved = 0
    for case in cases:
        n_cases += 1
        vcalls, ccalls, _ = simulate_case(case, profile, rng, cls_rng)
        # the simulated VLM writes a full report, so (as in the graph) its silence is weak absence
        decisions = decide(vcalls + ccalls, policy, report_sources={"vlm"})
        final = {d.finding: d for d in decisions}
        for d in conflicts(decisions, policy):
            n_conflicts += 1
            new = resolve(d, simulated_reask(d.finding, d.finding in case.positives, profile, reask_rng),
                          classifier_box=_box(_BOX_A, d.finding), policy=policy)
            n_resolved += not new.conflict
            final[d.finding] = new
        recon = {d.finding: d for d in decisions}
        v_st = {f: c.status for f, c in _vlm_votes(vcalls, policy).items()}
        c_st = {c.finding: c.status for c in ccalls}
        any_flag = {"reconciled": False, "verified": False}
        for f in case.universe:
            y.append(int(f in case.positives))
            sts = {"vlm": v_st.get(f), "classifier": c_st.get(f)}
            for name, table in (("reconciled", recon), ("verified", final)):
                d = table.get(f)
                sts[name] = d.status if d else None
                if d is not None:
                    by_status[name][d.status.value][0] += 1
                    by_status[name][d.status.value][1] += int(d.needs_review)
                if d is not None and d.needs_review:
                    flagged[name] += 1
                    any_flag[name] = True
            for name in ("vlm", "classifier", "reconciled", "verified"):
                pred[name].append(int(sts[name] is Status.present))
                pred_u[name].append(int(sts[name] in (Status.present, Status.uncertain)))
            pred["either"].append(pred["vlm"][-1] | pred["classifier"][-1])
            pred["both"].append(pred["vlm"][-1] & pred["classifier"][-1])
            pred_u["either"].append(pred_u["vlm"][-1] | pred_u["classifier"][-1])
            pred_u["both"].append(pred_u["vlm"][-1] & pred_u["classifier"][-1])
        for k in any_flag:
            cases_flagged[k] += any_flag[k]
    n_pairs = len(y)
    metrics = {v: {"uncertain_negative": prf(y, pred[v]), "uncertain_positive": prf(y, pred_u[v])} for v in VARIANTS}
    for k in flagged:
        metrics[k]["review_fraction_pairs"] = flagged[k] / n_pairs if n_pairs else 0.0
        metrics[k]["review_fraction_cases"] = cases_flagged[k] / n_cases if n_cases else 0.0
        # per decided status: fraction of all pairs ending in it, and the fraction of pairs flagged with it
        metrics[k]["status_fraction_pairs"] = {st: n / n_pairs if n_pairs else 0.0 for st, (n, _) in by_status[k].items()}
        metrics[k]["review_fraction_pairs_by_status"] = {
            st: f / n_pairs if n_pairs else 0.0 for st, (_, f) in by_status[k].items()}
    return {"profile": asdict(profile), "seed": seed, "n_cases": n_cases, "n_pairs": n_pairs,
            "prevalence": sum(y) / n_pairs if n_pairs else 0.0, "n_conflicts": n_conflicts,
            "n_resolved_by_reask": n_resolved, "metrics": metrics, "verdict": verdict(metrics)}


def verdict(metrics: dict[str, Any]) -> dict[str, Any]:
    """Does the policy beat the better single source on F1? Per uncertain treatment, for decide() alone
    ('reconciled') and after re-ask ('verified'); names the winner and the margin when it loses."""
    out: dict[str, Any] = {}
    for treat in ("uncertain_negative", "uncertain_positive"):
        best_src = max(("vlm", "classifier"), key=lambda s: metrics[s][treat]["f1"])
        best = metrics[best_src][treat]["f1"]
        for v in ("reconciled", "verified"):
            f1 = metrics[v][treat]["f1"]
            out[f"{v}/{treat}"] = {"f1": f1, "best_single": best_src, "best_single_f1": best,
                                   "delta": f1 - best, "beats_best_single": f1 > best}
    return out


def run_all(cases: list[Case], profiles: Iterable[SimProfile] = PROFILES, seed: int = 0) -> list[dict[str, Any]]:
    return [run_profile(cases, p, seed=seed) for p in profiles]
