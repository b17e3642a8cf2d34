"""torchxrayvision classifier models: which exist, where their weights live, and loading them once.

Kept apart from tools/classifier.py so `cxr-agent models list` can report weight status without
building a network, and so the process-wide model cache (one copy per model/dir/device/profile,
shared by every thread) has a single owner.

Offline safety: xrv downloads on a missing file (printing a hint and raising a `requests` error),
so every load checks the file first and fails with a message naming the file, the directory and
`cxr-agent models download`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.base import WeightStatus

if TYPE_CHECKING:
    import torch

    from cxr_agent.settings import Settings

DOWNLOAD_COMMAND = "cxr-agent models download"

# Names users may also type; xrv's own table has no "-kaggle" key (its RSNA model is the Kaggle file).
ALIASES: dict[str, str] = {"densenet121-res224-kaggle": "densenet121-res224-rsna"}

# The model names offered (xrv also keeps short keys like "all", "nih": accepted too).
MODEL_NAMES: tuple[str, ...] = (
    "densenet121-res224-all",
    "resnet50-res512-all",
    "densenet121-res224-nih",
    "densenet121-res224-chex",
    "densenet121-res224-pc",
    "densenet121-res224-mimic_nb",
    "densenet121-res224-mimic_ch",
    "densenet121-res224-rsna",
)

TINY_SEED = 1234
TINY_CALIBRATION_IMAGES = 4
TINY_THRESHOLD_SOURCE = (
    "tiny profile: per-label median of the random-weight model's own sigmoid outputs on "
    f"{TINY_CALIBRATION_IMAGES} seeded synthetic images (seed {TINY_SEED}); NaN where the real model has none"
)


class ClassifierWeightsMissing(RuntimeError):
    """The real weight file is not on disk (and we never download implicitly)."""


class ClassifierDownloadError(RuntimeError):
    """A weight download failed or is not allowed (offline)."""


def _xrv() -> Any:
    import torchxrayvision as xrv

    return xrv


def canonical_name(name: str) -> str:
    """Resolve aliases and validate against torchxrayvision's model table."""
    name = ALIASES.get(name.strip(), name.strip())
    table = _xrv().models.model_urls
    if name not in table:
        valid = ", ".join(MODEL_NAMES)
        raise ValueError(f"unknown classifier model {name!r}; choose one of: {valid}")
    return name


def model_spec(name: str) -> dict[str, Any]:
    """xrv's table entry: weights_url, labels ('' = not trained), op_threshs, input_resolution."""
    return _xrv().models.model_urls[canonical_name(name)]


def weights_dir(settings: Settings) -> Path:
    if settings.classifier_weights_dir is not None:
        return Path(settings.classifier_weights_dir)
    return Path(_xrv().utils.get_cache_dir())


def weights_path(settings: Settings, name: str | None = None) -> Path:
    """Where xrv expects the file: <dir>/<last part of the release URL>."""
    spec = model_spec(name or settings.classifier_model)
    return weights_dir(settings) / os.path.basename(spec["weights_url"])


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def is_resnet(name: str) -> bool:
    return canonical_name(name).startswith("resnet")


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


def tiny_resnet50(num_classes: int = 18) -> torch.nn.Module:
    """xrv's ResNet-50 architecture (torchvision resnet50, 1-channel first conv), random weights."""
    import torch
    import torchvision

    tv = torchvision.models.resnet50(num_classes=num_classes, weights=None)
    tv.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return tv


def _synthetic_images(n: int, res: int, seed: int) -> torch.Tensor:
    """Smooth seeded random fields in xrv's [-1024, 1024] range (stand-ins for radiographs)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 16, 16, generator=g)
    return F.interpolate(coarse, size=(res, res), mode="bilinear", align_corners=False) * 2048 - 1024


def _build_tiny(name: str, device: str) -> LoadedClassifier:
    """Random weights, same architecture. BatchNorm statistics are calibrated on seeded synthetic
    images (else random-init activations explode to |logit| ~ 1e3) and the operating points are
    the per-label median output there, so the real op-norm code path runs on sane numbers."""
    import torch

    xrv = _xrv()
    name = canonical_name(name)
    spec = model_spec(name)
    res = int(spec.get("input_resolution", 224))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        if is_resnet(name):
            net = tiny_resnet50(len(spec["labels"]))
            features, head = _resnet_parts(net)
        else:
            net = xrv.models.DenseNet(weights=None, num_classes=len(spec["labels"]))
            features, head = _densenet_parts(net)
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
        nan_mask = torch.tensor([math.isnan(float(t)) for t in real])
        threshs[nan_mask] = float("nan")
    return _finish(
        LoadedClassifier(
            name=name,
            net=net,
            features=features,
            head=head,
            targets=list(spec["labels"]),
            op_threshs=threshs,
            resolution=res,
            profile="tiny",
            device=device,
            threshold_source=TINY_THRESHOLD_SOURCE,
            meta={"weights": "random (tiny profile)", "seed": TINY_SEED},
        )
    )


def _build_real(name: str, settings: Settings, device: str) -> LoadedClassifier:
    import torch

    xrv = _xrv()
    name = canonical_name(name)
    spec = model_spec(name)
    path = weights_path(settings, name)
    if not path.is_file():
        raise ClassifierWeightsMissing(missing_message(settings, name))
    cache_dir = str(path.parent)
    try:
        if is_resnet(name):
            net = xrv.models.ResNet(weights=name, cache_dir=cache_dir)
            features, head = _resnet_parts(net.model)
        else:
            net = xrv.models.DenseNet(weights=name, cache_dir=cache_dir)
            features, head = _densenet_parts(net)
    except Exception as exc:  # corrupt/truncated file, wrong format
        raise ClassifierWeightsMissing(
            f"Classifier weights file {path} could not be loaded ({type(exc).__name__}: {exc}). "
            f"Delete it and run `{DOWNLOAD_COMMAND}` to fetch it again."
        ) from exc
    threshs = spec.get("op_threshs")
    return _finish(
        LoadedClassifier(
            name=name,
            net=net,
            features=features,
            head=head,
            targets=list(spec["labels"]),
            op_threshs=torch.tensor(threshs, dtype=torch.float32) if threshs is not None else None,
            resolution=int(spec.get("input_resolution", 224)),
            profile="real",
            device=device,
            threshold_source=f"torchxrayvision model_urls[{name!r}]['op_threshs']",
            weights_path=str(path),
        )
    )


def _finish(model: LoadedClassifier) -> LoadedClassifier:
    """Eval mode, frozen parameters (Grad-CAM needs only activation gradients), on the device."""
    model.net.eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    model.net.to(model.device)
    if model.op_threshs is not None:
        model.op_threshs = model.op_threshs.to(model.device)
    return model


def wrap_module(
    net: torch.nn.Module,
    *,
    name: str = "custom",
    features: Callable | None = None,
    head: Callable | None = None,
    targets: list[str] | None = None,
    op_threshs: Any = None,
    resolution: int | None = None,
    device: str = "cpu",
    threshold_source: str = "supplied by caller",
    profile: str = "custom",
) -> LoadedClassifier:
    """Use an already built network (an xrv DenseNet/ResNet, or any module given features/head)."""
    import torch

    xrv = _xrv()
    if features is None or head is None:
        if isinstance(net, xrv.models.DenseNet):
            features, head = _densenet_parts(net)
        elif isinstance(net, xrv.models.ResNet):
            features, head = _resnet_parts(net.model)
        elif hasattr(net, "layer4") and hasattr(net, "fc"):
            features, head = _resnet_parts(net)
        else:
            raise TypeError("pass features= and head= for a network that is not an xrv DenseNet/ResNet")
    if targets is None:
        targets = list(getattr(net, "targets", _xrv().datasets.default_pathologies))
    if op_threshs is None and getattr(net, "op_threshs", None) is not None:
        op_threshs = net.op_threshs
    if resolution is None:
        resolution = int(getattr(net, "input_resolution", 224))
    thr = None if op_threshs is None else torch.as_tensor(op_threshs, dtype=torch.float32).clone()
    return _finish(
        LoadedClassifier(
            name=name,
            net=net,
            features=features,
            head=head,
            targets=list(targets),
            op_threshs=thr,
            resolution=resolution,
            profile=profile,
            device=device,
            threshold_source=threshold_source,
        )
    )


# --------------------------------------------------------------------------------------------
# Process-wide cache
# --------------------------------------------------------------------------------------------
_CACHE: dict[tuple[str, str, str, str], LoadedClassifier] = {}
_LOCK = threading.Lock()
_BUILDS = 0  # how many models this process built (tests check "loaded once")


def cache_key(settings: Settings) -> tuple[str, str, str, str]:
    return (
        canonical_name(settings.classifier_model),
        str(weights_dir(settings)),
        resolve_device(settings.classifier_device),
        settings.model_profile,
    )


def load_classifier(settings: Settings) -> LoadedClassifier:
    """The shared model for these settings, built on first use (thread-safe, once per key)."""
    global _BUILDS
    key = cache_key(settings)
    model = _CACHE.get(key)
    if model is not None:
        return model
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            name, _, device, profile = key
            model = _build_tiny(name, device) if profile == "tiny" else _build_real(name, settings, device)
            _CACHE[key] = model
            _BUILDS += 1
    return model


def build_count() -> int:
    return _BUILDS


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------------
# Status and download
# --------------------------------------------------------------------------------------------
def missing_message(settings: Settings, name: str | None = None) -> str:
    name = canonical_name(name or settings.classifier_model)
    path = weights_path(settings, name)
    return (
        f"Classifier weights for {name} are not on this machine: expected file {path.name} "
        f"in directory {path.parent}. Run `{DOWNLOAD_COMMAND}` (needs internet), or copy the file "
        f"there, or set CXR_AGENT_CLASSIFIER_WEIGHTS_DIR to the directory that holds it. "
        f"For a demo without weights use CXR_AGENT_MODEL_PROFILE=tiny (random weights, no diagnostic value)."
    )


def classifier_weight_status(settings: Settings) -> WeightStatus:
    """Whether the configured classifier's REAL weight file is present (regardless of profile)."""
    label = f"classifier: {settings.classifier_model}"
    try:
        path = weights_path(settings)
    except ValueError as exc:
        return WeightStatus(label, "classifier", False, "", "set CXR_AGENT_CLASSIFIER_MODEL", str(exc))
    present = path.is_file() and path.stat().st_size > 0
    detail = f"{path.stat().st_size / 1e6:.1f} MB" if present else "file missing"
    if settings.model_profile == "tiny":
        detail += "; tiny profile active (random weights used)"
    return WeightStatus(
        name=label,
        kind="classifier",
        present=present,
        location=str(path),
        fix=None if present else DOWNLOAD_COMMAND,
        detail=detail,
    )


ProgressFn = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)


def download_classifier_weights(
    settings: Settings, progress: ProgressFn | None = None, *, name: str | None = None
) -> Path:
    """Fetch the configured classifier's weights with xrv's own downloader (resumable .part file).

    progress(done, total) is called from a watcher thread while xrv downloads; total comes from
    the server's content-length when it answers a HEAD request, else None.
    """
    name = canonical_name(name or settings.classifier_model)
    path = weights_path(settings, name)
    if path.is_file() and path.stat().st_size > 0:
        if progress:
            size = path.stat().st_size
            progress(size, size)
        return path
    url = model_spec(name)["weights_url"]
    if settings.offline:
        raise ClassifierDownloadError(
            f"offline mode (CXR_AGENT_OFFLINE=1) forbids downloading {url}. Unset it, or fetch the file "
            f"elsewhere and copy it to {path}."
        )
    import requests

    path.parent.mkdir(parents=True, exist_ok=True)
    total: int | None = None
    try:
        head = requests.head(url, allow_redirects=True, timeout=(10, 30))
        total = int(head.headers.get("content-length") or 0) or None
    except requests.RequestException:
        total = None  # the download itself reports the real error
    part = Path(str(path) + ".part")
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            if progress and part.exists():
                progress(part.stat().st_size, total)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # xrv draws its own text bar
            _xrv().utils.download(url, str(path))
    except requests.RequestException as exc:
        raise ClassifierDownloadError(
            f"could not download {url} ({type(exc).__name__}). Check the internet connection, or fetch "
            f"the file elsewhere and copy it to {path}."
        ) from exc
    finally:
        stop.set()
        watcher.join(timeout=1)
    if progress:
        size = path.stat().st_size
        progress(size, size)
    return path
