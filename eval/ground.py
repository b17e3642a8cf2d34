"""`cxr-agent eval ground`: VLM boxes and classifier heatmap boxes against reference boxes.

For every image with reference boxes and every finding boxed there: the VLM is asked to locate the
finding (locate intent; its boxes score 1.0, it gives no confidence) and the classifier's Grad-CAM
peak box is taken (scored by the classifier's op-norm score for that finding). Metrics per source:
mean best IoU over reference boxes (0 when the source gave no box) and mAP@0.5 over findings
(eval.metrics.average_precision). Boxes are normalised by the image size on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eval.cache import ResultCache
from eval.data import LabelledImage
from eval.metrics import Detection, mean_average_precision

GROUND_SOURCES = ("vlm", "classifier")


def _box_json(b: Any) -> list[float]:
    return [b.x1, b.y1, b.x2, b.y2]


def predict_boxes(study: Any, findings: list[str], *, vlm: Any, classifier: Any) -> dict[str, Any]:
    """{source: {finding: [[x1, y1, x2, y2, score], ...]}, "errors": [...]}."""
    from tools.base import ToolRequest

    rec: dict[str, Any] = {"errors": [], "vlm": {}, "classifier": {}}
    scores: dict[str, float] = {}
    if classifier is not None:
        try:
            ev = classifier.classify(study)
            scores = {c.finding: float(c.score) for c in ev.calls if c.score is not None}
        except Exception as exc:
            rec["errors"].append(f"classifier: {type(exc).__name__}: {exc}")
    for f in findings:
        if vlm is not None:
            ev = vlm.run(ToolRequest(intent="locate", study=study, finding=f))
            if ev.ok:
                boxes = [c.box for c in ev.calls if c.box is not None] or [a.box for a in ev.artifacts if a.box is not None]
                rec["vlm"][f] = [[*_box_json(b), 1.0] for b in boxes]
            else:
                rec["errors"].append(f"vlm locate {f}: {ev.error}")
        if classifier is not None and f in scores:
            try:
                hm = classifier.heatmap(study, f)
                rec["classifier"][f] = [[*_box_json(hm.box), scores[f]]] if hm.box is not None else []
            except Exception as exc:
                rec["errors"].append(f"classifier heatmap {f}: {type(exc).__name__}: {exc}")
    return rec


def run_images(images: list[LabelledImage], *, vlm: Any, classifier: Any, cache: ResultCache,
               load: Callable[[Any], Any], on_image: Callable[[str], None] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for im in images:
        if im.filename in cache:
            out[im.filename] = cache.get(im.filename)
        else:
            findings = sorted({b.label for b in im.boxes if b.label})
            try:
                rec = predict_boxes(load(im.path), findings, vlm=vlm, classifier=classifier)
            except Exception as exc:
                rec = {"errors": [f"load: {type(exc).__name__}: {exc}"]}
            out[im.filename] = rec
            if not rec["errors"]:
                cache.add(im.filename, rec)
        if on_image:
            on_image(im.filename)
    return out


def compute_metrics(images: list[LabelledImage], results: dict[str, Any]) -> dict[str, Any]:
    from knowledge.evidence import Box

    refs: dict[str, dict[str, list[Box]]] = {}
    for im in images:
        for b in im.boxes:
            refs.setdefault(b.label or "?", {}).setdefault(im.filename, []).append(b)
    out: dict[str, Any] = {"n_images": sum(1 for im in images if im.boxes and im.filename in results),
                           "n_reference_boxes": sum(len(im.boxes) for im in images), "sources": {}}
    for source in GROUND_SOURCES:
        dets: dict[str, list[Detection]] = {}
        ious: list[float] = []
        per_iou: dict[str, list[float]] = {}
        for im in images:
            rec = results.get(im.filename)
            if not rec or source not in rec:
                continue
            for f, boxes in rec[source].items():
                for x1, y1, x2, y2, s in boxes:
                    dets.setdefault(f, []).append(Detection(im.filename, Box(x1=x1, y1=y1, x2=x2, y2=y2), s))
            for ref in im.boxes:
                preds = rec[source].get(ref.label or "?", [])
                best = max((ref.iou(Box(x1=p[0], y1=p[1], x2=p[2], y2=p[3])) for p in preds), default=0.0)
                ious.append(best)
                per_iou.setdefault(ref.label or "?", []).append(best)
        mean_ap, per_ap = mean_average_precision(dets, refs, 0.5)
        out["sources"][source] = {
            "mean_iou": sum(ious) / len(ious) if ious else None,
            "map50": mean_ap,
            "per_finding": {f: {"n": len(v), "mean_iou": sum(v) / len(v), "ap50": per_ap.get(f)} for f, v in per_iou.items()},
        }
    return out
