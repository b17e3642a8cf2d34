"""The loaded classifier network, split for Grad-CAM: a feature extractor (the last conv block) and a head.

Shared by the real loader (tools/classifier/loading.py) and the tiny demo model (tools/classifier/tiny.py),
so neither imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


# --------------------------------------------------------------------------------------------
# The loaded model: a feature extractor (last conv block) and a head, so Grad-CAM can reuse the
# forward pass's activations. Forward == xrv's own forward (tested).
# --------------------------------------------------------------------------------------------
@dataclass
class LoadedClassifier:
    name: str
    net: torch.nn.Module
    features: Callable[[torch.Tensor], torch.Tensor]  # (B,1,R,R) in [-1024,1024] -> (B,C,h,w)
    head: Callable[[torch.Tensor], torch.Tensor]  # (B,C,h,w) -> (B,K) logits
    targets: list[str]  # xrv labels, '' where the model was not trained
    op_threshs: torch.Tensor | None  # (K,) sigmoid-probability thresholds, NaN = untrained
    resolution: int
    profile: str
    device: str
    threshold_source: str
    weights_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def trained_indices(self) -> list[int]:
        """Indices with a label and (when thresholds exist) a finite threshold."""
        out = []
        for i, label in enumerate(self.targets):
            if not label:
                continue
            if self.op_threshs is not None and math.isnan(float(self.op_threshs[i])):
                continue
            out.append(i)
        return out


def _densenet_parts(net: Any) -> tuple[Callable, Callable]:
    import torch.nn.functional as F

    def head(a):
        # xrv's features2: relu -> global average pool -> classifier (not in place: Grad-CAM needs a)
        return net.classifier(F.adaptive_avg_pool2d(F.relu(a), (1, 1)).flatten(1))

    return net.features, head


def _resnet_parts(tv: Any) -> tuple[Callable, Callable]:
    import torch

    def features(x):
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))

    def head(a):
        return tv.fc(torch.flatten(tv.avgpool(a), 1))

    return features, head


def _finish(model: LoadedClassifier) -> LoadedClassifier:
    """Eval mode, frozen parameters (Grad-CAM needs only activation gradients), on the device."""
    model.net.eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    model.net.to(model.device)
    if model.op_threshs is not None:
        model.op_threshs = model.op_threshs.to(model.device)
    return model


def xrv_resnet50(num_classes: int = 18) -> torch.nn.Module:
    """xrv's ResNet-50 architecture (torchvision resnet50, 1-channel first conv), random weights."""
    import torch
    import torchvision

    tv = torchvision.models.resnet50(num_classes=num_classes, weights=None)
    tv.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return tv
