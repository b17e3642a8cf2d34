"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from eval.metrics import Detection, auroc, average_precision, bleu4, iou, mean_average_precision, prf, rouge_l
from knowledge.evidence import Box


def test_iou_hand_value():
    a = Box(x1=0.0, y1=0.0, x2=0.5, y2=0.5)
    b = Box(x1=0.25, y1=0.25, x2=0.75, y2=0.75)
    # intersection 0.25*0.25 = 0.0625; union 0.25 + 0.25 - 0.0625 = 0.4375
    assert iou(a, b) == pytest.approx(0.0625 / 0.4375)
    assert iou(a, Box(x1=0.6, y1=0.6, x2=0.9, y2=0.9)) == 0.0
    assert iou(a, a) == pytest.approx(1.0)


def test_ap50_three_box_toy_case():
    r1 = Box(x1=0.1, y1=0.1, x2=0.4, y2=0.4)
    r2 = Box(x1=0.5, y1=0.5, x2=0.9, y2=0.9)
    refs = {"a": [r1], "b": [r2]}
    dets = [
        Detection("a", Box(x1=0.1, y1=0.1, x2=0.4, y2=0.42), 0.9),  # TP (IoU ~0.94)
        Detection("b", Box(x1=0.0, y1=0.0, x2=0.2, y2=0.2), 0.8),  # FP (no overlap)
        Detection("b", Box(x1=0.52, y1=0.5, x2=0.9, y2=0.9), 0.7),  # TP
    ]
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> envelope 1, 2/3, 2/3 -> AP = 0.5*1 + 0.5*2/3
    assert average_precision(dets, refs) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a duplicate of an already-matched box is a false positive; a miss leaves recall short
    dup = [dets[0], Detection("a", r1, 0.85)]
    assert average_precision(dup, refs) == pytest.approx(0.5)
    assert average_precision([], refs) == 0.0
    assert average_precision(dets, {}) is None
    mean, per = mean_average_precision({"x": dets, "y": dup}, {"x": refs, "y": refs})
    assert per == pytest.approx({"x": 0.5 + 1 / 3, "y": 0.5})
    assert mean == pytest.approx((0.5 + 1 / 3 + 0.5) / 2)


def test_iou_threshold_is_inclusive_and_used():
    ref = {"a": [Box(x1=0.0, y1=0.0, x2=0.4, y2=0.4)]}
    half = Detection("a", Box(x1=0.0, y1=0.0, x2=0.4, y2=0.2))  # IoU exactly 0.5
    assert average_precision([half], ref, 0.5) == pytest.approx(1.0)
    assert average_precision([half], ref, 0.51) == 0.0


def test_f1_and_counts():
    m = prf([1, 1, 0, 0], [1, 0, 1, 0])
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert prf([0, 0], [0, 0])["f1"] == 0.0


def test_auroc_tiny_case_and_single_class():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ranked right
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([1, 1], [0.2, 0.3]) is None


def test_bleu_and_rouge_use_the_libraries():
    hyp = ["there is a small left pleural effusion"]
    assert bleu4(hyp, hyp) == pytest.approx(100.0)
    assert rouge_l(hyp, hyp) == pytest.approx(1.0)
    assert rouge_l(["heart size normal"], ["small left pleural effusion"]) == 0.0
    assert 0.0 < bleu4(["there is a small left pleural effusion today"], hyp) < 100.0
