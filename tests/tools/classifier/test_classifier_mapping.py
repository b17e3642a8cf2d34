"""Operating-point mapping, margins, untrained labels and the vocabulary mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchxrayvision as xrv
from classifier_helpers import XRV_LABELS, ConstNet, op_norm_ref, wrapped

from cxr_agent.settings import Settings
from knowledge.evidence import Status
from knowledge.vocabulary import FINDING_SET, normalize
from tools.classifier.tool import XRV_LABEL_MAP, ClassifierTool, finding_for_label, status_for
from tools.ingestion.study import Study


def test_every_xrv_label_maps_onto_the_vocabulary():
    assert list(xrv.datasets.default_pathologies) == XRV_LABELS
    found = {finding_for_label(label) for label in XRV_LABELS}
    assert found == set(XRV_LABEL_MAP.values())
    assert len(found) == 18 and found <= FINDING_SET
    assert finding_for_label("Effusion") == "pleural_effusion"
    assert finding_for_label("Pleural_Thickening") == "pleural_thickening"
    assert finding_for_label("") is None
    for label, fid in XRV_LABEL_MAP.items():  # the explicit map and normalize() must agree
        assert normalize(label) in (None, fid), label


@pytest.mark.parametrize(
    ("score", "margin", "expected"),
    [
        (0.61, 0.1, Status.present),
        (0.6, 0.1, Status.uncertain),  # band edge is uncertain
        (0.5, 0.1, Status.uncertain),
        (0.4, 0.1, Status.uncertain),
        (0.399, 0.1, Status.absent),
        (0.5, 0.0, Status.uncertain),  # at the operating point itself: not decided
        (0.5001, 0.0, Status.present),
        (0.4999, 0.0, Status.absent),
        (0.96, 0.45, Status.present),
        (0.95, 0.45, Status.uncertain),
        (0.9, 0.45, Status.uncertain),
    ],
)
def test_status_margin_boundaries(score, margin, expected):
    assert status_for(score, margin) is expected


def test_op_norm_scores_untrained_labels_and_raw_scores(tmp_path):
    # probabilities and thresholds chosen so each status occurs; NaN thresholds at 14..17 (like 'nih')
    probs = [0.9, 0.01, 0.05, 0.3, 0.5, 0.07, 0.2, 0.11, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.99, 0.99, 0.99, 0.99]
    thr = [0.1, 0.1, 0.1, 0.1, 0.5, 0.07, 0.5, 0.1, 0.3, 0.7, 0.5, 0.5, 0.5, 0.5] + [math.nan] * 4
    model = wrapped(ConstNet(probs), op_threshs=thr)
    settings = Settings(model_profile="tiny", data_dir=tmp_path, classifier_margin=0.1)
    ev = ClassifierTool(settings, model=model).classify(Study.from_array(np.full((64, 80), 0.5, np.float32)))
    assert ev.ok
    by = {c.finding: c for c in ev.calls}
    # untrained labels (NaN threshold) produce NO call, not an 'absent' one
    assert set(by) == {XRV_LABEL_MAP[label] for label in XRV_LABELS[:14]}
    assert not ({"lung_lesion", "fracture", "lung_opacity", "enlarged_cardiomediastinum"} & set(by))
    for i, label in enumerate(XRV_LABELS[:14]):
        call = by[XRV_LABEL_MAP[label]]
        assert call.score == pytest.approx(op_norm_ref(probs[i], thr[i]), abs=1e-5)
        assert call.raw_score == pytest.approx(probs[i], abs=1e-5)
        assert call.score_kind == "op_norm" and call.source == "classifier"
        assert call.status is status_for(call.score, 0.1)
    assert by["atelectasis"].status is Status.present  # 0.9 vs threshold 0.1
    assert by["consolidation"].status is Status.absent  # 0.01 vs 0.1 -> 0.05
    assert by["emphysema"].status is Status.uncertain  # exactly at threshold -> 0.5
    assert by["pneumonia"].status is Status.present  # 0.5 vs 0.3 -> 0.643
    assert by["pleural_thickening"].status is Status.absent  # 0.5 vs 0.7 -> 0.357
    assert by["pleural_effusion"].status is Status.uncertain  # 0.11 vs 0.1 -> 0.506: inside the margin
    assert by["pneumothorax"].status is Status.present  # 0.3 vs 0.1 -> 0.611
    meta = ev.meta
    assert meta["score_kind"] == "op_norm" and "NOT a probability" in meta["score_meaning"]
    assert meta["margin"] == 0.1 and meta["threshold_source"] == "test"
    assert set(meta["untrained_labels"]) == {"lung_lesion", "fracture", "lung_opacity", "enlarged_cardiomediastinum"}


def test_tool_forward_matches_xrv_forward(tiny_tool):
    """Our features+head split is xrv's DenseNet.forward; op-norm is xrv's op_norm."""
    m = tiny_tool.model
    x = torch.linspace(-1024, 1024, 96 * 96).reshape(1, 1, 96, 96)  # small: the split, not the size, is tested
    with torch.no_grad():
        ours = m.head(m.features(x))
        theirs = m.net(x)  # the shared net has op_threshs=None: raw logits
    assert torch.allclose(ours, theirs, atol=1e-4)
    ref = xrv.models.op_norm(torch.sigmoid(theirs), m.op_threshs)
    assert torch.allclose(xrv.models.op_norm(torch.sigmoid(ours), m.op_threshs), ref, atol=1e-5)
