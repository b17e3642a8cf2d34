"""Small models with known behaviour for the classifier tests (the real architecture is slow here)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tools.classifier.loading import wrap_module
from tools.ingestion.study import Study

XRV_LABELS = [
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
    "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
]


class BrightnessNet(torch.nn.Module):
    """features = 4x4-pooled brightness in [0, 1]; every logit = w_k * mean brightness + b_k.
    Its Grad-CAM therefore equals the brightness map: the evidence is where the image is bright."""

    def __init__(self, n: int = 18) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(1.0, 3.0, n))
        self.b = torch.nn.Parameter(torch.zeros(n))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d((x + 1024.0) / 2048.0, 4)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        return a.mean(dim=(1, 2, 3))[:, None] * self.w + self.b


class ConstNet(torch.nn.Module):
    """Outputs fixed logits whatever the image (for exact op-norm arithmetic)."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        p = torch.tensor(probs, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        self.register_buffer("logits", torch.log(p / (1 - p)).float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 32)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(a.shape[0], -1) + 0.0 * a.mean(dim=(1, 2, 3))[:, None]


def wrapped(net, *, op_threshs=None, targets=None, resolution: int = 224, name: str = "test-net"):
    return wrap_module(
        net,
        name=name,
        features=net.features,
        head=net.head,
        targets=targets or list(XRV_LABELS),
        op_threshs=op_threshs,
        resolution=resolution,
        threshold_source="test",
        profile="tiny",
    )


def op_norm_ref(p: float, t: float) -> float:
    """xrv's op_norm written out for one value."""
    if math.isnan(t):
        return 0.5
    return p / (2 * t) if p < t else 1.0 - (1.0 - p) / (2 * (1.0 - t))


def blob_study(width: int, height: int, blob: tuple[int, int, int, int], decoy: tuple[int, int, int, int] | None = None) -> Study:
    """Dark image with a bright rectangle (x1, y1, x2, y2) in original pixels, and an optional
    brighter decoy (meant to lie outside the centre crop, so the model never sees it)."""
    img = np.zeros((height, width), dtype=np.float32)
    x1, y1, x2, y2 = blob
    img[y1:y2, x1:x2] = 0.8
    if decoy is not None:
        dx1, dy1, dx2, dy2 = decoy
        img[dy1:dy2, dx1:dx2] = 1.0
    return Study.from_array(img)
