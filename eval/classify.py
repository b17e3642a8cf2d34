"""`cxr-agent eval classify`: per-finding AUROC and F1 of the classifier, the VLM (yes/no answers and
report-derived labels) and the reconciled decisions, over a labelled image folder.

Per image (cached, resumable): the classifier's op-norm scores (ClassifierTool.classify_batch), the
VLM's yes/no answer per finding (finding_question intent), the labels of the VLM's report
(knowledge.labeler.label_report), the reconciler's decisions over classifier + report calls (as the
graph's report turn does), and those decisions after the targeted re-ask of each conflict
(VLMTool.verify_finding + reconciler.resolve with the classifier heatmap box), as the graph's verify node does.

Scores for AUROC: classifier op-norm score; VLM present 1 / uncertain 0.5 / absent or silent 0;
decisions 0.5 +/- confidence/2 (present +, absent -, uncertain 0.5). F1 is at each source's own
operating point: 'present' is positive, 'uncertain' negative (uncertain-as-positive F1 is reported beside).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from eval.cache import ResultCache
from eval.data import LabelledImage
from eval.metrics import auroc, prf

SOURCES = ("classifier", "vlm_yesno", "vlm_report", "reconciled", "verified")
_VALUE = {"present": 1.0, "uncertain": 0.5, "absent": 0.0}


def _decision_record(decisions: Iterable[Any]) -> dict[str, list[Any]]:
    return {d.finding: [d.status.value, float(d.confidence), bool(d.needs_review)] for d in decisions}


def predict_one(study: Any, classifier_ev: Any, *, vlm: Any, classifier: Any, findings: list[str],
                policy: Any, vlm_questions: bool = True, verify: bool = True) -> dict[str, Any]:
    """Everything the metrics need for one image, as plain JSON (see module docstring)."""
    from agents.reconciling.decide import conflicts, decide, resolve
    from knowledge.labeler import label_report
    from tools.base import ToolRequest

    rec: dict[str, Any] = {"errors": []}
    ccalls = []
    if classifier_ev is not None:
        if classifier_ev.ok:
            ccalls = list(classifier_ev.calls)
            rec["classifier"] = {c.finding: [c.status.value, c.score] for c in ccalls}
        else:
            rec["errors"].append(f"classifier: {classifier_ev.error}")
    vcalls = []
    if vlm is not None:
        if vlm_questions:
            answers: dict[str, str] = {}
            for f in findings:
                ev = vlm.run(ToolRequest(intent="finding_question", study=study, finding=f))
                if not ev.ok:
                    rec["errors"].append(f"vlm question {f}: {ev.error}")
                    continue
                st = next((c.status.value for c in ev.calls if c.finding == f), "uncertain")
                answers[f] = st
            rec["vlm_yesno"] = answers
        ev = vlm.run(ToolRequest(intent="report", study=study))
        if ev.ok and ev.report is not None:
            rec["report"] = ev.report
            vcalls = [c.model_copy(update={"source": "vlm"}) for c in label_report(ev.report, source="vlm")]
            rec["vlm_report"] = {c.finding: c.status.value for c in vcalls}
        else:
            rec["errors"].append(f"vlm report: {ev.error}")
    if ccalls or vcalls:
        # as the graph does for a report turn: a full report's silence is weak evidence of absence
        decisions = decide(ccalls + vcalls, policy, report_sources={"vlm"} if "report" in rec else ())
        rec["reconciled"] = _decision_record(decisions)
        if verify and vlm is not None:
            final = {d.finding: d for d in decisions}
            for d in conflicts(decisions, policy):
                box = None
                if classifier is not None:
                    try:
                        box = classifier.heatmap(study, d.finding).box
                    except Exception as exc:  # a finding the classifier was not trained on: no box
                        rec["errors"].append(f"classifier heatmap {d.finding}: {exc}")
                final[d.finding] = resolve(d, vlm.verify_finding(study, d.finding), classifier_box=box, policy=policy)
            rec["verified"] = _decision_record(final.values())
    return rec


def run_images(images: list[LabelledImage], *, classifier: Any, vlm: Any, policy: Any, cache: ResultCache,
               findings: list[str], load: Callable[[Any], Any], batch_size: int = 8, vlm_questions: bool = True,
               verify: bool = True, on_image: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Predict every image not yet in `cache` (in classifier batches), appending each result as it is done.
    Returns {filename: record} for all images (cached + new). Load or tool errors are recorded per image,
    never raised; records with errors are not cached, so a rerun retries them."""
    out: dict[str, Any] = {}
    todo = []
    for im in images:
        if im.filename in cache:
            out[im.filename] = cache.get(im.filename)
            if on_image:
                on_image(im.filename)
        else:
            todo.append(im)
    for start in range(0, len(todo), max(1, batch_size)):
        chunk = todo[start : start + max(1, batch_size)]
        studies: list[tuple[LabelledImage, Any]] = []
        for im in chunk:
            try:
                studies.append((im, load(im.path)))
            except Exception as exc:
                out[im.filename] = {"errors": [f"load: {type(exc).__name__}: {exc}"]}
                if on_image:
                    on_image(im.filename)
        cevs: list[Any] = [None] * len(studies)
        if classifier is not None and studies:
            try:
                cevs = classifier.classify_batch([s for _, s in studies], batch_size=batch_size)
            except Exception as exc:
                from knowledge.evidence import Evidence

                cevs = [Evidence.failure("classifier", f"{type(exc).__name__}: {exc}")] * len(studies)
        for (im, study), cev in zip(studies, cevs, strict=True):
            t0 = time.perf_counter()
            rec = predict_one(study, cev, vlm=vlm, classifier=classifier, findings=findings, policy=policy,
                              vlm_questions=vlm_questions, verify=verify)
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            out[im.filename] = rec
            if not rec["errors"]:
                cache.add(im.filename, rec)
            if on_image:
                on_image(im.filename)
    return out


def _score(source: str, entry: Any) -> tuple[float, str]:
    """(score for AUROC, status) of one source's entry for one finding (missing -> absent, score 0)."""
    if entry is None:
        return 0.0, "absent"
    if source == "classifier":
        status, score = entry
        return float(score), status
    if source in ("reconciled", "verified"):
        status, conf, _ = entry
        return {"present": 0.5 + conf / 2, "absent": 0.5 - conf / 2}.get(status, 0.5), status
    return _VALUE[entry], entry


def compute_metrics(images: list[LabelledImage], results: dict[str, Any], findings: list[str]) -> dict[str, Any]:
    """Per source and finding: n, positives, AUROC (None unless both classes present), P/R/F1 (uncertain as
    negative) and F1 with uncertain as positive; per source: macro AUROC / F1 and micro F1; review fraction."""
    out: dict[str, Any] = {"sources": {}, "n_images": 0, "n_errors": 0}
    usable = [(im, results[im.filename]) for im in images if im.filename in results]
    out["n_images"] = len(usable)
    out["n_errors"] = sum(1 for _, r in usable if r.get("errors"))
    for source in SOURCES:
        per: dict[str, Any] = {}
        all_t, all_p, all_pu = [], [], []
        flagged = total = 0
        for f in findings:
            y, s, pred, pred_u = [], [], [], []
            for im, rec in usable:
                t = im.truth(f)
                block = rec.get(source)
                if t is None or block is None:
                    continue
                entry = block.get(f)
                score, status = _score(source, entry)
                y.append(t)
                s.append(score)
                pred.append(int(status == "present"))
                pred_u.append(int(status in ("present", "uncertain")))
                if source in ("reconciled", "verified"):
                    total += 1
                    flagged += bool(entry and entry[2])
            if not y:
                continue
            m = prf(y, pred)
            per[f] = {"n": len(y), "positives": sum(y), "auroc": auroc(y, s), **m,
                      "f1_uncertain_positive": prf(y, pred_u)["f1"]}
            all_t += y
            all_p += pred
            all_pu += pred_u
        if not per:
            continue
        aucs = [v["auroc"] for v in per.values() if v["auroc"] is not None]
        f1s = [v["f1"] for v in per.values() if v["positives"] > 0]
        summary = {"macro_auroc": sum(aucs) / len(aucs) if aucs else None,
                   "macro_f1": sum(f1s) / len(f1s) if f1s else None,
                   "micro": prf(all_t, all_p), "micro_f1_uncertain_positive": prf(all_t, all_pu)["f1"]}
        if total:
            summary["review_fraction"] = flagged / total
        out["sources"][source] = {"summary": summary, "per_finding": per}
    return out
