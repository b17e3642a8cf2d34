"""torchxrayvision classifier models: loading them once per process, ready for Grad-CAM.

The files themselves (names, paths, sha256 checks, download) live in tools/classifier/files.py and
the tiny demo model in tools/classifier/tiny.py; this module owns the process-wide model cache (one
copy per model/dir/device/profile, shared by every thread) and the feature/head split Grad-CAM uses.

Every real file's sha256 is checked before torch reads it. The ResNet-50 file is a state dict and is
loaded with ``weights_only=True``. The DenseNet files are pickled whole modules, read with
``torch.load(weights_only=False)`` (unpickling can run code): only from the bytes whose hash matched
the catalogue's pin or the hash recorded at their first download.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.classifier.files import (  # noqa: F401 - re-exported: callers import them from here
    ALIASES,
    DOWNLOAD_COMMAND,
    MODEL_NAMES,
    ClassifierDownloadError,
    ClassifierWeightsMissing,
    _xrv,
    canonical_name,
    classifier_weight_status,
    download_classifier_weights,
    integrity_fix,
    is_resnet,
    missing_message,
    model_spec,
    pinned_sha256,
    verify_weights,
    weights_dir,
    weights_path,
)
from tools.classifier.network import (  # noqa: F401 - re-exported: callers import them from here
    LoadedClassifier,
    _densenet_parts,
    _finish,
    _resnet_parts,
    xrv_resnet50,
)
from tools.integrity import WeightsIntegrityError, load_verified

if TYPE_CHECKING:
    import torch

    from cxr_agent.settings import Settings


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _build_real(name: str, settings: Settings, device: str) -> LoadedClassifier:
    """The real xrv model, its file's sha256 checked first (see the module docstring)."""
    import torch

    name = canonical_name(name)
    spec = model_spec(name)
    path = weights_path(settings, name)
    if not path.is_file():
        raise ClassifierWeightsMissing(missing_message(settings, name))
    try:
        if is_resnet(name):
            net, features, head = _load_resnet(path, len(spec["labels"]))
        else:
            net, features, head = _load_densenet(path, name)
    except WeightsIntegrityError as exc:
        raise ClassifierWeightsMissing(str(exc)) from exc
    except Exception as exc:  # truncated file, wrong format
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


def _load_resnet(path: Path, num_classes: int) -> tuple[Any, Callable, Callable]:
    """xrv's ResNet-50 file is a state dict: hash-checked bytes, ``torch.load(weights_only=True)``."""

    state = load_verified(path, pinned_sha256(path), fix=integrity_fix(path), weights_only=True)
    net = xrv_resnet50(num_classes)  # the same torchvision architecture xrv builds
    net.load_state_dict(state)
    return (net, *_resnet_parts(net))


def _load_densenet(path: Path, name: str) -> tuple[Any, Callable, Callable]:
    """xrv's DenseNet files are pickled modules read with ``weights_only=False``: unpickled from the
    very bytes whose sha256 matched (pinned, or recorded at first download), never re-opened by
    path (xrv's own ``DenseNet(weights=...)`` would read the file a second time). The network is then
    set up as xrv does for those weights: labels, operating points, input resolution."""
    import torch

    spec = model_spec(name)
    saved = load_verified(path, pinned_sha256(path), fix=integrity_fix(path), weights_only=False)
    for module in saved.modules():  # xrv's patch for modules pickled by older torch versions
        if not hasattr(module, "_non_persistent_buffers_set"):
            module._non_persistent_buffers_set = set()
    net = _xrv().models.DenseNet(weights=None, num_classes=len(spec["labels"]))
    net.load_state_dict(saved.state_dict())
    net.weights, net.weights_filename_local = name, str(path)
    net.targets = net.pathologies = list(spec["labels"])
    net.eval()
    if spec.get("op_threshs") is not None:
        net.op_threshs = torch.tensor(spec["op_threshs"])
    if "input_resolution" in spec:
        net.input_resolution = spec["input_resolution"]
    return (net, *_densenet_parts(net))


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
            if profile == "tiny":
                model = _build_tiny(name, device, settings.data_dir)
            else:
                model = _build_real(name, settings, device)
            _CACHE[key] = model
            _BUILDS += 1
    return model


def _build_tiny(name: str, device: str, data_dir: Path | None = None) -> LoadedClassifier:
    from tools.classifier.tiny import build_tiny

    return build_tiny(name, device, data_dir)


def build_count() -> int:
    return _BUILDS


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
