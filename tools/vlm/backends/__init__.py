"""VLM backends: one interface (backends.base.VLMBackend), local transformers or an OpenAI-compatible server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.vlm.backends.base import BackendError, GenerationResult, ModelUnavailable, VLMBackend

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

__all__ = ["BackendError", "GenerationResult", "ModelUnavailable", "VLMBackend", "make_backend"]


def make_backend(settings: Settings) -> VLMBackend:
    """The backend settings.vlm_backend names (imports lazily: httpx or torch/transformers).
    The tiny profile always runs the local random model: it swaps every model, servers included."""
    if settings.vlm_backend == "openai" and settings.model_profile != "tiny":
        from tools.vlm.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(settings)
    from tools.vlm.backends.transformers_backend import TransformersBackend

    return TransformersBackend.shared(settings)
