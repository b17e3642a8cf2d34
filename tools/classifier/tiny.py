"""The tiny (demo) classifier: xrv's architecture with seeded random weights, built once and kept on disk.

Building it runs a BatchNorm calibration pass (seconds for the DenseNet, longer for the 512-pixel
ResNet-50), so `cxr-agent setup` builds it once into ``<data_dir>/tiny-classifier/<name>.pt`` and
every later process loads that state dict (weights_only=True, after its recorded sha256 is checked).
A missing, stale or tampered cache is rebuilt, never trusted. The weights mean nothing: demo only.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.classifier.files import _xrv, canonical_name, is_resnet, model_spec
from tools.classifier.network import LoadedClassifier, _densenet_parts, _finish, _resnet_parts, xrv_resnet50
from tools.integrity import WeightsIntegrityError, load_verified, record_hash

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)

TINY_SEED = 1234
TINY_CALIBRATION_IMAGES = 4
TINY_THRESHOLD_SOURCE = (
    "tiny profile: per-label median of the random-weight model's own sigmoid outputs on "
    f"{TINY_CALIBRATION_IMAGES} seeded synthetic images (seed {TINY_SEED}); NaN where the real model has none"
)
CACHE_FORMAT = 1


def cache_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "tiny-classifier" / f"{canonical_name(name)}.pt"


def _synthetic_images(n: int, res: int, seed: int) -> torch.Tensor:
    """Smooth seeded random fields in xrv's [-1024, 1024] range (stand-ins for radiographs)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 16, 16, generator=g)
    return F.interpolate(coarse, size=(res, res), mode="bilinear", align_corners=False) * 2048 - 1024


def _network(name: str) -> tuple[Any, Any, Any]:
    """(net, features, head) of the real architecture, random weights from the fixed seed."""

    spec = model_spec(name)
    if is_resnet(name):
        net = xrv_resnet50(len(spec["labels"]))
        return (net, *_resnet_parts(net))
    net = _xrv().models.DenseNet(weights=None, num_classes=len(spec["labels"]))
    return (net, *_densenet_parts(net))


def _calibrated(name: str) -> tuple[Any, Any, Any, torch.Tensor]:
    """Random weights, same architecture. BatchNorm statistics are calibrated on seeded synthetic
    images (else random-init activations explode to |logit| ~ 1e3) and the operating points are
    the per-label median output there, so the real op-norm code path runs on sane numbers."""
    import torch

    spec = model_spec(name)
    res = int(spec.get("input_resolution", 224))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        net, features, head = _network(name)
        for mod in net.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the calibration pass
        images = _synthetic_images(TINY_CALIBRATION_IMAGES, res, TINY_SEED)
        net.train()
        with torch.no_grad():
            head(features(images))
        net.eval()
        with torch.no_grad():
            probs = torch.sigmoid(head(features(images)))
    real = spec.get("op_threshs")
    threshs = probs.median(dim=0).values.to(torch.float32)
    if real is not None:
        threshs[torch.tensor([math.isnan(float(t)) for t in real])] = float("nan")
    return net, features, head, threshs


def _from_cache(path: Path, name: str) -> tuple[Any, Any, Any, torch.Tensor] | None:
    """The cached state dict, hash-checked, loaded with weights_only=True; None to rebuild."""
    if not path.is_file():
        return None
    try:
        saved = load_verified(path, None, fix="it is rebuilt", weights_only=True)
        if saved.get("format") != CACHE_FORMAT or saved.get("name") != name:
            raise ValueError("written by another version")
        import torch

        with torch.device("meta"):  # no random init: every tensor comes from the file
            net, features, head = _network(name)
        net.load_state_dict(saved["state_dict"], assign=True)
        net.eval()
        return net, features, head, saved["op_threshs"].to(torch.float32)
    except (WeightsIntegrityError, ValueError, KeyError, RuntimeError, OSError, AttributeError) as exc:
        log.warning("rebuilding the tiny classifier cache %s: %s", path, exc)
        return None


def _save(path: Path, name: str, net: Any, threshs: torch.Tensor) -> None:
    import torch

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # concurrent builders never share one
        torch.save({"format": CACHE_FORMAT, "name": name, "state_dict": net.state_dict(), "op_threshs": threshs}, tmp)
        tmp.replace(path)
        record_hash(path)
    except OSError as exc:  # a read-only data dir only costs the rebuild next time
        log.warning("could not cache the tiny classifier at %s: %s", path, exc)


def build_tiny(name: str, device: str, data_dir: Path | None = None) -> LoadedClassifier:
    """The tiny classifier for ``name``: from ``data_dir``'s cache when intact, else built (and cached)."""

    name = canonical_name(name)
    spec = model_spec(name)
    path = cache_path(data_dir, name) if data_dir is not None else None
    parts = _from_cache(path, name) if path is not None else None
    if parts is None:
        parts = _calibrated(name)
        if path is not None:
            _save(path, name, parts[0], parts[3])
    net, features, head, threshs = parts
    return _finish(
        LoadedClassifier(
            name=name,
            net=net,
            features=features,
            head=head,
            targets=list(spec["labels"]),
            op_threshs=threshs,
            resolution=int(spec.get("input_resolution", 224)),
            profile="tiny",
            device=device,
            threshold_source=TINY_THRESHOLD_SOURCE,
            meta={"weights": "random (tiny profile)", "seed": TINY_SEED},
        )
    )


def ensure_cached(name: str, data_dir: Path) -> Path:
    """`cxr-agent setup`'s step: the cache file for ``name`` on disk and intact (built if not)."""
    path = cache_path(data_dir, name)
    if _from_cache(path, canonical_name(name)) is None:
        build_tiny(name, "cpu", data_dir)
    return path


tiny_resnet50 = xrv_resnet50  # the same architecture; its random weights come from build_tiny
