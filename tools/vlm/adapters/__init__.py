"""Model-family adapters (prompts, answer shapes, box conventions); see adapters/base.py."""

from __future__ import annotations

from tools.vlm.adapters.base import Adapter, Location, Parsed, Prompt, Task

__all__ = ["ADAPTERS", "Adapter", "Location", "Parsed", "Prompt", "Task", "get_adapter"]

ADAPTERS = {"radvlm": "tools.vlm.adapters.radvlm:RadVLMAdapter",
            "medgemma": "tools.vlm.adapters.medgemma:MedGemmaAdapter",
            "medgemma15": "tools.vlm.adapters.medgemma:MedGemma15Adapter"}


def get_adapter(family: str) -> Adapter:
    """The adapter for a model family, or ValueError naming the known ones."""
    import importlib

    spec = ADAPTERS.get(family.lower().strip())
    if spec is None:
        raise ValueError(f"unknown VLM family {family!r}; known: {', '.join(sorted(ADAPTERS))}")
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)()
