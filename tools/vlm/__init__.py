"""The VLM tool: model-agnostic tool + backends, one adapter per model family (tools/vlm/adapters/)."""

from __future__ import annotations

from typing import Any

__all__ = ["VLMTool", "download_vlm_weights", "vlm_weight_status"]


def __getattr__(name: str) -> Any:  # lazy: importing the package stays cheap
    if name == "VLMTool":
        from tools.vlm.tool import VLMTool

        return VLMTool
    if name in ("vlm_weight_status", "download_vlm_weights"):
        from tools.vlm import weights

        return getattr(weights, name)
    raise AttributeError(name)
