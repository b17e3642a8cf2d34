"""Metrics for the evaluation harness: library calls where the field has them, small clear code where not.

AUROC / F1 / precision / recall: scikit-learn. BLEU-4: sacrebleu. ROUGE-L: rouge-score. IoU: Box.iou
(knowledge.evidence). Detection AP@0.5 has no installed library (pycocotools/torchmetrics are absent), so
`average_precision` implements the PASCAL VOC all-point interpolated AP, with a hand-checked test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from knowledge.evidence import Box


def auroc(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC AUC (sklearn), or None when only one class is present (AUROC is undefined then)."""
    if len(set(int(y) for y in y_true)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(list(y_true), list(scores)))


def prf(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Precision, recall, F1 of the positive class (sklearn; 0.0 where undefined) plus the counts."""
    from sklearn.metrics import precision_recall_fscore_support

    yt, yp = [int(y) for y in y_true], [int(y) for y in y_pred]
    if not yt:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0, "n": 0}
    p, r, f, _ = precision_recall_fscore_support(yt, yp, average="binary", pos_label=1, zero_division=0)
    tp = sum(1 for a, b in zip(yt, yp, strict=True) if a == 1 and b == 1)
    fp = sum(1 for a, b in zip(yt, yp, strict=True) if a == 0 and b == 1)
    fn = sum(1 for a, b in zip(yt, yp, strict=True) if a == 1 and b == 0)
    return {"precision": float(p), "recall": float(r), "f1": float(f), "tp": tp, "fp": fp, "fn": fn, "n": len(yt)}


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two normalised boxes (Box.iou, the project's one definition)."""
    return a.iou(b)


@dataclass(frozen=True)
class Detection:
    image: str
    box: Box
    score: float = 1.0


def average_precision(detections: Iterable[Detection], references: dict[str, list[Box]],
                      iou_threshold: float = 0.5) -> float | None:
    """PASCAL VOC (2010+) all-point AP of one class: detections sorted by score (stable), each matched
    greedily to the unmatched reference box of its image with the highest IoU >= threshold; a second
    detection of an already-matched box is a false positive. None when there is no reference box."""
    n_ref = sum(len(v) for v in references.values())
    if n_ref == 0:
        return None
    dets = sorted(detections, key=lambda d: -d.score)
    used: dict[str, set[int]] = {k: set() for k in references}
    tp: list[int] = []
    for d in dets:
        refs = references.get(d.image, [])
        best, best_i = 0.0, -1
        for i, r in enumerate(refs):
            v = d.box.iou(r)
            if v > best:
                best, best_i = v, i
        if best_i >= 0 and best >= iou_threshold and best_i not in used.setdefault(d.image, set()):
            used[d.image].add(best_i)
            tp.append(1)
        else:
            tp.append(0)
    if not dets:
        return 0.0
    precisions, recalls = [], []
    ctp = 0
    for k, t in enumerate(tp, 1):
        ctp += t
        precisions.append(ctp / k)
        recalls.append(ctp / n_ref)
    # precision envelope (monotone non-increasing from the right), then area under the step curve
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    ap, prev_r = 0.0, 0.0
    for p, r in zip(precisions, recalls, strict=True):
        if r > prev_r:
            ap += (r - prev_r) * p
            prev_r = r
    return ap


def mean_average_precision(detections: dict[str, list[Detection]], references: dict[str, dict[str, list[Box]]],
                           iou_threshold: float = 0.5) -> tuple[float | None, dict[str, float]]:
    """mAP over the classes (findings) that have reference boxes: (mean, {class: AP})."""
    per: dict[str, float] = {}
    for cls, refs in references.items():
        ap = average_precision(detections.get(cls, []), refs, iou_threshold)
        if ap is not None:
            per[cls] = ap
    return (sum(per.values()) / len(per) if per else None), per


def bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (sacrebleu defaults: 13a tokenisation, exp smoothing), on a 0-100 scale."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, with stemming), 0-1."""
    from rouge_score import rouge_scorer

    if not hypotheses:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    vals = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references, strict=True)]
    return float(sum(vals) / len(vals))
